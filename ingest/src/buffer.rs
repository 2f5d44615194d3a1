//! The Redis buffer between the HTTP edge and Kafka.
//!
//! Each shard is a Redis stream. A batch is written by one Lua script that, atomically,
//! answers a retried batch id with the answer it got the first time (or refuses it when the
//! id comes back with other fixes), refuses the write when the shard is over its bound, and
//! otherwise appends the entry and remembers the batch id with the batch's fingerprint.
//! Atomicity matters: a dedupe key written apart from its entry could claim a batch that
//! was never stored, or store a batch twice.

use locus_wire::api::{BatchResponse, StopReason};
use locus_wire::buffer::{BufferEntry, ENTRY_FIELD, shard_of};
use locus_wire::record::SessionEventKind;
use locus_wire::{BatchId, SessionId};
use redis::aio::ConnectionManager;
use redis::{RedisError, Script};

/// Why the buffer did not take a write.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The shard holds its maximum of entries (Kafka is slow or down).
    #[error("buffer shard {0} is full")]
    Full(u32),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// An entry or stored answer did not (de)serialize.
    #[error("encoding: {0}")]
    Encoding(#[from] serde_json::Error),
}

/// Outcome of appending a batch.
#[derive(Debug)]
pub enum Append {
    /// Stored now.
    Stored,
    /// Stored earlier under the same batch id with the same fixes; this is the answer
    /// given then.
    Duplicate(BatchResponse),
    /// The batch id was used earlier in this session for other fixes: nothing stored.
    Reused,
    /// The session's stop event is already in the buffer: nothing stored, so that no
    /// batch lands after it.
    Closed(StopReason),
}

/// What the buffer remembers of a batch id: `fp:<fingerprint><answer JSON>`. Values
/// written before fingerprints existed are the bare answer, and count as the same batch.
const FINGERPRINT_TAG: &str = "fp:";

/// KEYS: the shard stream, the batch id's dedupe key, the session's closed mark. ARGV: the
/// entry, the shard bound, the dedupe window in seconds, what to remember (see
/// [`FINGERPRINT_TAG`]), the entry field. Returns {0} stored, {1, what was remembered} seen
/// before (compared by [`remembered`]), {2} full, {4, stop reason} closed. A retry of a
/// stored batch gets its answer even after the stop; a new batch after the stop event does
/// not get in.
const APPEND_BATCH: &str = r"
local previous = redis.call('GET', KEYS[2])
if previous then
  return {1, previous}
end
local closed = redis.call('GET', KEYS[3])
if closed then
  return {4, closed}
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then
  return {2, ''}
end
redis.call('XADD', KEYS[1], '*', ARGV[5], ARGV[1])
redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[3])
return {0, ''}
";

/// KEYS: the shard stream, the session's closed mark. ARGV: the entry field, the stop
/// event entry, the stop reason, the mark's lifetime in seconds. The event and the mark go
/// in together, so a batch appended after the event is refused by [`APPEND_BATCH`].
const APPEND_STOP: &str = r"
redis.call('XADD', KEYS[1], '*', ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
return 0
";

/// A batch id's earlier answer, as [`Buffer::previous_answer`] finds it.
#[derive(Debug)]
pub enum Previous {
    /// The same fixes were stored under it: answer this.
    Same(BatchResponse),
    /// Other fixes were stored under it.
    Other,
}

/// Compares what the buffer remembered of a batch id with the `fingerprint` of the batch
/// posted now: the one reader of the `fp:<fingerprint><answer>` format.
fn remembered(stored: &str, fingerprint: &str) -> Result<Previous, serde_json::Error> {
    let answer = match stored.strip_prefix(FINGERPRINT_TAG) {
        None => stored,
        Some(rest) => match rest.strip_prefix(fingerprint) {
            Some(answer) => answer,
            None => return Ok(Previous::Other),
        },
    };
    Ok(Previous::Same(serde_json::from_str(answer)?))
}

/// Names of the keys of one deployment (one prefix).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    shards: u32,
}

impl Keys {
    /// Keys under `prefix`, sharded `shards` ways.
    pub fn new(prefix: &str, shards: u32) -> Self {
        Self {
            prefix: prefix.to_owned(),
            shards: shards.max(1),
        }
    }

    /// Number of shards.
    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// The stream of shard `shard`. The `{...}` hash tag keeps a shard's stream and its
    /// dedupe keys in one Redis Cluster slot, as the Lua script needs.
    pub fn stream(&self, shard: u32) -> String {
        format!("{}:{{s{shard}}}:fixes", self.prefix)
    }

    /// The mark that says a session's stop event is buffered.
    fn closed(&self, shard: u32, session: SessionId) -> String {
        format!("{}:{{s{shard}}}:closed:{session}", self.prefix)
    }

    /// The lease that says which forwarder owns shard `shard`.
    pub fn lease(&self, shard: u32) -> String {
        format!("{}:{{s{shard}}}:owner", self.prefix)
    }

    /// The dedupe key of a batch.
    fn batch(&self, shard: u32, session: SessionId, batch_id: &BatchId) -> String {
        format!("{}:{{s{shard}}}:batch:{session}:{batch_id}", self.prefix)
    }

    /// The shard of a session.
    pub fn shard_of(&self, session: SessionId) -> u32 {
        shard_of(session, self.shards)
    }
}

/// Writes to the buffer.
#[derive(Clone)]
pub struct Buffer {
    conn: ConnectionManager,
    keys: Keys,
    max_entries: u64,
    dedupe_window_secs: u64,
    append: Script,
    append_stop: Script,
}

impl Buffer {
    /// A buffer over `conn`.
    pub fn new(
        conn: ConnectionManager,
        keys: Keys,
        max_entries: u64,
        dedupe_window_secs: u64,
    ) -> Self {
        Self {
            conn,
            keys,
            max_entries,
            dedupe_window_secs,
            append: Script::new(APPEND_BATCH),
            append_stop: Script::new(APPEND_STOP),
        }
    }

    /// Appends the accepted fixes of a batch unless its batch id was seen in the window.
    /// `answer` is what the client gets now, and what a retry with the same `fingerprint`
    /// will get.
    pub async fn append_batch(
        &self,
        entry: &BufferEntry,
        batch_id: &BatchId,
        fingerprint: &str,
        answer: &BatchResponse,
    ) -> Result<Append, BufferError> {
        let session = entry.session_id();
        let shard = self.keys.shard_of(session);
        let (code, previous): (i64, String) = self
            .append
            .key(self.keys.stream(shard))
            .key(self.keys.batch(shard, session, batch_id))
            .key(self.keys.closed(shard, session))
            .arg(serde_json::to_string(entry)?)
            .arg(self.max_entries)
            .arg(self.dedupe_window_secs)
            .arg(format!(
                "{FINGERPRINT_TAG}{fingerprint}{}",
                serde_json::to_string(answer)?
            ))
            .arg(ENTRY_FIELD)
            .invoke_async(&mut self.conn.clone())
            .await?;
        match code {
            0 => Ok(Append::Stored),
            1 => Ok(match remembered(&previous, fingerprint)? {
                Previous::Same(answer) => Append::Duplicate(answer),
                Previous::Other => Append::Reused,
            }),
            4 => Ok(Append::Closed(
                StopReason::parse(&previous).unwrap_or(StopReason::Requested),
            )),
            _ => Err(BufferError::Full(shard)),
        }
    }

    /// Appends a session event. It ignores the bound: events are rare and small, and
    /// refusing one would leave PostgreSQL and Kafka telling different stories. A stop
    /// event also marks the session closed (for the dedupe window), so no batch is
    /// buffered after it.
    pub async fn append_event(&self, entry: &BufferEntry) -> Result<(), BufferError> {
        let session = entry.session_id();
        let shard = self.keys.shard_of(session);
        if let BufferEntry::SessionEvent(event) = entry
            && event.kind == SessionEventKind::Stopped
        {
            let reason = event.reason.unwrap_or(StopReason::Requested);
            let _: i64 = self
                .append_stop
                .key(self.keys.stream(shard))
                .key(self.keys.closed(shard, session))
                .arg(ENTRY_FIELD)
                .arg(serde_json::to_string(entry)?)
                .arg(reason.as_str())
                .arg(self.dedupe_window_secs.max(1))
                .invoke_async(&mut self.conn.clone())
                .await?;
            return Ok(());
        }
        let _: String = redis::cmd("XADD")
            .arg(self.keys.stream(shard))
            .arg("*")
            .arg(ENTRY_FIELD)
            .arg(serde_json::to_string(entry)?)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// What was stored under `batch_id` of `session` within the window, compared with
    /// `fingerprint`.
    pub async fn previous_answer(
        &self,
        session: SessionId,
        batch_id: &BatchId,
        fingerprint: &str,
    ) -> Result<Option<Previous>, BufferError> {
        let shard = self.keys.shard_of(session);
        let stored: Option<String> = redis::cmd("GET")
            .arg(self.keys.batch(shard, session, batch_id))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(stored
            .map(|stored| remembered(&stored, fingerprint))
            .transpose()?)
    }

    /// PING, for readiness.
    pub async fn ping(&self) -> Result<(), BufferError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = r#"{"batch_id":"b","accepted":2,"rejected":[],"duplicate":false}"#;

    #[test]
    fn a_remembered_answer_is_the_same_batch_only_with_the_same_fingerprint() {
        let stored = format!("{FINGERPRINT_TAG}{}{ANSWER}", "a".repeat(32));
        assert!(matches!(
            remembered(&stored, &"a".repeat(32)).unwrap(),
            Previous::Same(answer) if answer.accepted == 2
        ));
        assert!(matches!(
            remembered(&stored, &"b".repeat(32)).unwrap(),
            Previous::Other
        ));
        // Written before fingerprints existed: taken as the same batch.
        assert!(matches!(
            remembered(ANSWER, &"b".repeat(32)).unwrap(),
            Previous::Same(_)
        ));
    }
}
