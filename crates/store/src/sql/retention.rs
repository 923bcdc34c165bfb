//! Retention of the event log.

use super::{args, placeholders, Arg, Db};
use crate::entity::Ticks;
use crate::Result;

/// Most events deleted by one statement.
const CHUNK: usize = 500;

/// Removes events older than `cutoff` whose deliveries are all finished, with their
/// deliveries and attempts; how many events.
pub(crate) async fn prune_events(db: &mut impl Db, cutoff: Ticks, limit: i64) -> Result<u64> {
    let seqs: Vec<i64> = db
        .rows(
            "SELECT e.event_seq FROM event e WHERE e.occurred < $1 AND NOT EXISTS \
             (SELECT 1 FROM delivery d WHERE d.event_seq = e.event_seq AND d.status IN (0, 1)) \
             ORDER BY e.event_seq LIMIT $2",
            args![cutoff, limit],
            |r| r.int(0),
        )
        .await?;
    for chunk in seqs.chunks(CHUNK) {
        let list = placeholders(1, chunk.len());
        let ids = || chunk.iter().map(|s| Arg::from(*s)).collect::<Vec<_>>();
        db.exec(
            &format!("DELETE FROM attempt WHERE delivery_id IN (SELECT delivery_id FROM delivery WHERE event_seq IN ({list}))"),
            ids(),
        )
        .await?;
        db.exec(
            &format!("DELETE FROM delivery WHERE event_seq IN ({list})"),
            ids(),
        )
        .await?;
        db.exec(
            &format!("DELETE FROM event WHERE event_seq IN ({list})"),
            ids(),
        )
        .await?;
    }
    Ok(seqs.len() as u64)
}
