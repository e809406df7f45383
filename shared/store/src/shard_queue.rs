//! The renew fan-out's queue (issue 25 §1, DESIGN §14): the scheduled tick only dispatches, one
//! message per due-index shard, and `renew` workers (the SQS event source) drain the shards. The
//! queue is FIFO: a shard is its message group, so one worker at a time walks a shard, and each
//! message carries a deduplication id made of the tick, the shard, the hop and the cursor — a tick
//! dispatched twice (EventBridge delivers at least once), or a continuation sent twice, queues one
//! message. A message received twice is harmless anyway: every renewal is claimed with a lease.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::queue::{Message, Queue};

/// A shard's share of one tick: walk `shard` of the due index at billing time `now`, from
/// `cursor` (the page to start at; `None` = the beginning).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardWork {
    /// The tick's id (the schedule event's id): what deduplicates a dispatch.
    pub tick: String,
    pub shard: String,
    pub now: Timestamp,
    #[serde(default)]
    pub cursor: Option<String>,
    /// How many workers walked this shard before (a long morning chains itself).
    #[serde(default)]
    pub hop: u32,
}

impl ShardWork {
    /// The FIFO deduplication id: one message per (tick, shard, hop, cursor) within SQS's window.
    /// The hop is in it: a worker that hands a shard over before its first page sends the same
    /// cursor (none) as the dispatch did, and must not be taken for a repeat of it.
    pub fn dedupe_id(&self) -> String {
        let cursor = self.cursor.as_deref().unwrap_or("");
        let key = format!("{}\n{}\n{}\n{}", self.tick, self.shard, self.hop, cursor);
        paycycle_domain::ids::sha256_hex(key.as_bytes())
    }

    /// The rest of this shard, from `cursor`, for the next worker.
    pub fn continued(&self, cursor: Option<String>) -> ShardWork {
        ShardWork { cursor, hop: self.hop + 1, ..self.clone() }
    }
}

impl Message for ShardWork {
    fn fifo(&self) -> Option<(String, String)> {
        Some((self.shard.clone(), self.dedupe_id()))
    }
}

/// The shard queue's client (FIFO: group = shard).
pub type ShardQueue = Queue<ShardWork>;
