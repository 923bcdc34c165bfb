-- The claim's choice takes its plan from its own settings, not from the delivery table's
-- statistics: a queue changes faster than autovacuum follows (or autovacuum is off), and with
-- stale estimates the planner picked scans of the whole table and hash joins that made a claim
-- take seconds. Index walks only, nested loops only, as the function's own settings.
ALTER FUNCTION crmhooks_claim_ids(BIGINT, BIGINT, BIGINT, BIGINT, BIGINT[], BIGINT[])
    SET enable_seqscan = off;
ALTER FUNCTION crmhooks_claim_ids(BIGINT, BIGINT, BIGINT, BIGINT, BIGINT[], BIGINT[])
    SET enable_hashjoin = off;
ALTER FUNCTION crmhooks_claim_ids(BIGINT, BIGINT, BIGINT, BIGINT, BIGINT[], BIGINT[])
    SET enable_mergejoin = off;
