//! The next delivery of a chain, handed over by the record that closes the one before it.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::{params, OptionalExtension};

use super::chains::Waiting;
use super::db::{event_id, sql_err};
use super::handoff::Kind;
use super::writer::Writer;
use crate::entity::Ticks;
use crate::model::*;
use crate::sql::columns::{read_event, EVENT_COLS};
use crate::Result;
use crate::{DeliveryId, TenantId, WebhookId};

/// The next heads a bookkeeping found, by what kept them from being handed over.
#[derive(Default, Debug)]
pub(super) struct NextHeads {
    /// Already leased (claimed by then).
    pub(super) leased: u32,
    /// A retry not due yet.
    pub(super) not_due: u32,
    /// Written by a group commit whose fsync is not done: handed over after it, if there is
    /// room.
    pub(super) not_durable: u32,
    /// Durable: handed over now, if there is room.
    pub(super) tried: u32,
    /// Handed over.
    pub(super) handed: u32,
    /// Found waiting in memory behind the one that closed, without a query (those handed
    /// over count in `handed` too).
    pub(super) followed: u32,
}

impl Writer {
    /// Marks the next head of the chain of `closed`, a delivery just closed: the oldest open
    /// delivery of the same webhook and contact, which may now be sent. When it is due and
    /// durable and the dispatcher has room, it is leased and handed over after the commit
    /// instead (no claim round trip for the later events of a contact).
    pub(super) fn next_head(&mut self, closed: DeliveryId, now: Ticks) -> Result<()> {
        struct Next {
            id: DeliveryId,
            webhook_id: WebhookId,
            status: i64,
            ready: bool,
            due: Ticks,
            seq: i64,
            event_id: String,
            attempt_in_cycle: i64,
            tenant_id: TenantId,
        }
        let next = self
            .conn
            .prepare_cached(
                "SELECT p.delivery_id, p.webhook_id, p.status, p.ready, p.next_attempt_at, p.event_seq, p.event_id, \
                 p.attempt_in_cycle, p.tenant_id FROM delivery d \
                 JOIN delivery p ON p.webhook_id = d.webhook_id AND p.order_key = d.order_key AND p.status IN (0, 1) \
                 WHERE d.delivery_id = ? ORDER BY p.delivery_id LIMIT 1",
            )
            .map_err(sql_err)?
            .query_row([closed], |r| {
                Ok(Next {
                    id: r.get(0)?,
                    webhook_id: r.get(1)?,
                    status: r.get(2)?,
                    ready: r.get(3)?,
                    due: r.get(4)?,
                    seq: r.get(5)?,
                    event_id: r.get(6)?,
                    attempt_in_cycle: r.get(7)?,
                    tenant_id: r.get(8)?,
                })
            })
            .optional()
            .map_err(sql_err)?;
        let Some(n) = next else {
            return Ok(());
        };
        let synced = self.synced_upto.load(Ordering::SeqCst);
        let durable = synced >= self.handed_upto || n.id.get() <= synced;
        let found = if n.status != 0 {
            &mut self.next_heads.leased
        } else if n.due > now {
            &mut self.next_heads.not_due
        } else if !durable {
            &mut self.next_heads.not_durable
        } else {
            &mut self.next_heads.tried
        };
        *found += 1;
        if n.status == 0 && n.due <= now && self.successors.is_some() {
            if let Some(webhook) = self.reserve(Kind::Record, n.webhook_id)? {
                let written = match self.successors.as_ref() {
                    Some(b) => self
                        .conn
                        .prepare_cached(
                            "UPDATE delivery SET ready = 1, status = 1, lease_until = ?, lease_owner = ? \
                             WHERE delivery_id = ? AND status = 0",
                        )
                        .map_err(sql_err)?
                        .execute(params![b.lease_until, b.owner, n.id])
                        .map_err(sql_err),
                    None => Ok(0),
                };
                let claimed = match written {
                    Ok(1) => self.successor_claim(
                        n.id,
                        n.seq,
                        &n.event_id,
                        n.attempt_in_cycle,
                        n.tenant_id,
                        webhook,
                    ),
                    Ok(_) => Ok(None),
                    Err(e) => Err(e),
                };
                match (claimed, self.successors.as_mut()) {
                    (Ok(Some(c)), Some(b)) => {
                        b.lease(c, durable);
                        self.next_heads.handed += 1;
                        return Ok(());
                    }
                    (result, b) => {
                        if let Some(b) = b {
                            b.intake.unreserve(n.tenant_id, n.webhook_id);
                        }
                        result?;
                        // Not written (or its event is gone): marked ready below, claimed later.
                    }
                }
            }
        }
        if !n.ready {
            self.conn
                .prepare_cached("UPDATE delivery SET ready = 1 WHERE delivery_id = ? AND ready = 0")
                .map_err(sql_err)?
                .execute([n.id])
                .map_err(sql_err)?;
        }
        Ok(())
    }

    /// A successor just leased, as a claim would give it.
    pub(super) fn successor_claim(
        &mut self,
        delivery_id: DeliveryId,
        seq: i64,
        event_id: &str,
        attempt_in_cycle: i64,
        tenant_id: TenantId,
        webhook: Arc<Webhook>,
    ) -> Result<Option<Claimed>> {
        let event = match self.recent.get(seq) {
            Some(e) => e,
            None => {
                let read = self
                    .conn
                    .prepare_cached(&format!(
                        "SELECT {EVENT_COLS} FROM event WHERE event_seq = ?"
                    ))
                    .map_err(sql_err)?
                    .query_row([seq], |r| Ok(read_event(r)))
                    .optional()
                    .map_err(sql_err)?;
                match read {
                    Some(ev) => Arc::new(ev?),
                    None => return Ok(None),
                }
            }
        };
        Ok(Some(Claimed {
            delivery_id,
            event_id: self::event_id(delivery_id, event_id)?,
            attempt_in_cycle,
            event,
            tenant: self.tenant_name(tenant_id)?,
            webhook,
        }))
    }

    /// Hands over `w`, which waited in memory behind a delivery that just closed: it is
    /// leased to this node already, so no statement runs unless its lease is half gone. With
    /// no room (or no dispatcher, or its webhook no longer Active) it becomes a pending head
    /// for a claim instead, and what waited behind it goes back to the queue.
    pub(super) fn hand_waiting(&mut self, w: Waiting, now: Ticks) -> Result<()> {
        self.next_heads.followed += 1;
        let synced = self.synced_upto.load(Ordering::SeqCst);
        let durable = synced >= self.handed_upto || w.delivery_id.get() <= synced;
        if let Some(webhook) = self.reserve(Kind::Record, w.webhook_id)? {
            let fresh = self.successors.as_ref().map_or(now, |b| b.lease_until);
            if w.lease_until.saturating_sub(now) < fresh.saturating_sub(now) / 2 {
                self.conn
                    .prepare_cached("UPDATE delivery SET lease_until = ? WHERE delivery_id = ?")
                    .map_err(sql_err)?
                    .execute(params![fresh, w.delivery_id])
                    .map_err(sql_err)?;
            }
            let claimed = Claimed {
                delivery_id: w.delivery_id,
                event_id: w.event_id,
                attempt_in_cycle: 0,
                event: w.event,
                tenant: w.tenant,
                webhook,
            };
            if let Some(b) = self.successors.as_mut() {
                b.lease(claimed, durable);
                self.next_heads.handed += 1;
            }
            return Ok(());
        }
        self.conn
            .prepare_cached(
                "UPDATE delivery SET status = 0, ready = 1, lease_until = NULL, lease_owner = NULL \
                 WHERE delivery_id = ? AND status = 1",
            )
            .map_err(sql_err)?
            .execute([w.delivery_id])
            .map_err(sql_err)?;
        self.release_waiting(w.delivery_id)?;
        self.chains.unfollow(w.delivery_id);
        Ok(())
    }

    /// Sends the deliveries waiting in memory behind `id` back to the queue: pending, not
    /// heads (`ready` = 0), for the database's way (a next head when the one before closes).
    pub(super) fn release_waiting(&mut self, id: DeliveryId) -> Result<()> {
        let mut next = self.chains.waiting.remove(&id);
        while let Some(w) = next {
            self.conn
                .prepare_cached(
                    "UPDATE delivery SET status = 0, lease_until = NULL, lease_owner = NULL \
                     WHERE delivery_id = ? AND status = 1 AND ready = 0",
                )
                .map_err(sql_err)?
                .execute([w.delivery_id])
                .map_err(sql_err)?;
            self.chains.unfollow(w.delivery_id);
            next = self.chains.waiting.remove(&w.delivery_id);
        }
        Ok(())
    }
}
