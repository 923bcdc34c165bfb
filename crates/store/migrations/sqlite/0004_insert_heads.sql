-- The code that opens or closes a delivery keeps `ready` itself: every INSERT INTO delivery
-- says whether its chain has an open delivery, and the writer marks the next head when it
-- closes one (delivered or given up; a deleted webhook closes all of its deliveries at once).
-- The triggers that did it made every insert into and status update of `delivery` a program
-- with a sub-program: SQLite then kept a statement journal of each page the statement touched,
-- a tenth of the cost of an insert. The store still marks missing heads when it opens (see
-- 0003), so a wrong 0 cannot stall a chain.
DROP TRIGGER delivery_head_on_insert;
DROP TRIGGER delivery_next_head;
