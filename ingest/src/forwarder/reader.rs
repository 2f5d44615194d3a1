//! Reading a buffer shard: the reading twin of `crate::buffer`, on the same keys. Entries
//! are read through the consumer group [`GROUP`], so an entry read but not yet
//! acknowledged stays pending, and whoever owns the shard next claims and forwards it.
//!
//! Every command that gives this consumer entries (reads and claims) runs in a Lua script
//! behind the shard's lease ([`Fence`]): Redis runs it only while the lease key holds this
//! forwarder's token. A read that reaches Redis after another forwarder took the shard
//! (sent before a stall, delivered after it) is refused instead of handing a dead owner
//! entries that the new owner would then skip.

use std::time::Duration;

use locus_wire::buffer::{BufferEntry, ENTRY_FIELD};
use redis::Script;
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use super::lease::Fence;
use crate::events;

/// KEYS: the stream, the lease. ARGV: the token, the group, the consumer, the count, the id
/// to read after (`>`: new entries, else this consumer's pending ones after it). Returns
/// {entries (nil when none), the group's last delivered id when there were no new
/// entries, else ''}; refuses with NOTOWNER unless the lease holds the token. It never
/// blocks (scripts cannot): [`ShardReader::wait_for_new`] waits instead, from that id.
const FENCED_READ: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('NOTOWNER the shard lease is not ours')
end
local read = redis.pcall('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[4], 'STREAMS', KEYS[1], ARGV[5])
if type(read) == 'table' and read.err then
  return read
end
if read then
  return {read, ''}
end
local last = ''
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local fields = {}
  for i = 1, #group, 2 do
    fields[group[i]] = group[i + 1]
  end
  if fields['name'] == ARGV[2] then
    last = fields['last-delivered-id']
  end
end
return {false, last}
";

/// KEYS: the stream, the lease. ARGV: the token, the group, the consumer, the minimum idle
/// time in ms, the cursor, the count. XAUTOCLAIM JUSTID behind the lease, like
/// [`FENCED_READ`]: a late claim must not take entries from the shard's new owner.
const FENCED_CLAIM: &str = r"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return redis.error_reply('NOTOWNER the shard lease is not ours')
end
return redis.pcall('XAUTOCLAIM', KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], 'COUNT', ARGV[6], 'JUSTID')
";

/// Consumer group of the forwarders in every shard stream.
pub const GROUP: &str = "forwarder";

/// Where to read a shard from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFrom {
    /// Entries this consumer already read (or claimed) and did not acknowledge yet, after
    /// this entry id (`0` from the first).
    Pending {
        /// The last pending entry already seen in this pass.
        after: String,
    },
    /// Entries no consumer has read yet.
    New,
}

/// What a read found.
#[derive(Debug)]
pub enum Read {
    /// Entries, oldest first.
    Entries(Vec<Entry>),
    /// No entries; for a read of new entries, the group's last delivered id to wait from
    /// (empty when unknown).
    Empty {
        /// The id to wait after.
        last_delivered: String,
    },
}

/// One entry read from a shard.
#[derive(Debug)]
pub struct Entry {
    /// The stream entry id: what gets acknowledged.
    pub id: String,
    /// The entry, as stored.
    pub body: Body,
}

/// What an entry held.
#[derive(Debug)]
pub enum Body {
    /// A decoded buffer entry.
    Decoded(BufferEntry),
    /// Bytes that are not a buffer entry (a bug or a foreign writer): dead-letter them.
    Undecodable {
        /// The raw value (for an entry without Locus's field: its fields as a JSON object).
        raw: Vec<u8>,
        /// Why it did not decode.
        error: String,
    },
    /// The entry was deleted while pending (Redis then returns it without fields): nothing
    /// to produce, only to acknowledge.
    Gone,
}

/// Reads one shard stream as one consumer of the group.
pub struct ShardReader {
    stream: String,
    consumer: String,
    read_count: usize,
    /// [`FENCED_READ`] and [`FENCED_CLAIM`], hashed once rather than per call.
    fenced_read: Script,
    fenced_claim: Script,
}

impl ShardReader {
    /// A reader of `stream` as `consumer`, `read_count` entries at a time.
    pub fn new(stream: String, consumer: &str, read_count: usize) -> Self {
        Self {
            stream,
            consumer: consumer.to_owned(),
            read_count,
            fenced_read: Script::new(FENCED_READ),
            fenced_claim: Script::new(FENCED_CLAIM),
        }
    }

    /// The stream key.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Creates the consumer group (and the stream) unless it exists.
    pub async fn ensure_group(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
        // "0" rather than "$": entries written before the group existed are forwarded too.
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e),
            _ => Ok(()),
        }
    }

    /// Reads up to `read_count` entries, oldest first, if `fence` still holds. Never
    /// blocks; see [`ShardReader::wait_for_new`].
    pub async fn read(
        &self,
        conn: &mut ConnectionManager,
        fence: &Fence,
        from: &ReadFrom,
    ) -> redis::RedisResult<Read> {
        let id = match from {
            ReadFrom::Pending { after } => after.as_str(),
            ReadFrom::New => ">",
        };
        let reply: (Option<StreamReadReply>, String) = match self
            .fenced_read
            .key(&self.stream)
            .key(&fence.key)
            .arg(&fence.token)
            .arg(GROUP)
            .arg(&self.consumer)
            .arg(self.read_count)
            .arg(id)
            .invoke_async(conn)
            .await
        {
            Err(e) if lost_group(&e) => {
                self.recreate_group(conn).await?;
                return Ok(Read::Empty {
                    last_delivered: String::new(),
                });
            }
            reply => reply?,
        };
        let entries: Vec<Entry> = reply
            .0
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).map(decode).collect())
            .unwrap_or_default();
        Ok(if entries.is_empty() {
            Read::Empty {
                last_delivered: reply.1,
            }
        } else {
            Read::Entries(entries)
        })
    }

    /// Waits at most `block` for an entry after `last_delivered` (the group's last
    /// delivered id) to be in the stream, without reading it for the group: a plain XREAD
    /// has no effect on the group, so it needs no fence, and the fenced read that follows
    /// takes the entries.
    pub async fn wait_for_new(
        &self,
        conn: &mut ConnectionManager,
        last_delivered: &str,
        block: Duration,
    ) -> redis::RedisResult<()> {
        let after = if last_delivered.is_empty() {
            "$"
        } else {
            last_delivered
        };
        let _: redis::Value = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(after)
            .query_async(conn)
            .await?;
        Ok(())
    }

    /// Moves every entry pending with any consumer of the group for at least `min_idle`
    /// to this one, if `fence` still holds; returns how many. With no minimum, a new owner
    /// takes over everything the previous one read but did not acknowledge; with one, an
    /// owner picks up, now and then, entries that some consumer left behind anyway.
    pub async fn claim(
        &self,
        conn: &mut ConnectionManager,
        fence: &Fence,
        min_idle: Duration,
    ) -> redis::RedisResult<usize> {
        let mut cursor = "0-0".to_owned();
        let mut claimed = 0;
        loop {
            let reply: StreamAutoClaimReply = match self
                .fenced_claim
                .key(&self.stream)
                .key(&fence.key)
                .arg(&fence.token)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(min_idle.as_millis() as u64)
                .arg(&cursor)
                .arg(self.read_count)
                .invoke_async(conn)
                .await
            {
                // A group made now has nothing pending to claim.
                Err(e) if lost_group(&e) => {
                    self.recreate_group(conn).await?;
                    return Ok(claimed);
                }
                reply => reply?,
            };
            claimed += reply.claimed.len();
            events::EntriesClaimed {
                count: reply.claimed.len(),
            }
            .emit();
            if reply.next_stream_id == "0-0" {
                return Ok(claimed);
            }
            cursor = reply.next_stream_id;
        }
    }

    /// Moves entry `id` to the shard's dead-letter stream ([`dead_letter_key`]), as it was
    /// buffered and with `reason` and `detail`, and acknowledges and deletes it, in one
    /// atomic step: it is in exactly one of the two streams.
    pub async fn dead_letter(
        &self,
        conn: &mut ConnectionManager,
        id: &str,
        entry: &BufferEntry,
        reason: &str,
        detail: &str,
    ) -> redis::RedisResult<()> {
        let body = serde_json::to_string(entry).expect("a buffer entry serializes");
        redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(dead_letter_key(&self.stream))
            .arg("*")
            .arg(ENTRY_FIELD)
            .arg(body)
            .arg("reason")
            .arg(reason)
            .arg("detail")
            .arg(detail)
            .arg("origin")
            .arg(format!("{}/{id}", self.stream))
            .ignore()
            .cmd("XACK")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.stream)
            .arg(id)
            .ignore()
            .query_async::<()>(conn)
            .await
    }

    /// How many times entry `id` was delivered to a consumer of the group (XPENDING's
    /// delivery count); 0 if it is not pending.
    pub async fn deliveries(
        &self,
        conn: &mut ConnectionManager,
        id: &str,
    ) -> redis::RedisResult<u64> {
        let reply: redis::streams::StreamPendingCountReply = redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(id)
            .arg(id)
            .arg(1)
            .query_async(conn)
            .await?;
        Ok(reply.ids.first().map_or(0, |p| p.times_delivered as u64))
    }

    /// Acknowledges and deletes `ids` in one atomic step.
    pub async fn ack(
        &self,
        conn: &mut ConnectionManager,
        ids: &[String],
    ) -> redis::RedisResult<()> {
        // XACK then XDEL: the stream is a queue, and deleting keeps XLEN (the bound
        // admission checks) equal to what is still waiting.
        redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&self.stream)
            .arg(GROUP)
            .arg(ids)
            .ignore()
            .cmd("XDEL")
            .arg(&self.stream)
            .arg(ids)
            .ignore()
            .query_async::<()>(conn)
            .await
    }
}

impl ShardReader {
    /// Creates the group again after Redis lost it (a restart without persistence, or a
    /// flush): without this, every read fails with NOGROUP while ingest keeps appending to
    /// the stream it recreated, and the buffer fills for good.
    async fn recreate_group(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
        self.ensure_group(conn).await?;
        events::ConsumerGroupRecreated {
            stream: &self.stream,
        }
        .emit();
        Ok(())
    }
}

/// Whether Redis answered that the stream or its consumer group does not exist.
fn lost_group(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP")
}

/// The dead-letter stream beside shard stream `stream` (`<prefix>:{sN}:dead`, in the
/// stream's hash slot): entries that Kafka refused for good, each with why.
pub fn dead_letter_key(stream: &str) -> String {
    // The shard keys are named in `crate::buffer::Keys`; this is the one key the forwarder
    // adds, derived from the stream's so the two cannot drift apart.
    let base = stream.strip_suffix(":fixes").unwrap_or(stream);
    format!("{base}:dead")
}

/// Whether a fenced script refused because the lease is someone else's (or lapsed).
pub fn not_owner(e: &redis::RedisError) -> bool {
    e.code() == Some("NOTOWNER")
}

fn decode(entry: StreamId) -> Entry {
    let body = match entry.map.get(ENTRY_FIELD) {
        Some(redis::Value::BulkString(bytes)) => match serde_json::from_slice(bytes) {
            Ok(decoded) => Body::Decoded(decoded),
            Err(error) => Body::Undecodable {
                raw: bytes.clone(),
                error: error.to_string(),
            },
        },
        // Only an entry with no fields at all was deleted; anything else is data that
        // must not leave the path unseen.
        None if entry.map.is_empty() => Body::Gone,
        _ => Body::Undecodable {
            raw: fields_as_json(&entry),
            error: format!("the entry has no bulk-string field {ENTRY_FIELD:?}"),
        },
    };
    Entry { id: entry.id, body }
}

/// An entry's fields as a JSON object, for the dead letter of an entry Locus did not write.
fn fields_as_json(entry: &StreamId) -> Vec<u8> {
    let fields: serde_json::Map<String, serde_json::Value> = entry
        .map
        .iter()
        .map(|(field, value)| {
            let text = match value {
                redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                other => format!("{other:?}"),
            };
            (field.clone(), serde_json::Value::String(text))
        })
        .collect();
    serde_json::to_vec(&fields).expect("a map of strings serializes")
}
