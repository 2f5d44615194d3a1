//! Reading a buffer shard: the reading twin of `crate::buffer`, on the same keys. Entries
//! are read through the consumer group [`GROUP`], so an entry read but not yet
//! acknowledged stays pending, and whoever owns the shard next claims and forwards it.

use locus_wire::buffer::{BufferEntry, ENTRY_FIELD};
use redis::aio::ConnectionManager;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use crate::events;

/// Consumer group of the forwarders in every shard stream.
pub const GROUP: &str = "forwarder";

/// Where to read a shard from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// Entries this consumer already read (or claimed) and did not acknowledge yet.
    Pending,
    /// Entries no consumer has read yet, waiting at most this many milliseconds for one
    /// (`None`: answer at once).
    New { block_ms: Option<u64> },
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
}

impl ShardReader {
    /// A reader of `stream` as `consumer`, `read_count` entries at a time.
    pub fn new(stream: String, consumer: &str, read_count: usize) -> Self {
        Self {
            stream,
            consumer: consumer.to_owned(),
            read_count,
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

    /// Reads up to `read_count` entries, oldest first.
    pub async fn read(
        &self,
        conn: &mut ConnectionManager,
        from: ReadFrom,
    ) -> redis::RedisResult<Vec<Entry>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP").arg(GROUP).arg(&self.consumer);
        cmd.arg("COUNT").arg(self.read_count);
        let id = match from {
            ReadFrom::Pending => "0",
            ReadFrom::New { block_ms } => {
                if let Some(ms) = block_ms {
                    cmd.arg("BLOCK").arg(ms);
                }
                ">"
            }
        };
        cmd.arg("STREAMS").arg(&self.stream).arg(id);
        let reply: Option<StreamReadReply> = match cmd.query_async(conn).await {
            Err(e) if lost_group(&e) => {
                self.recreate_group(conn).await?;
                return Ok(Vec::new());
            }
            reply => reply?,
        };
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).map(decode).collect())
            .unwrap_or_default())
    }

    /// Moves every entry pending with any consumer of the group to this one, so that a
    /// new owner forwards what the previous one read but did not acknowledge.
    pub async fn claim_all(&self, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
        let mut cursor = "0-0".to_owned();
        loop {
            let reply: StreamAutoClaimReply = match redis::cmd("XAUTOCLAIM")
                .arg(&self.stream)
                .arg(GROUP)
                .arg(&self.consumer)
                .arg(0)
                .arg(&cursor)
                .arg("COUNT")
                .arg(self.read_count)
                .arg("JUSTID")
                .query_async(conn)
                .await
            {
                // A group made now has nothing pending to claim.
                Err(e) if lost_group(&e) => return self.recreate_group(conn).await,
                reply => reply?,
            };
            events::EntriesClaimed {
                count: reply.claimed.len(),
            }
            .emit();
            if reply.next_stream_id == "0-0" {
                return Ok(());
            }
            cursor = reply.next_stream_id;
        }
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
