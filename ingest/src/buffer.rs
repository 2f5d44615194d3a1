//! The Redis buffer between the HTTP edge and Kafka.
//!
//! Each shard is a Redis stream. A batch is written by one Lua script that, atomically,
//! answers a retried batch id with the answer it got the first time (or refuses it when the
//! id comes back with other fixes), refuses the write when the shard is over its bound, and
//! otherwise appends the entry and remembers the batch id with the batch's fingerprint.
//! Atomicity matters: a dedupe key written apart from its entry could claim a batch that
//! was never stored, or store a batch twice.
//!
//! What a retry needs is kept small and per session: one hash per session (its dedupe
//! state) maps an 8-byte tag of each batch id to 8 bytes of the batch's fingerprint, its
//! accepted count and, only when there were any, its rejections. The hash lives for the
//! dedupe window after the session's last stored batch, so it expires with the session's
//! retry horizon instead of one key per batch (about 320 bytes each) for a day.

use locus_wire::api::{BatchResponse, StopReason};
use locus_wire::api::{RejectReason, RejectedFix};
use locus_wire::buffer::{BufferEntry, ENTRY_FIELD, shard_of};
use locus_wire::fingerprint::{Fingerprint, SHORT_LEN, batch_tag};
use locus_wire::record::SessionEventKind;
use locus_wire::{BatchId, SessionId};
use redis::aio::ConnectionManager;
use redis::{RedisError, Script};
use std::sync::Arc;

use crate::admission::shared::{ChargeArgs, Charged, LOOK};

/// Why the buffer did not take a write.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The shard holds its maximum of entries (Kafka is slow or down).
    /// Carries the shard and its bound (`LOCUS_BUFFER_MAX_ENTRIES`).
    #[error("buffer shard {0} is full ({1} entries)")]
    Full(u32, u64),
    /// Redis did not answer within the request-path deadline (`LOCUS_REDIS_DEADLINE_MS`):
    /// the write may or may not have happened.
    #[error("redis: no answer within {} ms", .0.as_millis())]
    Deadline(std::time::Duration),
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// An entry or stored answer did not (de)serialize.
    #[error("encoding: {0}")]
    Encoding(#[from] serde_json::Error),
    /// What the dedupe state kept of a batch is not in the format [`remember`] writes.
    #[error("unreadable dedupe state: {0:?}")]
    Remembered(String),
}

/// Outcome of appending a batch.
#[derive(Debug)]
pub enum Append {
    /// Stored now, as the stream entry `entry_id`.
    Stored {
        /// The id Redis gave the entry (what the forwarder acknowledges).
        entry_id: String,
    },
    /// Stored earlier under the same batch id with the same fixes; this is the answer
    /// given then.
    Duplicate(BatchResponse),
    /// The batch id was used earlier in this session for other fixes: nothing stored.
    Reused,
    /// The session's stop event is already in the buffer: nothing stored, so that no
    /// batch lands after it.
    Closed(StopReason),
    /// The buffer has no mark of the session's start event: nothing stored, so that no
    /// batch lands before it. Publish the session's outbox rows, then append again with
    /// `start_published`.
    Unopened,
    /// A fixes budget charged with the append refused the batch (see
    /// [`Appended::budgets`]): nothing stored, nothing charged.
    OverBudget,
}

/// What an append answered: its outcome and, when the fixes budgets were charged with it,
/// what they answered (after the charge when stored, as they stand otherwise).
#[derive(Debug)]
pub struct Appended {
    /// What happened to the batch.
    pub outcome: Append,
    /// The shared fixes budgets, when the append was given their charge.
    pub budgets: Option<Charged>,
}

/// What the layout before per-session dedupe state kept under a batch's own key:
/// `fp:<fingerprint><answer JSON>` (or, before fingerprints, the bare answer). Still read so
/// that a retry across the upgrade is not stored twice; such keys are gone one dedupe
/// window after the upgrade, and this reading with them.
const LEGACY_FINGERPRINT_TAG: &str = "fp:";

/// KEYS: the shard stream, the session's dedupe state, the session's closed mark, the
/// batch's legacy dedupe key, the session's open mark, and, when the shared fixes budgets
/// are charged with the batch, the device's and the tenant's bucket. ARGV: the entry, the
/// shard bound, the dedupe window in seconds, what to remember (see [`remember`]), the
/// entry field, the batch id's tag, `1` when the caller has just published the session's
/// start (skip the open check and set the mark) else `0`, then with the buckets the cost
/// and the budgets ([`ChargeArgs`]). Returns {code, value, budgets}: code 0 stored (value:
/// the entry id), 1 seen before (what was remembered, compared by [`remembered`]), 3 seen
/// before the upgrade (the legacy value), 2 full, 4 closed (the stop reason), 5 no open
/// mark, 6 over a fixes budget; budgets are the six numbers of [`Charged::from_reply`]
/// (empty without buckets): after the charge when stored, as they stand otherwise.
///
/// A retry of a stored batch gets its answer even after the stop, and is not charged; a
/// new batch after the stop event does not get in, nor one before the start event (its
/// publication failed and the relay has not retried yet). The budgets are charged only
/// when the batch is stored, in the same step, so a refusal of any kind charges nothing
/// and the budgets cost no round trip of their own. The state's and the open mark's
/// lifetimes restart with every stored batch, so a batch is remembered for at least the
/// window, a session's state goes one window after its last batch, and only a session
/// idle for a window pays the publish again.
///
/// The buckets are in another Redis Cluster slot than the shard (`{rl:<tenant>}`, one per
/// tenant, against `{s<N>}`): the script needs the buffer and the budgets on one Redis, as
/// ingest runs them (one `LOCUS_REDIS_URL`, no Cluster).
const APPEND_BATCH: &str = r"
local budget = {}
local d, n
if KEYS[6] then
  clock()
  local cost = tonumber(ARGV[8])
  d = look(KEYS[6], cost, tonumber(ARGV[9]), tonumber(ARGV[10]))
  n = look(KEYS[7], cost, tonumber(ARGV[11]), tonumber(ARGV[12]))
  local by, wait = refusal(d, n)
  budget = {by, wait, d[3], d[5], n[3], n[5]}
end
local previous = redis.call('HGET', KEYS[2], ARGV[6])
if previous then
  return {1, previous, budget}
end
local legacy = redis.call('GET', KEYS[4])
if legacy then
  return {3, legacy, budget}
end
local closed = redis.call('GET', KEYS[3])
if closed then
  return {4, closed, budget}
end
if ARGV[7] ~= '1' and redis.call('EXISTS', KEYS[5]) == 0 then
  return {5, '', budget}
end
if d and budget[1] ~= 0 then
  return {6, '', budget}
end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then
  return {2, '', budget}
end
local id = redis.call('XADD', KEYS[1], '*', ARGV[5], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[6], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[5], '1', 'EX', ARGV[3])
if d then
  budget = charge(KEYS[6], d, KEYS[7], n)
end
return {0, id, budget}
";

/// KEYS: the shard stream, the event's mark, the session's closed mark, the session's open
/// mark. ARGV: the entry field, the session event entry, the marks' lifetime in seconds,
/// the stop reason (empty for a start). Returns 1 when it appended the event, 0 when the
/// event's mark says it is already in (a publisher that crashed after the append publishes
/// its outbox row again). A stop event and the closed mark go in together, so a batch
/// appended after the event is refused by [`APPEND_BATCH`]; a start event and the open
/// mark too, so a batch is refused until its session's start is in.
const APPEND_EVENT: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('XADD', KEYS[1], '*', ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], '1', 'EX', ARGV[3])
if ARGV[4] ~= '' then
  redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[3])
else
  redis.call('SET', KEYS[4], '1', 'EX', ARGV[3])
end
return 1
";

/// KEYS: a shard stream. ARGV: the first and the last entry id of a range (`-` for the
/// start of the stream), the forwarders' consumer group. Returns 1 when the range holds no
/// entry and the group has read past its end, else 0. The forwarder deletes an entry only
/// after Kafka confirmed all its records (XACK then XDEL), so an entry that is gone from a
/// stream its group has read past was confirmed. A stream Redis lost has no group: never
/// confirmed, so the caller hears "not confirmed" and retries, which stores the batch again.
const FORWARDED: &str = r"
if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', 1) > 0 then
  return 0
end
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok then
  return 0
end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local end_ms, end_seq = parse(ARGV[2])
for _, group in ipairs(groups) do
  local fields = {}
  for i = 1, #group, 2 do
    fields[group[i]] = group[i + 1]
  end
  if fields['name'] == ARGV[3] then
    local ms, seq = parse(fields['last-delivered-id'])
    if ms > end_ms or (ms == end_ms and seq >= end_seq) then
      return 1
    end
  end
end
return 0
";

/// How far the forwarder got with a batch, as [`Buffer::wait_forwarded`] saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarded {
    /// Kafka confirmed every record of the batch.
    Confirmed,
    /// Not confirmed within the time given (the batch is in the buffer).
    NotYet,
}

/// A batch id's earlier answer, as [`Buffer::previous_answer`] finds it.
#[derive(Debug)]
pub enum Previous {
    /// The same fixes were stored under it: answer this.
    Same(BatchResponse),
    /// Other fixes were stored under it.
    Other,
}

/// What the session's dedupe state keeps of a stored batch: the first [`SHORT_LEN`] bytes
/// of its fingerprint, then its accepted count in decimal, then, only when fixes were
/// rejected, `;` and each rejection as its index in decimal and one letter for its reason
/// ([`reason_letter`]). The batch id is the field's name (as a tag), and `duplicate` is
/// always true on a retry, so neither is kept.
///
/// The rejections' messages are not kept: they repeat the client's input, and keeping them
/// let a small batch with one huge bad value pin its size in Redis for the dedupe window. A
/// retry hears each reason's summary instead. Values written before this form kept `:` and
/// the rejections as JSON; [`remembered`] still reads them for one dedupe window.
fn remember(
    fingerprint: &Fingerprint,
    answer: &BatchResponse,
) -> Result<Vec<u8>, serde_json::Error> {
    use std::io::Write;
    let mut out = Vec::with_capacity(SHORT_LEN + 8 + answer.rejected.len() * 4);
    out.extend_from_slice(&fingerprint.short());
    out.extend_from_slice(answer.accepted.to_string().as_bytes());
    if !answer.rejected.is_empty() {
        out.push(b';');
        for r in &answer.rejected {
            write!(out, "{}", r.index).expect("writing to a Vec cannot fail");
            out.push(reason_letter(r.reason));
        }
    }
    Ok(out)
}

/// The one-letter code of a rejection reason in the dedupe state (see [`remember`]). A new
/// reason is a compile error here until it has a letter, and [`letter_reason`] its inverse.
fn reason_letter(reason: RejectReason) -> u8 {
    match reason {
        RejectReason::InvalidFix => b'a',
        RejectReason::LatitudeOutOfRange => b'b',
        RejectReason::LongitudeOutOfRange => b'c',
        RejectReason::TimestampInFuture => b'd',
        RejectReason::TimestampTooOld => b'e',
        RejectReason::FieldOutOfRange => b'f',
    }
}

/// The reason of a letter written by [`reason_letter`].
fn letter_reason(letter: u8) -> Option<RejectReason> {
    Some(match letter {
        b'a' => RejectReason::InvalidFix,
        b'b' => RejectReason::LatitudeOutOfRange,
        b'c' => RejectReason::LongitudeOutOfRange,
        b'd' => RejectReason::TimestampInFuture,
        b'e' => RejectReason::TimestampTooOld,
        b'f' => RejectReason::FieldOutOfRange,
        _ => return None,
    })
}

/// The rejections of the compact form of [`remember`]: `<index><letter>` repeated.
fn compact_rejections(mut text: &[u8]) -> Option<Vec<RejectedFix>> {
    let mut out = Vec::new();
    while !text.is_empty() {
        let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
        let index = std::str::from_utf8(&text[..digits]).ok()?.parse().ok()?;
        let reason = letter_reason(*text.get(digits)?)?;
        out.push(RejectedFix {
            index,
            reason,
            message: reason.summary().to_owned(),
        });
        text = &text[digits + 1..];
    }
    Some(out)
}

/// Compares what [`remember`] kept of `batch_id` with the `fingerprint` of the batch
/// posted now, and rebuilds the answer given then: the one reader of that format.
fn remembered(
    stored: &[u8],
    fingerprint: &Fingerprint,
    batch_id: &BatchId,
) -> Result<Previous, BufferError> {
    let malformed = || BufferError::Remembered(String::from_utf8_lossy(stored).into_owned());
    let (short, rest) = stored.split_at_checked(SHORT_LEN).ok_or_else(malformed)?;
    if short != fingerprint.short() {
        return Ok(Previous::Other);
    }
    let (accepted, rejected) = match rest.iter().position(|&b| b == b';' || b == b':') {
        Some(at) if rest[at] == b';' => (
            &rest[..at],
            compact_rejections(&rest[at + 1..]).ok_or_else(malformed)?,
        ),
        // The JSON form, written before the compact one.
        Some(at) => (
            &rest[..at],
            serde_json::from_slice::<Vec<RejectedFix>>(&rest[at + 1..])?,
        ),
        None => (rest, Vec::new()),
    };
    let accepted = std::str::from_utf8(accepted)
        .ok()
        .and_then(|a| a.parse().ok())
        .ok_or_else(malformed)?;
    Ok(Previous::Same(BatchResponse {
        batch_id: batch_id.to_string(),
        accepted,
        rejected,
        duplicate: false,
    }))
}

/// Reads a value of the legacy layout (see [`LEGACY_FINGERPRINT_TAG`]).
fn remembered_legacy(stored: &str, fingerprint: &Fingerprint) -> Result<Previous, BufferError> {
    let answer = match stored.strip_prefix(LEGACY_FINGERPRINT_TAG) {
        None => stored,
        Some(rest) => match rest.strip_prefix(fingerprint.to_string().as_str()) {
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

    /// The mark that says a session's start event is buffered.
    fn open(&self, shard: u32, session: SessionId) -> String {
        format!("{}:{{s{shard}}}:open:{session}", self.prefix)
    }

    /// The mark that says the session event `event_id` is buffered.
    fn event(&self, shard: u32, event_id: uuid::Uuid) -> String {
        format!("{}:{{s{shard}}}:event:{event_id}", self.prefix)
    }

    /// The lease that says which forwarder owns shard `shard`.
    pub fn lease(&self, shard: u32) -> String {
        format!("{}:{{s{shard}}}:owner", self.prefix)
    }

    /// The dedupe state of a session: a hash from batch id tags to what [`remember`] kept.
    fn dedupe(&self, shard: u32, session: SessionId) -> String {
        format!("{}:{{s{shard}}}:dedupe:{session}", self.prefix)
    }

    /// The dedupe key of a batch in the legacy layout (see [`LEGACY_FINGERPRINT_TAG`]).
    fn legacy_batch(&self, shard: u32, session: SessionId, batch_id: &BatchId) -> String {
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
    max_entries: u64,
    deadline: std::time::Duration,
    dedupe_window_secs: u64,
    // Behind one Arc: the buffer is cloned with the application state several times per
    // request, and the key prefix and the scripts' texts and hashes were six allocations
    // and about 6 KB of copying each time (measured: 4 % of ingest's CPU at one-point
    // batches).
    fixed: Arc<Fixed>,
}

/// What a buffer never changes: its key names and its scripts.
struct Fixed {
    keys: Keys,
    append: Script,
    append_event: Script,
    forwarded: Script,
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
            max_entries,
            // Generous until `with_deadline` sets the configured one (tools and tests).
            deadline: std::time::Duration::from_secs(5),
            dedupe_window_secs,
            fixed: Arc::new(Fixed {
                keys,
                append: Script::new(&format!("{LOOK}{APPEND_BATCH}")),
                append_event: Script::new(APPEND_EVENT),
                forwarded: Script::new(FORWARDED),
            }),
        }
    }

    /// The same buffer, whose every call fails as [`BufferError::Deadline`] when Redis has
    /// not answered within `deadline`. Redis calls have no timeout of their own: without it
    /// a Redis that accepts connections but does not answer (stalled, swapping, a frozen
    /// network path) holds every request until the client gives up, instead of a fast 503.
    pub fn with_deadline(mut self, deadline: std::time::Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The request-path deadline of every call.
    pub fn deadline(&self) -> std::time::Duration {
        self.deadline
    }

    /// The bound of each shard, in entries.
    pub fn max_entries(&self) -> u64 {
        self.max_entries
    }

    /// Runs one Redis call under the deadline.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, RedisError>>,
    ) -> Result<T, BufferError> {
        match tokio::time::timeout(self.deadline, call).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(BufferError::Deadline(self.deadline)),
        }
    }

    /// Refuses a session change (a start, or a stop of `session`) as [`BufferError::Full`]
    /// while the buffer is at its bound, before the change is written. Its event is appended
    /// by [`Self::append_event`], which ignores the bound (an event committed in PostgreSQL
    /// must reach Kafka, or the two would tell different stories), so the bound is held
    /// here, at the request, instead. A start's session id (so its shard) is not known
    /// before PostgreSQL gives it, so a start needs room in every shard; a stop needs room
    /// in its session's shard. The check and the write are not one atomic step: a shard can
    /// pass its bound by the session changes in flight at that moment, a few entries, never
    /// more. Expiries (the sweeper) are not requests and are not refused.
    pub async fn room_for_session_change(
        &self,
        session: Option<SessionId>,
    ) -> Result<(), BufferError> {
        let shards: Vec<u32> = match session {
            Some(session) => vec![self.fixed.keys.shard_of(session)],
            None => (0..self.fixed.keys.shards()).collect(),
        };
        let mut pipe = redis::pipe();
        for shard in &shards {
            pipe.cmd("XLEN").arg(self.fixed.keys.stream(*shard));
        }
        let lengths: Vec<u64> = self
            .bounded(pipe.query_async(&mut self.conn.clone()))
            .await?;
        match shards
            .iter()
            .zip(lengths)
            .find(|(_, len)| *len >= self.max_entries)
        {
            Some((shard, _)) => Err(BufferError::Full(*shard, self.max_entries)),
            None => Ok(()),
        }
    }

    /// Appends the accepted fixes of a batch unless its batch id was seen in the window.
    /// `answer` is what the client gets now, and what a retry with the same `fingerprint`
    /// will get. Refused as [`Append::Unopened`] while the buffer has no mark of the
    /// session's start, unless `start_published` (the caller published the session's
    /// outbox rows just now: the start is in, or was before the mark existed). With
    /// `budget`, the shared fixes budgets are charged in the same step, only when the batch
    /// is stored, and a batch over either is [`Append::OverBudget`].
    pub async fn append_batch(
        &self,
        entry: &BufferEntry,
        batch_id: &BatchId,
        fingerprint: &Fingerprint,
        answer: &BatchResponse,
        start_published: bool,
        budget: Option<&ChargeArgs>,
    ) -> Result<Appended, BufferError> {
        let session = entry.session_id();
        let shard = self.fixed.keys.shard_of(session);
        let mut invocation = self.fixed.append.prepare_invoke();
        invocation
            .key(self.fixed.keys.stream(shard))
            .key(self.fixed.keys.dedupe(shard, session))
            .key(self.fixed.keys.closed(shard, session))
            .key(self.fixed.keys.legacy_batch(shard, session, batch_id))
            .key(self.fixed.keys.open(shard, session))
            .arg(serde_json::to_vec(entry)?)
            .arg(self.max_entries)
            .arg(self.dedupe_window_secs.max(1))
            .arg(remember(fingerprint, answer)?)
            .arg(ENTRY_FIELD)
            .arg(&batch_tag(batch_id)[..])
            .arg(if start_published { "1" } else { "0" });
        if let Some(budget) = budget {
            invocation.key(&budget.device_key).key(&budget.tenant_key);
            for arg in budget.args {
                invocation.arg(arg);
            }
        }
        let (code, reply, numbers): (i64, Vec<u8>, Vec<i64>) = self
            .bounded(invocation.invoke_async(&mut self.conn.clone()))
            .await?;
        let budgets = budget.map(|_| Charged::from_reply(&numbers));
        let outcome = |outcome| Ok(Appended { outcome, budgets });
        let previous = match code {
            0 => {
                return outcome(Append::Stored {
                    entry_id: String::from_utf8_lossy(&reply).into_owned(),
                });
            }
            1 => remembered(&reply, fingerprint, batch_id)?,
            3 => remembered_legacy(&String::from_utf8_lossy(&reply), fingerprint)?,
            5 => return outcome(Append::Unopened),
            6 => return outcome(Append::OverBudget),
            4 => {
                return outcome(Append::Closed(
                    StopReason::parse(&String::from_utf8_lossy(&reply))
                        .unwrap_or(StopReason::Requested),
                ));
            }
            _ => return Err(BufferError::Full(shard, self.max_entries)),
        };
        outcome(match previous {
            Previous::Same(answer) => Append::Duplicate(answer),
            Previous::Other => Append::Reused,
        })
    }

    /// Appends a session event unless it is in already (by event id, for the dedupe
    /// window); `true` when it appended it now. It ignores the bound: events are rare and
    /// small, and refusing one would leave PostgreSQL and Kafka telling different stories.
    /// A stop event also marks the session closed (for the dedupe window), so no batch is
    /// buffered after it; a start event marks it open, so batches may follow.
    pub async fn append_event(
        &self,
        event: &locus_wire::record::SessionEvent,
    ) -> Result<bool, BufferError> {
        let session = event.session_id;
        let shard = self.fixed.keys.shard_of(session);
        let reason = match event.kind {
            SessionEventKind::Stopped => event.reason.unwrap_or(StopReason::Requested).as_str(),
            SessionEventKind::Started => "",
        };
        let entry = BufferEntry::SessionEvent(event.clone());
        let mut invocation = self.fixed.append_event.prepare_invoke();
        invocation
            .key(self.fixed.keys.stream(shard))
            .key(self.fixed.keys.event(shard, event.event_id))
            .key(self.fixed.keys.closed(shard, session))
            .key(self.fixed.keys.open(shard, session))
            .arg(ENTRY_FIELD)
            .arg(serde_json::to_string(&entry)?)
            .arg(self.dedupe_window_secs.max(1))
            .arg(reason);
        let appended: i64 = self
            .bounded(invocation.invoke_async(&mut self.conn.clone()))
            .await?;
        Ok(appended == 1)
    }

    /// What was stored under `batch_id` of `session` within the window, compared with
    /// `fingerprint`.
    pub async fn previous_answer(
        &self,
        session: SessionId,
        batch_id: &BatchId,
        fingerprint: &Fingerprint,
    ) -> Result<Option<Previous>, BufferError> {
        let shard = self.fixed.keys.shard_of(session);
        let mut pipe = redis::pipe();
        pipe.cmd("HGET")
            .arg(self.fixed.keys.dedupe(shard, session))
            .arg(&batch_tag(batch_id)[..])
            .cmd("GET")
            .arg(self.fixed.keys.legacy_batch(shard, session, batch_id));
        let (stored, legacy): (Option<Vec<u8>>, Option<String>) = self
            .bounded(pipe.query_async(&mut self.conn.clone()))
            .await?;
        match (stored, legacy) {
            (Some(stored), _) => remembered(&stored, fingerprint, batch_id).map(Some),
            (None, Some(legacy)) => remembered_legacy(&legacy, fingerprint).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// Waits up to `timeout` until Kafka confirmed the batch of `session` stored as stream
    /// entry `entry_id`; `None` for a batch stored earlier whose entry id is not kept (a
    /// retry answered as a duplicate), which waits for every entry of the shard stored up
    /// to now: the batch is among them.
    ///
    /// It polls Redis rather than hearing from the forwarder, because the forwarder of the
    /// session's shard may be another process: a short sleep first (Kafka usually confirms
    /// within milliseconds), growing to 10 ms, so a wait costs about a hundred cheap calls a
    /// second at most.
    pub async fn wait_forwarded(
        &self,
        session: SessionId,
        entry_id: Option<&str>,
        timeout: std::time::Duration,
    ) -> Result<Forwarded, BufferError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let shard = self.fixed.keys.shard_of(session);
        let stream = self.fixed.keys.stream(shard);
        let mut conn = self.conn.clone();
        let (start, end) = match entry_id {
            Some(id) => (id.to_owned(), id.to_owned()),
            None => {
                let mut cmd = redis::cmd("XREVRANGE");
                cmd.arg(&stream).arg("+").arg("-").arg("COUNT").arg(1);
                let last: redis::streams::StreamRangeReply =
                    self.bounded(cmd.query_async(&mut conn)).await?;
                match last.ids.into_iter().next() {
                    Some(last) => ("-".to_owned(), last.id),
                    // Nothing left in the stream: everything stored before was confirmed.
                    None => return Ok(Forwarded::Confirmed),
                }
            }
        };
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            let mut invocation = self.fixed.forwarded.prepare_invoke();
            invocation
                .key(&stream)
                .arg(&start)
                .arg(&end)
                .arg(crate::forwarder::reader::GROUP);
            let done: i64 = self.bounded(invocation.invoke_async(&mut conn)).await?;
            if done == 1 {
                return Ok(Forwarded::Confirmed);
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Ok(Forwarded::NotYet);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(10));
        }
    }

    /// PING, for readiness.
    pub async fn ping(&self) -> Result<(), BufferError> {
        let _: String = self
            .bounded(redis::cmd("PING").query_async(&mut self.conn.clone()))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(seed: f64) -> Fingerprint {
        let fix = locus_wire::decode::FixSlot(Ok(locus_wire::api::FixInput {
            lat: seed,
            lon: 13.4,
            recorded_at: chrono::Utc::now(),
            accuracy: None,
            altitude: None,
            speed: None,
            heading: None,
            battery: None,
        }));
        locus_wire::fingerprint::of_fixes(&[fix])
    }

    fn answer(accepted: u32, rejected: Vec<RejectedFix>) -> BatchResponse {
        BatchResponse {
            batch_id: "b".into(),
            accepted,
            rejected,
            duplicate: false,
        }
    }

    #[test]
    fn a_remembered_batch_is_the_same_batch_only_with_the_same_fingerprint() {
        let id = BatchId::parse("b").unwrap();
        let (a, b) = (fingerprint(1.0), fingerprint(2.0));
        let kept = remember(&a, &answer(2, Vec::new())).unwrap();
        assert_eq!(
            kept.len(),
            SHORT_LEN + 1,
            "no rejections, no bytes for them"
        );
        assert!(matches!(
            remembered(&kept, &a, &id).unwrap(),
            Previous::Same(answer) if answer.accepted == 2 && answer.rejected.is_empty() && answer.batch_id == "b"
        ));
        assert!(matches!(
            remembered(&kept, &b, &id).unwrap(),
            Previous::Other
        ));
    }

    #[test]
    fn rejections_are_remembered_when_there_were_any() {
        let id = BatchId::parse("b").unwrap();
        let a = fingerprint(1.0);
        let rejected = vec![RejectedFix {
            index: 1,
            reason: RejectReason::LatitudeOutOfRange,
            message: "lat: 200 is outside -90..=90".into(),
        }];
        let kept = remember(&a, &answer(40, rejected.clone())).unwrap();
        let Previous::Same(again) = remembered(&kept, &a, &id).unwrap() else {
            panic!("the same batch");
        };
        let summarized = vec![RejectedFix {
            message: RejectReason::LatitudeOutOfRange.summary().to_owned(),
            ..rejected[0].clone()
        }];
        assert_eq!((again.accepted, again.rejected), (40, summarized));
        assert!(remembered(b"short", &a, &id).is_err());
    }

    #[test]
    fn a_rejection_is_remembered_in_a_few_bytes_whatever_its_message() {
        let id = BatchId::parse("b").unwrap();
        let a = fingerprint(1.0);
        let reasons = [
            RejectReason::InvalidFix,
            RejectReason::LatitudeOutOfRange,
            RejectReason::LongitudeOutOfRange,
            RejectReason::TimestampInFuture,
            RejectReason::TimestampTooOld,
            RejectReason::FieldOutOfRange,
        ];
        let rejected: Vec<RejectedFix> = (0..1000u32)
            .map(|index| RejectedFix {
                index,
                reason: reasons[index as usize % reasons.len()],
                message: "x".repeat(200),
            })
            .collect();
        let kept = remember(&a, &answer(0, rejected.clone())).unwrap();
        // The index (at most 4 digits for the largest batch) and one byte for the reason.
        assert!(
            kept.len() <= SHORT_LEN + 2 + 1000 * 5,
            "{} bytes kept for 1000 rejections",
            kept.len()
        );
        let Previous::Same(again) = remembered(&kept, &a, &id).unwrap() else {
            panic!("the same batch");
        };
        let got: Vec<_> = again.rejected.iter().map(|r| (r.index, r.reason)).collect();
        let want: Vec<_> = rejected.iter().map(|r| (r.index, r.reason)).collect();
        assert_eq!(got, want);
        assert!(
            again
                .rejected
                .iter()
                .all(|r| r.message == r.reason.summary()),
            "a retry hears the reason's summary"
        );
    }

    #[test]
    fn rejections_kept_as_json_before_the_compact_form_are_still_read() {
        let id = BatchId::parse("b").unwrap();
        let a = fingerprint(1.0);
        let mut kept = a.short().to_vec();
        kept.extend_from_slice(
            br#"3:[{"index":1,"reason":"latitude_out_of_range","message":"lat 200"}]"#,
        );
        let Previous::Same(again) = remembered(&kept, &a, &id).unwrap() else {
            panic!("the same batch");
        };
        assert_eq!(again.accepted, 3);
        assert_eq!(again.rejected[0].message, "lat 200");
    }

    #[test]
    fn a_legacy_answer_is_the_same_batch_only_with_the_same_fingerprint() {
        const ANSWER: &str = r#"{"batch_id":"b","accepted":2,"rejected":[],"duplicate":false}"#;
        let (a, b) = (fingerprint(1.0), fingerprint(2.0));
        let stored = format!("{LEGACY_FINGERPRINT_TAG}{a}{ANSWER}");
        assert!(matches!(
            remembered_legacy(&stored, &a).unwrap(),
            Previous::Same(answer) if answer.accepted == 2
        ));
        assert!(matches!(
            remembered_legacy(&stored, &b).unwrap(),
            Previous::Other
        ));
        // Written before fingerprints existed: taken as the same batch.
        assert!(matches!(
            remembered_legacy(ANSWER, &b).unwrap(),
            Previous::Same(_)
        ));
    }
}
