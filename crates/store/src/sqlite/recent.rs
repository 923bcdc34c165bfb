//! The events committed lately, kept in memory for claims and hand-offs.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::model::StoredEvent;

/// How many recent events the writer keeps for claims.
const RECENT_EVENTS: usize = 1024;

/// The events committed lately, newest last: nearly every delivery a claim takes was written a
/// few milliseconds before, and reading its event back (and parsing its JSON) was a large part
/// of the claim. Events never change once written; the ones of a transaction in progress are
/// staged and only kept when it commits.
#[derive(Default)]
pub(super) struct RecentEvents {
    by_seq: HashMap<i64, Arc<StoredEvent>>,
    order: VecDeque<i64>,
    staged: Vec<Arc<StoredEvent>>,
}

impl RecentEvents {
    pub(super) fn get(&self, seq: i64) -> Option<Arc<StoredEvent>> {
        self.by_seq.get(&seq).cloned()
    }

    pub(super) fn stage(&mut self, event: Arc<StoredEvent>) {
        self.staged.push(event);
    }

    pub(super) fn publish(&mut self) {
        for event in self.staged.drain(..) {
            self.order.push_back(event.seq);
            self.by_seq.insert(event.seq, event);
        }
        while self.order.len() > RECENT_EVENTS {
            if let Some(old) = self.order.pop_front() {
                self.by_seq.remove(&old);
            }
        }
    }

    pub(super) fn discard(&mut self) {
        self.staged.clear();
    }
}
