//! An event and its deliveries: the fan-out of a change to the webhooks subscribed to it.

use std::sync::{Arc, LazyLock};

use rusqlite::params;

use super::chains::{ChainKey, Waiting};
use super::db::sql_err;
use super::handoff::Kind;
use super::writer::Writer;
use crate::entity::Ticks;
use crate::model::*;
use crate::sql::columns::{json_text, map_text, stored_event, subscribers};
use crate::{DeliveryId, EventId, Result, WebhookId};

/// The subscribed webhooks of an event (`?3` its tenant, `?2` its name), each with the newest
/// open delivery of the same contact (`?1`) to it, if any.
static FANOUT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT w.webhook_id, (SELECT max(p.delivery_id) FROM delivery p WHERE p.webhook_id = w.webhook_id \
         AND p.order_key = ?1 AND p.status IN (0, 1)) FROM {}?3 AND we.event = ?2 ORDER BY we.webhook_id",
        subscribers("CROSS JOIN")
    )
});

impl Writer {
    /// Appends an event and one delivery per Active webhook of the tenant subscribed to it.
    pub(super) fn insert_event(
        &mut self,
        actor: &Actor,
        ev: NewEvent,
        now: Ticks,
    ) -> Result<Committed> {
        let changes = json_text(&ev.changes);
        // No RETURNING (SQLite buffers its rows in a temporary table): the rowid is the key.
        self.conn
            .prepare_cached(
                "INSERT INTO event (tenant_id, event, entity, primary_key, changes, \"values\", field_values, changed_by, occurred) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .map_err(sql_err)?
            .execute(
                params![
                    actor.tenant_id,
                    ev.event,
                    ev.entity,
                    ev.primary_key,
                    changes,
                    map_text(&ev.values),
                    ev.field_values,
                    actor.associate_id,
                    now
                ],
            )
            .map_err(sql_err)?;
        let seq = self.conn.last_insert_rowid();
        // Fan-out: a delivery per Active subscribed webhook of the tenant, with a random
        // version-4 EventId. The newest open delivery of the same contact to that webhook, if
        // there is one, goes first: the new one waits behind it (`ready` = 0), in memory and
        // leased when this writer follows it (see `Chains`). A head of its chain is written
        // leased when the dispatcher of the group commit has room for it, and handed over after
        // the commit. Plain statements: one fan-out statement with a materialized CTE (for the
        // reservation) opened and closed a temporary B-tree per event, and cost more than the
        // rest of the event put together. Ordered by `we.webhook_id`, which the index of
        // `webhook_event` gives as it is (by `w.webhook_id`, SQLite sorted in a temporary
        // B-tree per event).
        let targets: Vec<(WebhookId, Option<DeliveryId>)> = {
            let mut stmt = self.conn.prepare_cached(&FANOUT).map_err(sql_err)?;
            let rows = stmt
                .query_map(params![ev.order_key, ev.event, actor.tenant_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(sql_err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(sql_err)?
        };
        let deliveries = targets.len() as u64;
        let mut leased: Vec<(DeliveryId, EventId, Arc<Webhook>)> = Vec::new();
        let order_key: Arc<str> = Arc::from(ev.order_key.as_str());
        // Written leased to wait in memory: (their id, EventId, the one in front, webhook).
        let mut behind: Vec<(DeliveryId, EventId, DeliveryId, WebhookId)> = Vec::new();
        for (webhook_id, newest_open) in targets {
            let open = newest_open.is_some();
            let key: ChainKey = (webhook_id, Arc::clone(&order_key));
            // Behind a delivery this writer follows: it waits in memory, leased to this node.
            let wait_behind = match (newest_open, &self.batch) {
                (Some(tail), Some(_)) if self.chains.tail_is(&key, tail) => Some(tail),
                _ => None,
            };
            let webhook = if open {
                None
            } else {
                match self.reserve(Kind::Commit, webhook_id) {
                    Ok(webhook) => webhook,
                    Err(e) => {
                        self.give_back(&leased);
                        return Err(e);
                    }
                }
            };
            // Leased to this node: a head handed over at commit, or one waiting in memory.
            let (owner, until) = match &self.batch {
                Some(b) if webhook.is_some() || wait_behind.is_some() => {
                    (Some(b.owner.as_str()), Some(b.lease_until))
                }
                _ => (None, None),
            };
            let event_id = EventId::new_v4();
            let inserted = self
                .conn
                .prepare_cached(
                    "INSERT INTO delivery (tenant_id, webhook_id, event_seq, order_key, event_id, queue_pos, \
                     next_attempt_at, created, ready, status, lease_until, lease_owner) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6, ?7, ?8, ?9, ?10)",
                )
                .and_then(|mut stmt| {
                    stmt.execute(
                        params![
                            actor.tenant_id,
                            webhook_id,
                            seq,
                            ev.order_key,
                            event_id.to_string(),
                            now,
                            !open,
                            owner.is_some(),
                            until,
                            owner
                        ],
                    )
                })
                .map(|_| DeliveryId::new(self.conn.last_insert_rowid()))
                .map_err(sql_err);
            match (inserted, webhook) {
                (Ok(delivery_id), Some(webhook)) => {
                    self.chains.follow(delivery_id, key);
                    leased.push((delivery_id, event_id, webhook));
                }
                (Ok(delivery_id), None) => {
                    if let Some(tail) = wait_behind {
                        self.chains.follow(delivery_id, key);
                        behind.push((delivery_id, event_id, tail, webhook_id));
                    }
                }
                (Err(e), webhook) => {
                    if let (Some(_), Some(b)) = (webhook, &self.batch) {
                        b.intake.unreserve(actor.tenant_id, webhook_id);
                    }
                    self.give_back(&leased);
                    return Err(e);
                }
            }
        }
        // The event as a claim would read it back (the NewEvent is moved into it, not copied):
        // the handed deliveries carry it, and claims find it among the recent events.
        let handed = leased.len() as u64;
        let event = Arc::new(stored_event(seq, actor, ev, now));
        let (entity, name) = (event.entity.clone(), event.event.clone());
        if let Some(lease_until) = self.batch.as_ref().map(|b| b.lease_until) {
            for (delivery_id, event_id, tail, webhook_id) in behind {
                self.chains.waiting.insert(
                    tail,
                    Waiting {
                        delivery_id,
                        webhook_id,
                        event_id,
                        event: Arc::clone(&event),
                        tenant: actor.tenant.clone(),
                        lease_until,
                    },
                );
            }
        }
        if let Some(batch) = self.batch.as_mut() {
            for (delivery_id, event_id, webhook) in leased {
                batch.handed.push(Claimed {
                    delivery_id,
                    event_id,
                    attempt_in_cycle: 0,
                    event: Arc::clone(&event),
                    tenant: actor.tenant.clone(),
                    webhook,
                });
            }
        }
        if deliveries > 0 {
            self.recent.stage(event);
        }
        Ok(Committed {
            event_seq: Some(seq),
            deliveries,
            handed,
            behind: 0,
            entity,
            event: name,
        })
    }

    /// Gives back the room of deliveries an event reserved before it failed: the batch rolls
    /// back, and its close only gives back what was handed to it.
    pub(super) fn give_back(&self, leased: &[(DeliveryId, EventId, Arc<Webhook>)]) {
        if let Some(b) = &self.batch {
            for (_, _, webhook) in leased {
                b.intake.unreserve(webhook.tenant_id, webhook.id);
            }
        }
    }
}
