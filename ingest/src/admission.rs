//! Admission: what a tenant and each of its callers may spend, checked before the work.
//!
//! - Fixes per second, per device and per tenant, in GCRA buckets whose cost is a batch's
//!   number of fixes (so bigger batches do not dodge the limit). Two tiers: the local one
//!   ([`local`], this replica's memory) refuses at no cost a caller that is over its budget
//!   on this replica alone; the shared one ([`shared`], charged inside the buffer's append
//!   script, so a batch still costs one Redis round trip) holds the budget across every
//!   replica. Both check the device and the tenant together
//!   and charge neither when either refuses. The local tier is charged only with what the
//!   shared tier admitted, so it never refuses what the shared budget would take.
//! - Requests per second on every `/v1` route, per tenant and per caller ([`limit_requests`],
//!   a route layer): local to each replica (a documented split: N replicas admit up to N
//!   times the request rate; the fixes budget is the one that must hold exactly).
//! - The tenant's own batch maximum, checked with the fixes.
//!
//! Limits come from [`crate::limits::LimitsTable`] (the tenant's row, else the defaults).
//! A refusal is a [`Refusal`]: 429 with Retry-After and the RateLimit headers
//! ([`headers`]), or 413, or 503 when Redis cannot answer within its deadline.

pub mod gcra;
pub mod headers;
pub mod local;
pub mod shared;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use locus_wire::{DeviceId, TenantId};

use crate::config::Config;
use crate::error::{ApiError, ErrorCode};
use crate::limits::{Effective, LimitsTable};
use crate::routes::AppState;
use gcra::Gcra;
use headers::Budget;

/// Whose budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One device (or, for requests, one admin or partner).
    Device,
    /// The whole tenant.
    Tenant,
}

impl Scope {
    /// The label of metrics and the word of messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Tenant => "tenant",
        }
    }
}

/// What is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Location fixes.
    Fixes,
    /// Requests.
    Requests,
}

/// Why admission refused, and how the answer says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over a rate: 429 with Retry-After and the RateLimit headers.
    Rate {
        /// Fixes or requests.
        unit: Unit,
        /// Whose budget.
        scope: Scope,
        /// Who (the tenant, or the device / admin subject).
        who: String,
        /// The budget's rate per second and burst.
        per_sec: u64,
        /// Its burst.
        burst: u64,
        /// Seconds until the same request passes.
        retry_after_secs: u64,
        /// Both budgets as they stand.
        budgets: Vec<Budget>,
    },
    /// More fixes than the tenant's batch maximum: 413.
    TooManyFixes {
        /// Fixes in the batch.
        fixes: u64,
        /// The tenant's maximum.
        max: u64,
    },
    /// More fixes than a burst: 413, waiting won't help.
    OverBurst {
        /// Whose burst.
        scope: Scope,
        /// Fixes in the batch.
        fixes: u64,
        /// The burst.
        burst: u64,
    },
    /// The shared budget could not answer in time: 503 with Retry-After.
    Unavailable,
}

impl Refusal {
    /// Whether the refusal is for rate (429), as usage counts it.
    pub fn is_rate(&self) -> bool {
        matches!(self, Self::Rate { .. })
    }

    /// The answer as a handler returns it: a 429 with its headers is a response; every
    /// other refusal is the [`ApiError`] of its code, as the rest of the handler's errors.
    pub fn into_result(self) -> Result<Response, ApiError> {
        match self {
            Self::Rate { .. } => Ok(self.into_response()),
            other => Err(other.into_error()),
        }
    }

    fn into_error(self) -> ApiError {
        match self {
            Self::TooManyFixes { fixes, max } => ApiError::invalid(
                ErrorCode::TooManyFixes,
                format!(
                    "the batch has {fixes} fixes; this tenant's most per batch (max_fixes_per_batch) is {max}: split it"
                ),
            ),
            Self::OverBurst {
                scope,
                fixes,
                burst,
            } => ApiError::invalid(
                ErrorCode::BatchOverBurst,
                format!(
                    "the batch has {fixes} fixes, more than the {} burst of {burst} allows at once: send smaller batches",
                    scope.as_str()
                ),
            ),
            Self::Unavailable => ApiError::Unavailable {
                code: ErrorCode::BufferUnavailable,
                message: "the shared rate budget (Redis) did not answer in time, so the batch was not stored: retry the same batch later".into(),
                retry_after_secs: 1,
            },
            Self::Rate { .. } => ApiError::Internal("a rate refusal answers with its headers".into()),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Rate {
                unit,
                scope,
                who,
                per_sec,
                burst,
                retry_after_secs,
                budgets,
            } => {
                let message = match (unit, scope) {
                    (Unit::Fixes, Scope::Device) => format!(
                        "device {who} is over its budget of {per_sec} fixes/s (burst {burst}); retry the same batch after {retry_after_secs} s, or send fewer fixes"
                    ),
                    (Unit::Fixes, Scope::Tenant) => format!(
                        "tenant {who} is over its budget of {per_sec} fixes/s (burst {burst}), shared by every replica; retry the same batch after {retry_after_secs} s, or ask a platform admin to raise fixes_per_sec"
                    ),
                    (Unit::Requests, Scope::Device) => format!(
                        "{who} is over its limit of {per_sec} requests/s (burst {burst}); retry after {retry_after_secs} s"
                    ),
                    (Unit::Requests, Scope::Tenant) => format!(
                        "tenant {who} is over its limit of {per_sec} requests/s (burst {burst}); retry after {retry_after_secs} s"
                    ),
                };
                let mut response = ApiError::coded(ErrorCode::RateLimited, message).into_response();
                let headers = response.headers_mut();
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
                headers::insert(headers, &budgets);
                response
            }
            other => other.into_error().into_response(),
        }
    }
}

/// A batch admitted: the budgets left, for the 202's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// The device's and the tenant's fixes budgets after this batch.
    pub budgets: [Budget; 2],
}

impl Admitted {
    /// Adds the RateLimit headers to a response.
    pub fn insert_headers(&self, headers: &mut HeaderMap) {
        headers::insert(headers, &self.budgets);
    }

    /// `response` with the RateLimit headers.
    pub fn with_headers(&self, mut response: Response) -> Response {
        self.insert_headers(response.headers_mut());
        response
    }
}

/// The budgets of a tenant's fixes: (device, tenant).
fn fixes_budgets(limits: &Effective) -> (Gcra, Gcra) {
    (
        Gcra::new(limits.device_fixes_per_sec, limits.device_fixes_burst),
        Gcra::new(limits.fixes_per_sec, limits.fixes_burst),
    )
}

fn budget(name: &'static str, gcra: &Gcra, remaining: u64, reset_us: u64) -> Budget {
    Budget {
        name,
        per_sec: gcra.per_sec(),
        remaining,
        reset_secs: gcra::reset_secs(reset_us),
    }
}

/// The device's and the tenant's fixes budgets as the headers show them: each with its
/// remaining fixes and microseconds until full.
fn fixes_pair(
    (device_budget, tenant_budget): (&Gcra, &Gcra),
    device: (u64, u64),
    tenant: (u64, u64),
) -> [Budget; 2] {
    [
        budget("device-fixes", device_budget, device.0, device.1),
        budget("tenant-fixes", tenant_budget, tenant.0, tenant.1),
    ]
}

/// The 429 of a batch over the fixes budget of `scope`, counted once here for both tiers.
fn fixes_refused(
    scope: Scope,
    (tenant, device): (&TenantId, &DeviceId),
    (device_budget, tenant_budget): (&Gcra, &Gcra),
    wait_us: u64,
    budgets: Vec<Budget>,
) -> Refusal {
    let (who, g) = match scope {
        Scope::Device => (device.to_string(), device_budget),
        Scope::Tenant => (tenant.to_string(), tenant_budget),
    };
    crate::events::AdmissionRefused {
        reason: scope.as_str(),
    }
    .emit();
    Refusal::Rate {
        unit: Unit::Fixes,
        scope,
        who,
        per_sec: g.per_sec(),
        burst: g.burst,
        retry_after_secs: gcra::retry_secs(wait_us),
        budgets,
    }
}

/// What [`Admission::check_fixes`] found.
#[derive(Debug)]
pub enum FixesCheck {
    /// Admitted and charged (the local tier is the only one).
    Admitted(Admitted),
    /// Passed the local tier; the shared budget is charged with the batch's append.
    Shared(SharedPlan),
}

/// A batch that passed the local tier, waiting for the shared budget's answer.
#[derive(Debug)]
pub struct SharedPlan {
    /// The keys and arguments of the shared charge.
    pub charge: shared::ChargeArgs,
    /// The budgets as this replica's tier saw them, for an answer without Redis'.
    local: [Budget; 2],
    device_key: (TenantId, DeviceId),
    cost: u64,
    device_budget: Gcra,
    tenant_budget: Gcra,
}

impl SharedPlan {
    /// The budgets of an answer given without the shared budget's word (a retry answered
    /// from the dedupe state after its session stopped): as this replica's tier sees them.
    pub fn unknown(&self) -> Admitted {
        Admitted {
            budgets: self.local,
        }
    }
}

/// The rate limiters of this replica, and its handle on the shared budget.
pub struct Admission {
    limits: Arc<LimitsTable>,
    fixes: local::Pair<(TenantId, DeviceId), TenantId>,
    requests: local::Pair<(Option<TenantId>, String), TenantId>,
    shared: Option<shared::Shared>,
}

impl Admission {
    /// Limiters for `config`, reading limits from `limits`; the fixes budgets are shared
    /// through `redis` when given (`LOCUS_RATE_SHARED`), else local to this replica. The
    /// shared budget's call waits at most `LOCUS_REDIS_DEADLINE_MS`, like the buffer's.
    pub fn new(
        config: &Config,
        limits: Arc<LimitsTable>,
        redis: Option<redis::aio::ConnectionManager>,
    ) -> Self {
        Self {
            limits,
            fixes: local::Pair::default(),
            requests: local::Pair::default(),
            shared: redis.map(|conn| {
                shared::Shared::new(
                    conn,
                    &config.redis.prefix,
                    Duration::from_millis(config.redis.deadline_ms),
                )
            }),
        }
    }

    /// The limits table this admission reads.
    pub fn limits(&self) -> &Arc<LimitsTable> {
        &self.limits
    }

    /// Admits a batch of `fixes` fixes from `device` of `tenant`: the tenant's batch
    /// maximum, then the local tier, then the shared budget in a Redis call of its own.
    /// The request path folds the shared charge into the buffer's append instead
    /// ([`Self::check_fixes`], [`Self::settle_fixes`]).
    pub async fn admit_fixes(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        fixes: usize,
    ) -> Result<Admitted, Refusal> {
        let plan = match self.check_fixes(tenant, device, fixes)? {
            FixesCheck::Admitted(admitted) => return Ok(admitted),
            FixesCheck::Shared(plan) => plan,
        };
        let Some(shared) = &self.shared else {
            return Err(Refusal::Unavailable);
        };
        let started = Instant::now();
        let charged = shared
            .charge(
                tenant,
                device,
                plan.cost,
                &plan.device_budget,
                &plan.tenant_budget,
            )
            .await;
        crate::events::SharedBudgetCall {
            duration: started.elapsed(),
        }
        .emit();
        match charged {
            Ok(c) => self.settle_fixes(&plan, &c, true),
            Err(e) => {
                crate::events::SharedBudgetFailed { error: &e }.emit();
                Err(Refusal::Unavailable)
            }
        }
    }

    /// The checks of a batch of `fixes` fixes that need no Redis: the tenant's batch
    /// maximum, the bursts, and the local tier (which charges it now when it is the only
    /// tier). With the shared tier, the answer is what the shared charge needs.
    pub fn check_fixes(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        fixes: usize,
    ) -> Result<FixesCheck, Refusal> {
        let limits = self.limits.of(Some(tenant));
        let cost = fixes as u64;
        if cost > limits.max_fixes_per_batch {
            return Err(Refusal::TooManyFixes {
                fixes: cost,
                max: limits.max_fixes_per_batch,
            });
        }
        let (device_budget, tenant_budget) = fixes_budgets(&limits);
        for (scope, g) in [
            (Scope::Device, &device_budget),
            (Scope::Tenant, &tenant_budget),
        ] {
            if g.over_burst(cost) {
                return Err(Refusal::OverBurst {
                    scope,
                    fixes: cost,
                    burst: g.burst,
                });
            }
        }
        let device_key = (tenant.clone(), device.clone());
        let own = (&device_key, &device_budget);
        let whole = (tenant, &tenant_budget);
        let now = self.fixes.now();
        let Some(shared) = &self.shared else {
            let look = self.fixes.admit(own, whole, now, cost);
            return self
                .fixes_answer(tenant, device, &limits, &look)
                .map(FixesCheck::Admitted);
        };
        // The cheap tier: over on this replica alone is over everywhere.
        let look = self.fixes.look(own, whole, now, cost);
        if !look.allowed() {
            return Err(self
                .fixes_answer(tenant, device, &limits, &look)
                .expect_err("a look not allowed is a refusal"));
        }
        let local = fixes_pair(
            (&device_budget, &tenant_budget),
            (look.own.remaining_before, look.own.reset_us),
            (look.tenant.remaining_before, look.tenant.reset_us),
        );
        Ok(FixesCheck::Shared(SharedPlan {
            charge: shared.charge_args(tenant, device, cost, &device_budget, &tenant_budget),
            local,
            device_key,
            cost,
            device_budget,
            tenant_budget,
        }))
    }

    /// The answer of the shared budget for `plan`: `charged` as a script built on
    /// [`shared::LOOK`] answered it, `stored` when the batch was stored (and so both
    /// budgets were charged; the local tier is charged now with the same). A batch not
    /// stored (a retry answered as a duplicate) was charged nothing and carries the
    /// budgets as they stand.
    pub fn settle_fixes(
        &self,
        plan: &SharedPlan,
        charged: &shared::Charged,
        stored: bool,
    ) -> Result<Admitted, Refusal> {
        let (tenant, device) = (&plan.device_key.0, &plan.device_key.1);
        let gcras = (&plan.device_budget, &plan.tenant_budget);
        let budgets = fixes_pair(gcras, charged.device, charged.tenant);
        match charged.refused_by {
            None => {
                if stored {
                    self.fixes.charge(
                        (&plan.device_key, &plan.device_budget),
                        (tenant, &plan.tenant_budget),
                        self.fixes.now(),
                        plan.cost,
                    );
                }
                Ok(Admitted { budgets })
            }
            Some(scope) => Err(fixes_refused(
                scope,
                (tenant, device),
                gcras,
                charged.wait_us,
                budgets.to_vec(),
            )),
        }
    }

    /// The answer of the local tier's `look`: admitted (already charged) or refused.
    fn fixes_answer(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        limits: &Effective,
        look: &local::PairLook,
    ) -> Result<Admitted, Refusal> {
        let (device_budget, tenant_budget) = fixes_budgets(limits);
        let gcras = (&device_budget, &tenant_budget);
        let (own, whole) = (&look.own, &look.tenant);
        if look.allowed() {
            return Ok(Admitted {
                budgets: fixes_pair(
                    gcras,
                    (own.remaining_after, own.reset_us),
                    (whole.remaining_after, whole.reset_us),
                ),
            });
        }
        let budgets = fixes_pair(
            gcras,
            (own.remaining_before, own.reset_us),
            (whole.remaining_before, whole.reset_us),
        );
        let (scope, wait_us) = if !own.allowed && (whole.allowed || own.wait_us >= whole.wait_us) {
            (Scope::Device, own.wait_us)
        } else {
            (Scope::Tenant, whole.wait_us)
        };
        Err(fixes_refused(
            scope,
            (tenant, device),
            gcras,
            wait_us,
            budgets.to_vec(),
        ))
    }

    /// Admits one request of `subject` (of `tenant`, if it has one), on this replica.
    pub fn admit_request(&self, tenant: Option<&TenantId>, subject: &str) -> Result<(), Refusal> {
        let limits = self.limits.of(tenant);
        let own_budget = Gcra::new(limits.device_requests_per_sec, limits.device_requests_burst);
        let tenant_budget = Gcra::new(limits.requests_per_sec, limits.requests_burst);
        let key = (tenant.cloned(), subject.to_owned());
        let now = self.requests.now();
        let look = match tenant {
            Some(t) => self
                .requests
                .admit((&key, &own_budget), (t, &tenant_budget), now, 1),
            // Platform admins and partners have no tenant: only their own budget.
            None => {
                let own = own_budget.look(self.requests.own.tat(&key), now, 1);
                if own.allowed {
                    self.requests.own.charge(&key, &own_budget, now, 1);
                }
                local::PairLook {
                    own,
                    tenant: tenant_budget.look(0, now, 1),
                }
            }
        };
        if look.allowed() {
            return Ok(());
        }
        let scope = if look.own.allowed {
            Scope::Tenant
        } else {
            Scope::Device
        };
        let (who, g, wait) = match scope {
            Scope::Device => (subject.to_owned(), own_budget, look.own.wait_us),
            Scope::Tenant => (
                tenant.map(TenantId::to_string).unwrap_or_default(),
                tenant_budget,
                look.tenant.wait_us,
            ),
        };
        crate::events::RequestRefused {
            scope: scope.as_str(),
        }
        .emit();
        let mut budgets = vec![budget(
            "device-requests",
            &own_budget,
            look.own.remaining_before,
            look.own.reset_us,
        )];
        if tenant.is_some() {
            budgets.push(budget(
                "tenant-requests",
                &tenant_budget,
                look.tenant.remaining_before,
                look.tenant.reset_us,
            ));
        }
        Err(Refusal::Rate {
            unit: Unit::Requests,
            scope,
            who,
            per_sec: g.per_sec(),
            burst: g.burst,
            retry_after_secs: gcra::retry_secs(wait),
            budgets,
        })
    }

    /// Forgets local buckets that are full again, bounding memory (the sweeper calls it).
    pub fn forget_idle(&self) {
        self.fixes.forget_idle();
        self.requests.forget_idle();
    }
}

/// The route layer of every `/v1` route: a request with a valid bearer token is charged
/// to its caller's and its tenant's request budgets (and refused 429 when over). The token
/// is verified through the authenticator's cache (a hit costs well under a microsecond);
/// a request without a valid token goes on to its handler, which answers 401, and the
/// pre-auth limit per client address covers those.
pub async fn limit_requests(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim);
    if let Some(token) = token
        && let Ok(identity) = state.auth.verify(token).await
        && let Err(refusal) = state
            .admission
            .admit_request(identity.tenant.as_ref(), &identity.subject)
    {
        return refusal.into_response();
    }
    next.run(request).await
}
