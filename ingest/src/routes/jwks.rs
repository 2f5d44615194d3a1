//! GET /.well-known/jwks.json: the public keys Locus signs device tokens with, for anyone
//! who verifies them (another service, a partner, a gateway).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::routes::AppState;

/// The JWKS document of the device-token signing key and the previous keys still accepted. No token needed: these are public
/// keys. Cached for five minutes.
pub async fn handler(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        axum::Json(state.jwks.as_ref().clone()),
    )
}
