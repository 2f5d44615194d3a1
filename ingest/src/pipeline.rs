//! The shared tail of every route that takes fixes: the native batch route, the client
//! formats (Transistorsoft, OsmAnd, OwnTracks, Overland) and the seed system's aliases.
//!
//! Each route decodes its own body into a [`Submission`]; from there every format goes
//! through the same checks in the same order of cost: the tenant's batch maximum and this
//! replica's tier of the fixes budgets (memory), the session (this replica's cache within
//! its bound, else PostgreSQL), validation, then the one Redis round trip that charges the
//! shared fixes budgets and stores the batch with its dedupe state, in one script. Nothing
//! is written before the last step, so every refusal leaves no trace and charges no
//! budget. Each route shapes the answer its clients expect from [`Stored`].

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use chrono::{DateTime, Utc};
use locus_wire::api::{BatchResponse, Fix, FixLimits, RejectReason, RejectedFix};
use locus_wire::buffer::{BufferEntry, BufferedBatch};
use locus_wire::decode::FixSlot;
use locus_wire::{BatchId, SessionId, fingerprint};
use serde_json::{Map, Value};

use crate::admission::shared::{ChargeArgs, Charged};
use crate::admission::{Admitted, FixesCheck, Refusal, SharedPlan};
use crate::auth::Caller;
use crate::buffer::{Append, Appended, BufferError, Forwarded, Previous};
use crate::config::RedisSettings;
use crate::error::{ApiError, ErrorCode};
use crate::events;
use crate::routes::AppState;
use crate::usage::BatchMeter;

/// Header that chooses what the 202 waits for (see [`Durability`]); the 202 carries the
/// level it was given under.
pub const DURABILITY: &str = "locus-durability";

/// Longest client key of a fix (a Transistorsoft `uuid` is 36).
const MAX_KEY_LEN: usize = 128;

/// What a 202 waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The batch is appended to the Redis buffer (the default).
    Buffered,
    /// Kafka confirmed every record of the batch.
    Kafka,
}

impl Durability {
    /// The level as the header spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buffered => "buffered",
            Self::Kafka => "kafka",
        }
    }

    /// The level the request asks for in [`DURABILITY`], else its tenant's default.
    pub fn of_request(
        headers: &HeaderMap,
        caller: &Caller,
        settings: &RedisSettings,
    ) -> Result<Self, ApiError> {
        let Some(value) = headers.get(DURABILITY) else {
            let tenant = caller.tenant.as_str();
            return Ok(
                if settings
                    .durability_kafka_tenants
                    .iter()
                    .any(|t| t == tenant)
                {
                    Self::Kafka
                } else {
                    Self::Buffered
                },
            );
        };
        let value = value.to_str().unwrap_or_default().trim();
        if value.eq_ignore_ascii_case("buffered") {
            Ok(Self::Buffered)
        } else if value.eq_ignore_ascii_case("kafka") {
            Ok(Self::Kafka)
        } else {
            Err(ApiError::invalid(
                ErrorCode::InvalidDurability,
                format!(
                    "Locus-Durability is {value:?}; it takes `buffered` (the 202 once the batch is in the buffer, the default) or `kafka` (the 202 once Kafka confirmed it)"
                ),
            ))
        }
    }
}

/// What a client format knows of a fix beyond the native fields.
#[derive(Debug, Clone, Default)]
pub struct Extra {
    /// The client's own id of the fix (a Transistorsoft `uuid`): the record id is derived
    /// from it, so the same fix sent in another batch is still one record.
    pub key: Option<String>,
    /// Fields kept as the client sent them (activity, odometer, unknown OsmAnd keys).
    pub attributes: Option<Map<String, Value>>,
}

/// A decoded batch of any format, ready for the shared checks.
#[derive(Debug)]
pub struct Submission {
    /// The fixes as decoded, in posted order (a malformed one is rejected alone).
    pub fixes: Vec<FixSlot>,
    /// Per fix, what the format knows beyond the native fields; empty when nothing (the
    /// native batch), else one per fix.
    pub extras: Vec<Extra>,
    /// The batch id the client gave; `None` derives one from the session and the fixes.
    pub batch_id: Option<BatchId>,
    /// What the answer waits for.
    pub durability: Durability,
    /// Size of the body as received (after gzip), for usage.
    pub body_bytes: usize,
}

/// A batch stored (or recognised as stored before): the answer and what its response
/// carries.
#[derive(Debug)]
pub struct Stored {
    /// The per-fix answer; `duplicate` when it was stored before.
    pub answer: BatchResponse,
    /// The level it was given under.
    pub durability: Durability,
    admitted: Admitted,
}

impl Stored {
    /// `response` with the RateLimit headers of the fixes budgets and `Locus-Durability`.
    pub fn respond(&self, mut response: Response) -> Response {
        self.admitted.insert_headers(response.headers_mut());
        response.headers_mut().insert(
            DURABILITY,
            HeaderValue::from_static(self.durability.as_str()),
        );
        response
    }
}

/// Runs the shared checks on `submission` for the session `session` (its id as given; any
/// other value than a UUID of the caller's tenant reads as not found) and stores it.
///
/// A refusal of the budgets is an `Ok(Err(response))`: the 429 or 413 answer as the
/// admission built it.
pub async fn store(
    state: &AppState,
    caller: &Caller,
    session: &str,
    submission: Submission,
    meter: &mut BatchMeter,
) -> Result<Result<Stored, Response>, ApiError> {
    let Submission {
        fixes,
        extras,
        batch_id: given_id,
        durability,
        body_bytes,
    } = submission;
    meter.decoded(fixes.len());
    let fingerprint = fingerprint::of_fixes(&fixes);
    // The tenant's batch maximum and this replica's tier of the fixes budgets (device and
    // tenant): no Redis yet. The shared tier is charged inside the append below, only if
    // the batch is stored, so a refusal of any kind charges neither budget.
    let plan = match state
        .admission
        .check_fixes(&caller.tenant, &caller.subject, fixes.len())
    {
        Ok(FixesCheck::Admitted(admitted)) => Budgets::Local(admitted),
        Ok(FixesCheck::Shared(plan)) => Budgets::Shared(plan),
        Err(refusal) => return refused(state, caller, refusal, fixes.len()),
    };

    // This replica's read of the session within LOCUS_SESSION_CACHE_SECS, else PostgreSQL
    // (crate::cache): a stop made meanwhile is refused by the append's closed mark.
    let (session, source) = crate::cache::batch_session(state, caller, session).await?;
    let session_id = session.id;
    let batch_id =
        given_id.unwrap_or_else(|| fingerprint::derived_batch_id(session_id, &fingerprint));
    let session = match crate::cache::ensure_open(state, session, source).await {
        Ok(s) => s,
        Err((e, expired_now)) => {
            if let Some(expired) = expired_now {
                state.session_events.flush(&[expired.id]).await;
            }
            // A retry of a batch stored before the session stopped must hear that it was
            // stored, not that the session is closed.
            let previous = state
                .buffer
                .previous_answer(session_id, &batch_id, &fingerprint)
                .await;
            match previous {
                Ok(Some(Previous::Same(answer))) => {
                    confirm(state, durability, session_id, None).await?;
                    return Ok(Ok(duplicate(answer, durability, plan.unknown())));
                }
                Ok(Some(Previous::Other)) => return Err(ApiError::BatchIdReused(batch_id)),
                // Nothing stored under this id, or Redis cannot tell: the session's state
                // is the answer.
                Ok(None) | Err(_) => {}
            }
            return Err(e.into());
        }
    };

    let now = Utc::now();
    let (accepted, answer) = validate(&fixes, extras, &batch_id, now, &state.limits);
    meter.validated(&answer);
    if accepted.is_empty() {
        return Err(ApiError::AllRejected(answer));
    }
    let n = accepted.len();
    let entry = BufferEntry::Fixes(BufferedBatch {
        tenant_id: session.tenant_id,
        session_id: session.id,
        device_id: session.device_id,
        batch_id: batch_id.clone(),
        received_at: now,
        fixes: accepted,
    });
    let charge = plan.charge();
    let mut appended = state
        .buffer
        .append_batch(&entry, &batch_id, &fingerprint, &answer, false, charge)
        .await;
    if let Ok(Appended {
        outcome: Append::Unopened,
        ..
    }) = appended
    {
        // The buffer has no mark of the session's start: its publication failed (Redis was
        // away) and the relay has not retried yet, or the session began before the mark
        // existed or sat idle past its lifetime. Publishing the session's outbox rows here
        // puts the start ahead of this batch; the second append then sets the mark, so
        // this costs one PostgreSQL query once per session, not per batch.
        if state.session_events.try_flush(&[session.id]).await.is_err() {
            return Err(ApiError::Unavailable {
                code: ErrorCode::BufferUnavailable,
                message: "the buffer could not take the session's start event, so the batch was not stored: retry the same batch later".into(),
                retry_after_secs: 2,
            });
        }
        appended = state
            .buffer
            .append_batch(&entry, &batch_id, &fingerprint, &answer, true, charge)
            .await;
    }
    let Appended { outcome, budgets } = match appended {
        Ok(appended) => appended,
        Err(e) => {
            match &e {
                BufferError::Full(..) => events::AdmissionRefused {
                    reason: "buffer_full",
                }
                .emit(),
                _ => events::BufferWriteFailed { error: &e }.emit(),
            }
            return Err(plan.unanswered(e));
        }
    };
    match outcome {
        Append::Stored { entry_id } => {
            let admitted = match plan.settle(state, budgets.as_ref(), true) {
                Ok(admitted) => admitted,
                Err(refusal) => return refused(state, caller, refusal, n),
            };
            events::FixesAccepted { count: n }.emit();
            meter.stored(n, body_bytes);
            confirm(state, durability, session.id, Some(&entry_id)).await?;
            Ok(Ok(Stored {
                answer,
                durability,
                admitted,
            }))
        }
        Append::Duplicate(previous) => {
            // Not charged: the budgets as they stand, whatever they say of a new batch.
            let admitted = plan.as_they_stand(state, budgets);
            // The first post may still be waiting for Kafka, or may have been answered
            // 503 unconfirmed: this retry waits for the same confirmation.
            confirm(state, durability, session.id, None).await?;
            Ok(Ok(duplicate(previous, durability, admitted)))
        }
        Append::OverBudget => match plan.settle(state, budgets.as_ref(), false) {
            Err(refusal) => refused(state, caller, refusal, n),
            Ok(_) => Err(ApiError::Internal(
                "the buffer answered over budget with budgets that admit the batch".into(),
            )),
        },
        Append::Reused => Err(ApiError::BatchIdReused(batch_id)),
        // The session stopped (through any replica) after the read above, or before it
        // and this replica's cached row does not know yet: the buffer's closed mark is
        // the truth.
        Append::Closed(reason) => {
            state.cache.forget_session(&caller.tenant, session_id);
            Err(ApiError::SessionStopped(reason))
        }
        // The second append skips the check that answers this.
        Append::Unopened => Err(ApiError::Internal(
            "the buffer refused a batch after its session's start was published".into(),
        )),
    }
}

/// The answer to a refusal of the fixes budgets (a 429 counts as rate-limited usage).
fn refused(
    state: &AppState,
    caller: &Caller,
    refusal: Refusal,
    fixes: usize,
) -> Result<Result<Stored, Response>, ApiError> {
    if refusal.is_rate() {
        state.usage.rate_limited(&caller.tenant, fixes as u64);
    }
    refusal.into_result().map(Err)
}

/// Where a batch's fixes budgets stand before its append.
enum Budgets {
    /// Admitted and charged by this replica alone (`LOCUS_RATE_SHARED=false`).
    Local(Admitted),
    /// Passed this replica's tier; the shared tier is charged with the append.
    Shared(SharedPlan),
}

impl Budgets {
    /// What the append charges.
    fn charge(&self) -> Option<&ChargeArgs> {
        match self {
            Self::Local(_) => None,
            Self::Shared(plan) => Some(&plan.charge),
        }
    }

    /// The answer of the shared budgets as the append gave it.
    fn settle(
        &self,
        state: &AppState,
        budgets: Option<&Charged>,
        stored: bool,
    ) -> Result<Admitted, Refusal> {
        match (self, budgets) {
            (Self::Local(admitted), _) => Ok(admitted.clone()),
            (Self::Shared(plan), Some(charged)) => {
                state.admission.settle_fixes(plan, charged, stored)
            }
            // An append given the charge always answers the budgets.
            (Self::Shared(_), None) => Err(Refusal::Unavailable),
        }
    }

    /// The budgets of a batch that was not charged (a retry answered as a duplicate).
    fn as_they_stand(&self, state: &AppState, budgets: Option<Charged>) -> Admitted {
        let standing = budgets.map(|c| Charged {
            refused_by: None,
            ..c
        });
        self.settle(state, standing.as_ref(), false)
            .unwrap_or_else(|_| self.unknown())
    }

    /// The budgets when no Redis answer told them: the local tier's, else full.
    fn unknown(&self) -> Admitted {
        match self {
            Self::Local(admitted) => admitted.clone(),
            Self::Shared(plan) => plan.unknown(),
        }
    }

    /// The answer to an append that failed: with the shared budgets in the same call, the
    /// message says that they could not answer either.
    fn unanswered(&self, e: BufferError) -> ApiError {
        match (self, &e) {
            (Self::Shared(_), BufferError::Deadline(deadline)) => ApiError::Unavailable {
                code: ErrorCode::BufferUnavailable,
                message: format!(
                    "the buffer and the shared rate budget (Redis) did not answer within {} ms (LOCUS_REDIS_DEADLINE_MS), so the batch may or may not have been stored: retry the same batch (same batch id) after Retry-After seconds; a retry is never stored twice",
                    deadline.as_millis()
                ),
                retry_after_secs: 1,
            },
            (Self::Shared(_), BufferError::Redis(_)) => ApiError::Unavailable {
                code: ErrorCode::BufferUnavailable,
                message: "the buffer and the shared rate budget (Redis) did not confirm the batch, so it may or may not have been stored: retry the same batch (same batch id) later; a retry is never stored twice".into(),
                retry_after_secs: 2,
            },
            _ => e.into(),
        }
    }
}

/// Waits for Kafka's confirmation of the batch when `durability` asks for it. `entry_id`
/// is the batch's stream entry when it was stored now (see [`Buffer::wait_forwarded`]).
///
/// [`Buffer::wait_forwarded`]: crate::buffer::Buffer::wait_forwarded
async fn confirm(
    state: &AppState,
    durability: Durability,
    session: SessionId,
    entry_id: Option<&str>,
) -> Result<(), ApiError> {
    if durability == Durability::Buffered {
        return Ok(());
    }
    let timeout_ms = state.config.redis.durability_kafka_timeout_ms;
    let waited = state
        .buffer
        .wait_forwarded(
            session,
            entry_id,
            std::time::Duration::from_millis(timeout_ms),
        )
        .await;
    match waited {
        Ok(Forwarded::Confirmed) => return Ok(()),
        Ok(Forwarded::NotYet) => {}
        Err(e) => events::BufferWriteFailed { error: &e }.emit(),
    }
    Err(ApiError::Unavailable {
        code: ErrorCode::KafkaUnconfirmed,
        message: format!(
            "the batch is stored in the buffer, but Kafka has not confirmed it within {timeout_ms} ms: retry the same batch (same batch id, same Locus-Durability) later; the retry is not stored again, and its answer waits for the confirmation"
        ),
        retry_after_secs: 1,
    })
}

/// Splits the fixes into the valid ones and the answer that lists the rejected ones.
fn validate(
    fixes: &[FixSlot],
    extras: Vec<Extra>,
    batch_id: &BatchId,
    now: DateTime<Utc>,
    limits: &FixLimits,
) -> (Vec<Fix>, BatchResponse) {
    let mut accepted = Vec::with_capacity(fixes.len());
    let mut rejected = Vec::new();
    let mut extras = extras.into_iter();
    for (index, raw) in fixes.iter().enumerate() {
        let extra = extras.next().unwrap_or_default();
        let index = index as u32;
        let checked = Fix::parse(index, raw, now, limits).and_then(|fix| with_extra(fix, extra));
        match checked {
            Ok(fix) => accepted.push(fix),
            Err(r) => rejected.push(r),
        }
    }
    for r in &rejected {
        events::FixesRejected {
            reason: r.reason.as_str(),
            count: 1,
        }
        .emit();
    }
    let answer = BatchResponse {
        batch_id: batch_id.to_string(),
        accepted: accepted.len() as u32,
        rejected,
        duplicate: false,
    };
    (accepted, answer)
}

/// `fix` with its client key and attributes; a key that could not be a record's name is
/// the fix's rejection.
fn with_extra(mut fix: Fix, extra: Extra) -> Result<Fix, RejectedFix> {
    if let Some(key) = &extra.key
        && (key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(RejectedFix {
            index: fix.index,
            reason: RejectReason::InvalidFix,
            message: format!(
                "the fix's id {} is not 1 to {MAX_KEY_LEN} printable ASCII characters",
                locus_wire::decode::echo(key)
            ),
        });
    }
    fix.key = extra.key;
    fix.attributes = extra.attributes;
    Ok(fix)
}

/// The answer to a batch stored before: what it got then, marked as a duplicate.
fn duplicate(previous: BatchResponse, durability: Durability, admitted: Admitted) -> Stored {
    events::BatchDuplicate.emit();
    Stored {
        answer: BatchResponse {
            duplicate: true,
            ..previous
        },
        durability,
        admitted,
    }
}
