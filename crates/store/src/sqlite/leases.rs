//! Lease renewal: a node extends the leases of what it is sending, so that leases can be short
//! and a dead node's deliveries are taken over soon. (PostgreSQL renews with a statement of its
//! own that skips rows another transaction holds: `postgres/claim.rs`.)

use crate::entity::Ticks;
use crate::sql::{placeholders, Arg, Db};
use crate::{DeliveryId, Result};

/// Most deliveries renewed by one statement.
const CHUNK: usize = 500;

/// Extends to `lease_until` the leases of `owner` on the deliveries `ids` that are still in
/// flight; how many were extended.
pub(crate) async fn renew(
    db: &mut impl Db,
    owner: &str,
    ids: &[DeliveryId],
    lease_until: Ticks,
) -> Result<u64> {
    let mut renewed = 0;
    for chunk in ids.chunks(CHUNK) {
        let mut args = vec![Arg::from(lease_until), Arg::from(owner)];
        args.extend(chunk.iter().map(|id| Arg::from(*id)));
        renewed += db
            .exec(
                &format!(
                    "UPDATE delivery SET lease_until = $1 WHERE lease_owner = $2 AND status = 1 AND delivery_id IN ({})",
                    placeholders(3, chunk.len())
                ),
                args,
            )
            .await?;
    }
    Ok(renewed)
}
