//! What the client-app routes (`/v1/clients/...`: Transistorsoft SDKs and Traccar Client,
//! OsmAnd, OwnTracks, Overland) share: device authentication without a token exchange
//! ([`auth`]), the implicit session of each device ([`sessions`]), and the step from a
//! decoded [`ClientBatch`] to the shared pipeline ([`store`]), so every format gets the
//! native validation, dedupe, rate limits, usage and buffer. docs/clients.md describes
//! the apps' settings and answers.

pub mod auth;
pub mod sessions;

use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::Response;
use locus_wire::BatchId;
use locus_wire::clients::{ClientBatch, ClientError};
use locus_wire::decode::{BatchBounds, FixSlot};

use crate::auth::Caller;
use crate::config::{ClientSettings, RequestLimits};
use crate::error::{ApiError, ErrorCode};
use crate::pipeline::{self, Durability, Extra, Stored, Submission};
use crate::routes::AppState;
use crate::usage::BatchMeter;

/// The per-replica state of the client routes.
#[derive(Debug)]
pub struct Clients {
    /// Device credentials exchanged recently.
    pub credentials: auth::CredentialCache,
    /// Device -> implicit session.
    pub sessions: sessions::SessionCache,
}

impl Clients {
    /// Empty caches bounded as `settings` says.
    pub fn new(settings: &ClientSettings) -> Self {
        Self {
            credentials: auth::CredentialCache::new(
                Duration::from_secs(settings.credential_cache_secs),
                settings.cache_entries,
            ),
            sessions: sessions::SessionCache::new(
                Duration::from_secs(settings.session_idle_secs.max(1)),
                settings.cache_entries,
            ),
        }
    }
}

/// The bounds of a client body: the native ones.
pub fn bounds(limits: &RequestLimits) -> BatchBounds {
    BatchBounds {
        max_fixes: limits.max_fixes_per_batch,
        max_depth: limits.max_json_depth,
        max_string_bytes: limits.max_string_bytes,
    }
}

/// The body as text, whatever its content type (the apps do not all send one), gzip when
/// `Content-Encoding` says so, within the native size bound. Checked as UTF-8 once here;
/// its length is the body's size for usage.
pub async fn body_text(
    headers: &HeaderMap,
    body: axum::body::Body,
    limits: &RequestLimits,
) -> Result<String, ApiError> {
    let bytes = crate::body::any_bytes(headers, body, limits.max_body_bytes).await?;
    String::from_utf8(Vec::from(bytes)).map_err(|e| {
        ApiError::invalid(
            ErrorCode::MalformedJson,
            format!("the body is not UTF-8 text: {}", e.utf8_error()),
        )
    })
}

/// The answer to a body a decoder refused as a whole.
pub fn refused(e: ClientError) -> ApiError {
    let code = match &e {
        ClientError::Json(_) => ErrorCode::MalformedJson,
        ClientError::Shape(_) => ErrorCode::InvalidBody,
        ClientError::TooManyFixes { .. } => ErrorCode::TooManyFixes,
        ClientError::TooDeep { .. } => ErrorCode::JsonTooDeep,
        ClientError::StringTooLong { .. } => ErrorCode::StringTooLong,
        ClientError::TooManyValues { .. } => ErrorCode::BodyTooLarge,
        ClientError::TooManyParameters { .. } => ErrorCode::InvalidQuery,
        ClientError::NoDevice => ErrorCode::MissingDevice,
        ClientError::NoSession => ErrorCode::InvalidBody,
    };
    ApiError::invalid(code, e.to_string())
}

/// Stores the fixes of `batch` for `caller`'s device in its implicit session, through the
/// shared pipeline. A session found stopped (the buffer's closed mark, or its row) is
/// resolved once more and the batch stored in the session that follows it.
pub async fn store(
    state: &AppState,
    caller: &Caller,
    batch: ClientBatch,
    batch_id: Option<BatchId>,
    headers: &HeaderMap,
    body_bytes: usize,
    meter: &mut BatchMeter,
) -> Result<Result<Stored, Response>, ApiError> {
    let durability = Durability::of_request(headers, caller, &state.config.redis)?;
    let mut fixes = Vec::with_capacity(batch.fixes.len());
    let mut extras = Vec::with_capacity(batch.fixes.len());
    for fix in batch.fixes {
        fixes.push(FixSlot(fix.input));
        extras.push(Extra {
            key: fix.key,
            attributes: fix.attributes,
        });
    }
    let submission = Submission {
        fixes,
        extras,
        batch_id,
        durability,
        body_bytes,
    };
    let session = sessions::session_for(state, caller).await?;
    // Kept for the one retry in the next session: a batch of a client app is small (one
    // fix, mostly), so the copy costs less than a second decode would.
    let again = Submission {
        fixes: submission.fixes.clone(),
        extras: submission.extras.clone(),
        batch_id: submission.batch_id.clone(),
        durability,
        body_bytes,
    };
    match pipeline::store(state, caller, &session.to_string(), submission, meter).await {
        Err(e @ (ApiError::SessionStopped(_) | ApiError::SessionNotFound)) => {
            match sessions::after_stop(state, caller, session).await? {
                Some(next) => pipeline::store(state, caller, &next.to_string(), again, meter).await,
                None => Err(e),
            }
        }
        other => other,
    }
}
