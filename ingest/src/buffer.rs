//! The Redis buffer between the HTTP edge and Kafka.
//!
//! Each shard is a Redis stream. A batch is written by one Lua script that, atomically,
//! answers a retried batch id with the answer it got the first time, refuses the write when
//! the shard is over its bound, and otherwise appends the entry and remembers the batch id.
//! Atomicity matters: a dedupe key written apart from its entry could claim a batch that
//! was never stored, or store a batch twice.

use locus_wire::api::BatchResponse;
use locus_wire::buffer::{BufferEntry, ENTRY_FIELD, shard_of};
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
    /// Stored earlier under the same batch id; this is the answer given then.
    Duplicate(BatchResponse),
}

const APPEND_BATCH: &str = r"
local previous = redis.call('GET', KEYS[2])
if previous then
  return {1, previous}
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then
  return {2, ''}
end
redis.call('XADD', KEYS[1], '*', ARGV[5], ARGV[1])
redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[3])
return {0, ''}
";

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
        }
    }

    /// Appends the accepted fixes of a batch unless its batch id was seen in the window.
    /// `answer` is what the client gets now, and what a retry will get.
    pub async fn append_batch(
        &self,
        entry: &BufferEntry,
        batch_id: &BatchId,
        answer: &BatchResponse,
    ) -> Result<Append, BufferError> {
        let session = entry.session_id();
        let shard = self.keys.shard_of(session);
        let (code, previous): (i64, String) = self
            .append
            .key(self.keys.stream(shard))
            .key(self.keys.batch(shard, session, batch_id))
            .arg(serde_json::to_string(entry)?)
            .arg(self.max_entries)
            .arg(self.dedupe_window_secs)
            .arg(serde_json::to_string(answer)?)
            .arg(ENTRY_FIELD)
            .invoke_async(&mut self.conn.clone())
            .await?;
        match code {
            0 => Ok(Append::Stored),
            1 => Ok(Append::Duplicate(serde_json::from_str(&previous)?)),
            _ => Err(BufferError::Full(shard)),
        }
    }

    /// Appends a session event. It ignores the bound: events are rare and small, and
    /// refusing one would leave PostgreSQL and Kafka telling different stories.
    pub async fn append_event(&self, entry: &BufferEntry) -> Result<(), BufferError> {
        let shard = self.keys.shard_of(entry.session_id());
        let _: String = redis::cmd("XADD")
            .arg(self.keys.stream(shard))
            .arg("*")
            .arg(ENTRY_FIELD)
            .arg(serde_json::to_string(entry)?)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// The answer given to `batch_id` of `session`, if it was stored within the window.
    pub async fn previous_answer(
        &self,
        session: SessionId,
        batch_id: &BatchId,
    ) -> Result<Option<BatchResponse>, BufferError> {
        let shard = self.keys.shard_of(session);
        let stored: Option<String> = redis::cmd("GET")
            .arg(self.keys.batch(shard, session, batch_id))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(stored.map(|s| serde_json::from_str(&s)).transpose()?)
    }

    /// PING, for readiness.
    pub async fn ping(&self) -> Result<(), BufferError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}
