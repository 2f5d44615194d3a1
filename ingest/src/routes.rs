//! The whole HTTP surface of ingest in one place, and its OpenAPI document.
//!
//! Every `/v1` route is registered through utoipa-axum's [`OpenApiRouter`] with
//! `routes!(...)`, which adds the handler to the axum router and its `#[utoipa::path]`
//! operation to the document in one step: a route cannot be served without being
//! documented, nor documented without being served. The document ([`openapi`]) is served at
//! `/openapi.json`, Swagger UI (vendored into the binary, no CDN) at `/docs`, and
//! [`route_roles`] reads from it the roles each route takes: it is THE route list that
//! tests and docs use.
//!
//! # Adding a route
//!
//! 1. A handler file `routes/<resource>_<action>.rs` with `pub async fn handler`, annotated
//!    with `#[utoipa::path(<method>, path = "/v1/...", operation_id = "<unique>",
//!    tag = "...", request_body = ..., params(...), responses(...),
//!    security(("bearer" = ["<role>", ...])))]`: every status the handler can answer, error
//!    statuses with `body = ErrorBody`, and the roles that may call it as the scopes of
//!    the `bearer` requirement (names from [`ROLE_NAMES`]; a route without a token takes
//!    `security(())`). Bodies are `locus_wire::api` types deriving `ToSchema` (feature
//!    `openapi`).
//! 2. A `mod` line below and one `.routes(routes!(<module>::handler))` line in [`api`]. Handlers
//!    of one path go in the same `routes!` (e.g. `routes!(a_post::handler, a_list::handler)`):
//!    `routes!` registers its method router under each of its paths, so two paths in one
//!    `routes!` would serve each other's methods.
//!
//! The unit test at the bottom checks that every `/v1` operation declares known roles.

mod audit_list;
mod auth_token;
mod clients_osmand;
mod clients_overland;
mod clients_owntracks;
mod clients_transistor;
mod devices_credentials_create;
mod devices_get;
mod devices_list;
mod devices_position;
mod devices_register;
mod devices_revoke;
mod geofences_delete;
mod geofences_get;
mod geofences_list;
mod geofences_put;
mod geofences_shared;
mod grants_delete;
mod grants_list;
mod grants_put;
mod health;
mod jwks;
mod limits_get;
mod limits_put;
mod locations_post;
mod partners_create;
mod partners_kafka;
mod partners_list;
mod partners_shared;
mod registry;
mod seed_update;
mod sessions_get;
mod sessions_list;
mod sessions_start;
mod sessions_stop;
mod sessions_track;
mod sink_delete;
mod sink_get;
mod sink_health;
mod sink_put;
mod sink_rotate;
mod tenants_create;
mod tenants_get;
mod tenants_list;
mod usage_get;

use std::time::Instant;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

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

/// What a session start and stop check first, for the implicit sessions of client apps.
pub(crate) use sessions_start::{check_active_cap, check_buffer_room};

/// State shared by the HTTP handlers: one pointer, so that the clones axum and the
/// middleware make of it per request cost one reference count, not one per field (about
/// 6 % of a one-point request's CPU before).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state of one process's handlers.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] points at.
pub struct Shared {
    /// The service configuration.
    pub config: Arc<Config>,
    /// Token verification.
    pub auth: Authenticator,
    /// Signs the device tokens `POST /v1/auth/token` hands out.
    pub signer: Arc<locus_identity::TokenSigner>,
    /// The public keys of device tokens, the signer's and the previous ones.
    pub jwks: Arc<serde_json::Value>,
    /// Session metadata.
    pub store: SessionStore,
    /// The Redis buffer.
    pub buffer: Buffer,
    /// Where session started and stopped events go.
    pub session_events: SessionEventPublisher,
    /// Rate limits.
    pub admission: Arc<Admission>,
    /// Usage per tenant: accepted, rejected and rate-limited fixes, bytes (for billing).
    pub usage: Arc<crate::usage::Usage>,
    /// Session rows and credential exchanges answered while PostgreSQL is away.
    pub cache: Arc<crate::cache::LookupCache>,
    /// Credentials and implicit sessions of the client-app routes.
    pub clients: Arc<crate::clients::Clients>,
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

/// The name of the security scheme of the document: a bearer JWT. Each operation's
/// requirement on it lists, as scopes, the roles that may call it.
pub const BEARER: &str = "bearer";

/// The role names an operation's scopes may take: the roles a Locus token can carry.
pub const ROLE_NAMES: [&str; 4] = ["platform_admin", "tenant_admin", "device", "partner"];

/// The operations that take no token (`security(())`, so no roles): every other `/v1`
/// operation lists the roles that may call it. A device has no token before this one.
pub const PUBLIC_OPERATIONS: [(&str, &str); 1] = [("POST", "/v1/auth/token")];

/// The base of the document: what is not said by an operation.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Locus ingest API",
        description = "Devices start tracking sessions and post batches of location fixes; administrators and partners read sessions. Every error answer is `{error, message}`: a stable code and what was wrong and how to fix it. The roles an operation takes are the scopes of its `bearer` security requirement. docs/devices.md describes the API in prose."
    ),
    modifiers(&BearerScheme),
    tags((name = "sessions", description = "Tracking sessions and their location fixes."))
)]
struct ApiDoc;

/// Adds the `bearer` security scheme the operations refer to.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "`Authorization: Bearer <JWT>`. The token's `role` claim must be one of the scopes the operation lists (platform_admin, tenant_admin, device, partner).",
                    ))
                    .build(),
            ),
        );
    }
}

/// The `/v1` API: each line registers a route in the router and in the document at once
/// (see "Adding a route" at the top of this file). Health, readiness and metrics are left
/// out of the document on purpose: they are for the platform (balancers, Prometheus), not
/// for API clients, and the shared router in `locus_service` serves them.
fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(sessions_start::handler, sessions_list::handler))
        .routes(routes!(sessions_get::handler))
        .routes(routes!(sessions_stop::handler))
        .routes(routes!(sessions_track::handler))
        .routes(routes!(locations_post::handler))
        .routes(routes!(partners_create::handler, partners_list::handler))
        .routes(routes!(partners_kafka::handler))
        .routes(routes!(grants_list::handler))
        .routes(routes!(grants_put::handler, grants_delete::handler))
        .routes(routes!(
            sink_put::handler,
            sink_get::handler,
            sink_delete::handler
        ))
        .routes(routes!(sink_rotate::handler))
        .routes(routes!(sink_health::handler))
        .routes(routes!(audit_list::handler))
        .routes(routes!(tenants_create::handler, tenants_list::handler))
        .routes(routes!(tenants_get::handler))
        .routes(routes!(limits_get::handler, limits_put::handler))
        .routes(routes!(devices_register::handler, devices_list::handler))
        .routes(routes!(devices_get::handler))
        .routes(routes!(devices_position::handler))
        .routes(routes!(devices_credentials_create::handler))
        .routes(routes!(devices_revoke::handler))
        .routes(routes!(auth_token::handler))
        .routes(routes!(usage_get::handler))
        .routes(routes!(geofences_list::handler))
        .routes(routes!(
            geofences_put::handler,
            geofences_get::handler,
            geofences_delete::handler
        ))
        // The client apps' formats (docs/clients.md): device credential auth, implicit sessions.
        .routes(routes!(clients_transistor::handler))
        .routes(routes!(
            clients_osmand::get_handler,
            clients_osmand::post_handler
        ))
        .routes(routes!(clients_owntracks::handler))
        .routes(routes!(clients_overland::handler))
        // The seed system's routes, aliases of the native ones (same handlers, same auth and
        // answers), out of the document: it lists each operation once, under /v1.
        .route(
            "/location/session/start",
            axum::routing::post(sessions_start::handler),
        )
        .route(
            "/location/update",
            axum::routing::post(seed_update::handler),
        )
        .route(
            "/location/session/{id}",
            axum::routing::get(sessions_get::handler),
        )
        .route(
            "/location/session/{id}/stop",
            axum::routing::post(sessions_stop::handler),
        )
        // Outside /v1 and outside the document: the key set is a standard location that
        // token verifiers read, not an API operation.
        .route("/.well-known/jwks.json", axum::routing::get(jwks::handler))
}

/// The OpenAPI 3.1 document of the `/v1` API, as served at `/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().into_openapi()
}

/// Every operation of the document: its method, its path template (`/v1/sessions/{id}`, as
/// axum and the document spell it) and the roles its `bearer` requirement lists. An
/// operation without a `bearer` requirement (no token needed) has no roles.
pub fn route_roles() -> Vec<(Method, String, Vec<String>)> {
    let doc = serde_json::to_value(openapi()).expect("the OpenAPI document serializes");
    let mut out = Vec::new();
    let Some(paths) = doc["paths"].as_object() else {
        return out;
    };
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, operation) in item {
            // A path item also holds `parameters`, `summary` and such beside the methods.
            let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else {
                continue;
            };
            if !operation.is_object() {
                continue;
            }
            let roles = operation["security"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|requirement| requirement[BEARER].as_array())
                .flatten()
                .filter_map(|role| role.as_str().map(str::to_owned))
                .collect();
            out.push((method, path.clone(), roles));
        }
    }
    out
}

/// Every route and layer of the ingest service. The device API, its document and Swagger
/// UI are mounted only when the process runs the API role; every role answers health,
/// readiness and metrics.
pub fn router(state: AppState) -> Router {
    let state_config = state.config.clone();
    let base = if state.config.runs(Role::Api) {
        let (api, doc) = api().split_for_parts();
        // Every matched /v1 route: the caller's request rate (a valid token only; see
        // admission::limit_requests).
        let api = api.route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::admission::limit_requests,
        ));
        // SwaggerUi serves the document at /openapi.json and the UI's page and assets under
        // /docs/ (vendored into the binary, so the page needs no external URL).
        api.merge(SwaggerUi::new("/docs").url("/openapi.json", doc))
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
        // Before any token is read (the route layers above run inside it): shed over the
        // in-flight cap, the per-address rate, the body and request timeouts
        // (crate::server). Inside the metrics layer, so its answers are counted by route.
        .layer(middleware::from_fn_with_state(
            Arc::new(crate::server::Protection::new(&state_config.server)),
            crate::server::protect,
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_v1_operation_declares_roles_the_design_knows() {
        let routes = route_roles();
        assert!(!routes.is_empty(), "the document lists no operation");
        for (method, path, roles) in &routes {
            assert!(path.starts_with("/v1/"), "{method} {path} is outside /v1");
            if PUBLIC_OPERATIONS.contains(&(method.as_str(), path.as_str())) {
                assert!(
                    roles.is_empty(),
                    "{method} {path} takes no token: {roles:?}"
                );
                continue;
            }
            assert!(!roles.is_empty(), "{method} {path} declares no roles");
            for role in roles {
                assert!(
                    ROLE_NAMES.contains(&role.as_str()),
                    "{method} {path} declares unknown role {role:?}"
                );
            }
        }
    }

    #[test]
    fn the_session_routes_take_the_roles_of_the_design() {
        let mut routes = route_roles();
        routes.sort_by(|a, b| (&a.1, a.0.as_str()).cmp(&(&b.1, b.0.as_str())));
        let want = [
            (
                Method::GET,
                "/v1/sessions",
                vec!["device", "tenant_admin", "partner"],
            ),
            (Method::POST, "/v1/sessions", vec!["device"]),
            (
                Method::GET,
                "/v1/sessions/{id}",
                vec!["device", "tenant_admin", "partner"],
            ),
            (Method::POST, "/v1/sessions/{id}/locations", vec!["device"]),
            (
                Method::POST,
                "/v1/sessions/{id}/stop",
                vec!["device", "tenant_admin"],
            ),
        ];
        for (method, path, roles) in want {
            let found = routes
                .iter()
                .find(|(m, p, _)| *m == method && p == path)
                .unwrap_or_else(|| panic!("{method} {path} is not in the document"));
            assert_eq!(found.2, roles, "{method} {path}");
        }
    }

    #[test]
    fn the_registry_routes_take_the_roles_of_the_design() {
        let routes = route_roles();
        let want = [
            (Method::POST, "/v1/auth/token", vec![]),
            (Method::POST, "/v1/tenants", vec!["platform_admin"]),
            (Method::GET, "/v1/tenants", vec!["platform_admin"]),
            (
                Method::GET,
                "/v1/tenants/{tenant_id}",
                vec!["platform_admin"],
            ),
            (Method::POST, "/v1/devices", vec!["tenant_admin"]),
            (Method::GET, "/v1/devices", vec!["tenant_admin"]),
            (Method::GET, "/v1/devices/{device_id}", vec!["tenant_admin"]),
            (
                Method::POST,
                "/v1/devices/{device_id}/credentials",
                vec!["tenant_admin"],
            ),
            (
                Method::POST,
                "/v1/devices/{device_id}/revoke",
                vec!["tenant_admin"],
            ),
        ];
        for (method, path, roles) in want {
            let found = routes
                .iter()
                .find(|(m, p, _)| *m == method && p == path)
                .unwrap_or_else(|| panic!("{method} {path} is not in the document"));
            assert_eq!(found.2, roles, "{method} {path}");
        }
    }
}
