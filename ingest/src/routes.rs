//! The whole HTTP surface of ingest in one place.

mod health;
mod locations_post;
mod sessions_get;
mod sessions_list;
mod sessions_start;
mod sessions_stop;

use std::time::Instant;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

use locus_session::SessionStore;
use locus_wire::api::FixLimits;
use rdkafka::producer::FutureProducer;

use crate::admission::Admission;
use crate::auth::Authenticator;
use crate::buffer::Buffer;
use crate::config::{Config, Role};
use crate::error::ApiError;
use crate::events;
use crate::session_events::SessionEventPublisher;

/// State shared by the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    /// The service configuration.
    pub config: Arc<Config>,
    /// Token verification.
    pub auth: Authenticator,
    /// Session metadata.
    pub store: SessionStore,
    /// The Redis buffer.
    pub buffer: Buffer,
    /// Where session started and stopped events go.
    pub session_events: SessionEventPublisher,
    /// Rate limits.
    pub admission: Arc<Admission>,
    /// Timestamp bounds of fixes.
    pub limits: FixLimits,
    /// Used by /readyz to check Kafka.
    pub producer: FutureProducer,
    /// Used by /readyz to check that the forwarder makes progress (`None`: no forwarder
    /// role in this process).
    pub forwarder: Option<crate::forwarder::health::Health>,
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; see README.md or docs/devices.md for the API".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Every route and layer of the ingest service. The device API is mounted only when the
/// process runs the API role; every role answers health, readiness and metrics.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route(
            "/v1/sessions",
            post(sessions_start::handler).get(sessions_list::handler),
        )
        .route("/v1/sessions/{id}", get(sessions_get::handler))
        .route("/v1/sessions/{id}/stop", post(sessions_stop::handler))
        .route("/v1/sessions/{id}/locations", post(locations_post::handler));
    let base = if state.config.runs(Role::Api) {
        api
    } else {
        Router::new()
    };
    // /healthz, /readyz and /metrics: the router every service shares, with ingest's checks.
    base.merge(locus_service::health::router(health::readiness(&state)))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        // Layers run outside-in from the bottom: trace the request, then time it. Body
        // size is enforced by the handlers after decompression, so axum's default
        // limit is off.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn(record_metrics))
        .layer(TraceLayer::new_for_http())
}

/// Counts and times every request by route template (bounded label set).
async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    events::HttpRequest {
        route: &route,
        status: response.status().as_u16(),
        duration: started.elapsed(),
    }
    .emit();
    response
}
