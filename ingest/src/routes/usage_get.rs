//! GET /v1/usage: a tenant's usage per minute and its totals over a range, for billing:
//! fixes accepted, rejected by reason, rate limited, and bytes, as every replica added them
//! to `usage_minutes` (each flush interval, `LOCUS_USAGE_FLUSH_SECS`; the current interval
//! is not in it yet).

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use locus_session::usage::UsageMinute;
use locus_wire::TenantId;
use locus_wire::api::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Identity, Role};
use crate::error::{ApiError, ErrorCode};
use crate::routes::AppState;

/// Query parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Start of the range (RFC 3339), rounded down to its minute; inclusive. Default: 24
    /// hours before `to`.
    #[serde(default)]
    #[param(value_type = Option<String>, format = DateTime)]
    from: Option<DateTime<Utc>>,
    /// End of the range (RFC 3339); exclusive. Default: now. At most 31 days after `from`.
    #[serde(default)]
    #[param(value_type = Option<String>, format = DateTime)]
    to: Option<DateTime<Utc>>,
    /// Platform admins: the tenant (required). Tenant admins read their own tenant, and
    /// naming another reads as no usage.
    #[serde(default)]
    tenant: Option<String>,
}

/// What a tenant used: in one minute, or in total over the range.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct UsageCounts {
    /// Fixes stored (a retried batch is not counted again).
    pub fixes_accepted: i64,
    /// Fixes refused, by reason: a fix's validation reason (`latitude_out_of_range`...)
    /// or the error code of a whole batch refused after its fixes were counted
    /// (`session_stopped`, `buffer_full`...).
    pub fixes_rejected: BTreeMap<String, i64>,
    /// Fixes refused for rate (429).
    pub fixes_rate_limited: i64,
    /// Request body bytes (as sent, before decompression) of the accepted batches.
    pub bytes: i64,
}

impl UsageCounts {
    fn add(&mut self, m: &UsageMinute) {
        self.fixes_accepted += m.fixes_accepted;
        for (reason, n) in &m.fixes_rejected {
            *self.fixes_rejected.entry(reason.clone()).or_default() += n;
        }
        self.fixes_rate_limited += m.fixes_rate_limited;
        self.bytes += m.bytes;
    }
}

/// One minute of a tenant's usage.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageMinuteView {
    /// The start of the minute (UTC).
    pub minute: DateTime<Utc>,
    /// What was used in it.
    #[serde(flatten)]
    pub counts: UsageCounts,
}

/// Answer of `GET /v1/usage`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    /// Whose usage.
    pub tenant_id: String,
    /// The range's start (rounded down to its minute), inclusive.
    pub from: DateTime<Utc>,
    /// The range's end, exclusive.
    pub to: DateTime<Utc>,
    /// The minutes with any usage, oldest first (minutes without are left out).
    pub minutes: Vec<UsageMinuteView>,
    /// The sums over `minutes`.
    pub totals: UsageCounts,
}

/// A tenant's usage per minute and in total.
#[utoipa::path(
    get,
    path = "/v1/usage",
    operation_id = "get_usage",
    tag = "usage",
    params(UsageQuery),
    responses(
        (status = 200, description = "The tenant's usage per minute and the totals.", body = UsageReport),
        (status = 400, description = "`invalid_query` (a malformed time, a range not forward or over 31 days, or a platform admin without `tenant`) or `invalid_id` (`tenant`).", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only admins read usage.", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["tenant_admin", "platform_admin"]))
)]
#[tracing::instrument(skip_all, fields(tenant))]
pub async fn handler(
    State(state): State<AppState>,
    identity: Identity,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::TenantAdmin, Role::PlatformAdmin])?;
    let Query(query) = query.map_err(|e| {
        ApiError::invalid(
            ErrorCode::InvalidQuery,
            format!(
                "{e}; `from` and `to` are RFC 3339 times (2026-12-04T10:00:00Z), `tenant` a tenant id"
            ),
        )
    })?;
    let to = query.to.unwrap_or_else(Utc::now);
    let from = query.from.unwrap_or(to - TimeDelta::hours(24));
    let from = from.duration_trunc(TimeDelta::minutes(1)).unwrap_or(from);
    let wanted = query
        .tenant
        .map(|t| {
            TenantId::parse(t)
                .map_err(|e| ApiError::coded(ErrorCode::InvalidId, format!("`tenant`: {e}")))
        })
        .transpose()?;
    let (tenant, visible) = match identity.role {
        Role::PlatformAdmin => (
            wanted.ok_or_else(|| {
                ApiError::invalid(
                    ErrorCode::InvalidQuery,
                    "a platform admin reads one tenant's usage at a time: add `tenant=<tenant id>` to the query",
                )
            })?,
            true,
        ),
        _ => {
            let own = identity.tenant()?.clone();
            // Another tenant's usage is not there for this caller: asking for it reads as
            // none, as row-level security would make it anyway.
            let visible = wanted.as_ref().is_none_or(|w| *w == own);
            (own, visible)
        }
    };
    tracing::Span::current().record("tenant", tenant.as_str());
    let rows = state.store.usage(&tenant, from, to).await?;
    let rows = if visible { rows } else { Vec::new() };
    let mut totals = UsageCounts::default();
    let minutes = rows
        .iter()
        .map(|m| {
            totals.add(m);
            let mut counts = UsageCounts::default();
            counts.add(m);
            UsageMinuteView {
                minute: m.minute,
                counts,
            }
        })
        .collect();
    Ok(axum::Json(UsageReport {
        tenant_id: tenant.to_string(),
        from,
        to,
        minutes,
        totals,
    }))
}
