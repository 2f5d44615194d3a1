//! POST /v1/partners/{partner_id}/kafka-credentials: a platform admin gives a partner a
//! Kafka login (SCRAM-SHA-512) for its partner topics, or replaces the one it had.
//!
//! The password is generated here and answered once (`Cache-Control: no-store`); only its
//! SCRAM salt, iteration count and salted password reach PostgreSQL, which is what the
//! stream bridge's provisioner hands the broker (AlterUserScramCredentials takes exactly
//! those). So neither the database nor the broker can tell anyone the password.

use std::num::NonZeroU32;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use locus_session::partner_kafka::{self, MECHANISM, ScramCredential};
use locus_wire::api::ErrorBody;
use rand::RngCore;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{Identity, Role};
use crate::error::ApiError;
use crate::routes::AppState;
use crate::routes::partners_shared;

/// PBKDF2 iterations of a new credential: the Kafka tools' default for SCRAM-SHA-512.
const ITERATIONS: u32 = 8192;

/// Random bytes of a password (hex in the answer: nothing to quote in a JAAS line).
const PASSWORD_BYTES: usize = 24;

/// Random bytes of a salt.
const SALT_BYTES: usize = 32;

/// Answer of `POST /v1/partners/{partner_id}/kafka-credentials`.
#[derive(Debug, Serialize, ToSchema)]
pub struct KafkaCredentialsResponse {
    /// The SASL user name to log in with.
    pub username: String,
    /// The password: shown in this answer only, never stored, never shown again.
    pub password: String,
    /// `SCRAM-SHA-512`.
    pub mechanism: &'static str,
    /// Consumer groups the partner may use: any group id starting with this.
    pub group_prefix: String,
    /// The partner's topics, one per granting tenant (more appear as tenants grant).
    pub topics: Vec<String>,
    /// When the login was set; the stream bridge gives it to the broker within about one
    /// refresh interval (2 s by default).
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// The RFC 5802 `SaltedPassword` of `password`: PBKDF2-HMAC-SHA512 with `salt`.
fn salted_password(password: &[u8], salt: &[u8], iterations: NonZeroU32) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA512,
        iterations,
        salt,
        password,
        &mut out,
    );
    out
}

/// Create or replace a partner's Kafka login.
///
/// 201 with the user name and a new password, shown once. A replaced login stops working
/// once the stream bridge applied the new one (about 2 s); connected clients keep their
/// session until they reconnect. The partner reads `<prefix>partner.<partner>.<tenant>.locations`
/// of every tenant that granted it (docs/partners.md, "Consuming a partner topic").
#[utoipa::path(
    post,
    path = "/v1/partners/{partner_id}/kafka-credentials",
    operation_id = "create_partner_kafka_credentials",
    tag = "partners",
    params(("partner_id" = String, Path, description = "The partner's id.")),
    responses(
        (status = 201, description = "The login was set; the answer holds its password, once.", body = KafkaCredentialsResponse),
        (status = 400, description = "`invalid_id`.", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no valid bearer token.", body = ErrorBody),
        (status = 403, description = "`forbidden`: only platform admins set partner logins.", body = ErrorBody),
        (status = 404, description = "`partner_not_found` (or disabled).", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: retry after `Retry-After` seconds.", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait."))),
    ),
    security(("bearer" = ["platform_admin"]))
)]
#[tracing::instrument(skip_all, fields(partner))]
pub async fn handler(
    State(state): State<AppState>,
    identity: Identity,
    Path(partner_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    identity.require(&[Role::PlatformAdmin])?;
    let partner = partners_shared::partner_id(partner_id)?;
    tracing::Span::current().record("partner", partner.as_str());

    let mut password = [0u8; PASSWORD_BYTES];
    let mut salt = vec![0u8; SALT_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut password);
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let password: String = password.iter().map(|b| format!("{b:02x}")).collect();
    let iterations = NonZeroU32::new(ITERATIONS).expect("a positive constant");
    let credential = ScramCredential {
        iterations: ITERATIONS as i32,
        salted_password: salted_password(password.as_bytes(), &salt, iterations),
        salt,
    };
    let updated_at = state
        .store
        .set_partner_kafka_credential(partners_shared::actor(&identity), &partner, &credential)
        .await?;
    let prefix = &state.config.kafka.topic_prefix;
    let topics = state
        .store
        .granted_tenants(&partner)
        .await?
        .iter()
        .filter_map(|t| partner_kafka::topic(prefix, &partner, t.as_str()))
        .collect();
    tracing::info!(actor = %identity.subject, "Partner Kafka login set.");
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(KafkaCredentialsResponse {
            username: partner_kafka::principal(&partner),
            password,
            mechanism: MECHANISM,
            group_prefix: partner_kafka::group_prefix(&partner),
            topics,
            updated_at,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's SCRAM-SHA-256 test vector has no SHA-512 sibling; this pins our PBKDF2 to
    /// the value Kafka's own `ScramFormatter.hi` gives (computed with Python's
    /// `hashlib.pbkdf2_hmac("sha512", b"pencil", b"salt", 4096)`).
    #[test]
    fn the_salted_password_is_pbkdf2_hmac_sha512() {
        let got = salted_password(b"pencil", b"salt", NonZeroU32::new(4096).unwrap());
        assert_eq!(got.len(), 64);
        let hex: String = got.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, EXPECTED);
    }

    const EXPECTED: &str = "2cfe3a1c151662b1ea49d13f595674a1c666add70df15d3d02254e9905993878261da7407fd11c2fee4b0a30df5154b1a752f86a13380ddd4bdd9a7c958ec769";
}
