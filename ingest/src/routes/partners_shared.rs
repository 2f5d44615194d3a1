//! What the partner, grant, sink and audit routes share: the answer bodies (a sink's view
//! has no secret field, so no answer can carry one), the sink's URL and secret rules, and
//! what each store error means to a client.

use chrono::{DateTime, Utc};
use locus_session::SessionError;
use locus_session::partners::{Actor, Grant, Partner, PartnerError};
use locus_session::sinks::{Sink, SinkError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::Identity;
use crate::error::{ApiError, ErrorCode};

/// Largest body these routes read: their bodies are a few short fields.
pub const BODY_LIMIT: usize = 16 * 1024;

/// The identity as the audit log names it.
pub fn actor(identity: &Identity) -> Actor<'_> {
    Actor {
        subject: &identity.subject,
        role: identity.role.as_str(),
    }
}

/// A partner id from a body or path, or 400 `invalid_id`.
pub fn partner_id(id: String) -> Result<String, ApiError> {
    if locus_session::partners::valid_partner_id(&id) {
        Ok(id)
    } else {
        Err(ApiError::coded(
            ErrorCode::InvalidId,
            format!(
                "a partner id is 1 to {} ASCII letters, digits, '-', '_', '.' or ':' (the `sub` of the partner's tokens)",
                locus_session::partners::PARTNER_ID_MAX
            ),
        ))
    }
}

/// A partner as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PartnerView {
    /// Its id: the `sub` of its tokens.
    pub partner_id: String,
    /// A display name.
    pub name: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was disabled (it then reads nothing).
    pub disabled_at: Option<DateTime<Utc>>,
}

impl From<Partner> for PartnerView {
    fn from(p: Partner) -> Self {
        Self {
            partner_id: p.id,
            name: p.name,
            created_at: p.created_at,
            disabled_at: p.disabled_at,
        }
    }
}

/// A tenant's grant to a partner, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct GrantView {
    /// The partner that may read the tenant's sessions.
    pub partner_id: String,
    /// The tenant that granted it.
    pub tenant_id: String,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<Grant> for GrantView {
    fn from(g: Grant) -> Self {
        Self {
            partner_id: g.partner_id,
            tenant_id: g.tenant_id,
            created_at: g.created_at,
        }
    }
}

/// A tenant's webhook sink as the API shows it: never its secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SinkView {
    /// The sink's id.
    #[schema(value_type = String, format = "uuid")]
    pub sink_id: Uuid,
    /// The tenant.
    pub tenant_id: String,
    /// Where the stream bridge delivers the tenant's records.
    pub url: String,
    /// When it was first set.
    pub created_at: DateTime<Utc>,
    /// When it was last set.
    pub updated_at: DateTime<Utc>,
}

impl From<Sink> for SinkView {
    fn from(s: Sink) -> Self {
        Self {
            sink_id: s.id,
            tenant_id: s.tenant_id,
            url: s.url,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// Longest sink URL.
pub const MAX_URL_BYTES: usize = 2048;
/// Shortest sink secret: 128 bits of hex.
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest sink secret.
pub const MAX_SECRET_BYTES: usize = 512;

/// Checks a sink URL: absolute, `https://` with a host; `http://` only to a loopback host
/// (`localhost`, `127.x.x.x`, `[::1]`) and only in development mode (`LOCUS_DEV_MODE`),
/// for a receiver on the developer's machine. No credentials in the URL (they would be
/// shown back by GET /v1/sink and written to the audit log).
///
/// This is the edge's plain check only; the bridge checks every row again before use.
/// Refusing private and link-local addresses (the full SSRF check, with DNS) is a later
/// issue.
pub fn check_sink_url(url: &str, dev_mode: bool) -> Result<(), String> {
    const HOW: &str = "`url` must be an absolute https:// URL (http:// only to localhost in development mode), at most 2048 bytes, without spaces or credentials";
    if url.len() > MAX_URL_BYTES || url.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(HOW.into());
    }
    let lower = url.to_ascii_lowercase();
    let (secure, rest) = if let Some(rest) = lower.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = lower.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(HOW.into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(HOW.into());
    }
    let host = host_of(authority).ok_or_else(|| HOW.to_owned())?;
    if secure {
        return Ok(());
    }
    let loopback = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback && dev_mode {
        Ok(())
    } else {
        Err(format!(
            "`url` must use https://; plain http:// is taken only to a loopback host, and only when the service runs in development mode ({})",
            if dev_mode {
                "this host is not a loopback one"
            } else {
                "it does not"
            }
        ))
    }
}

/// The host of `authority` (`host[:port]` or `[v6][:port]`), if it is well formed.
fn host_of(authority: &str) -> Option<&str> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, after) = authority.split_at(end + 1);
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return None;
    }
    let valid_name = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'[' | b']' | b':'));
    (!host.is_empty() && valid_name).then_some(host)
}

/// Checks a sink secret: the HMAC key the bridge signs deliveries with.
pub fn check_sink_secret(secret: &str) -> Result<(), String> {
    if (MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&secret.len())
        && secret.bytes().all(|b| b.is_ascii_graphic())
    {
        Ok(())
    } else {
        Err(format!(
            "`secret` must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} printable ASCII characters without spaces (e.g. 32 random bytes in hex); the receiver checks each delivery's signature with it"
        ))
    }
}

/// The 503 of a PostgreSQL failure, as the session routes answer it.
fn database(e: sqlx::Error) -> ApiError {
    ApiError::from(SessionError::Database(e))
}

fn tenant_not_found() -> ApiError {
    ApiError::coded(
        ErrorCode::TenantNotFound,
        "the token's tenant is not registered; a platform admin creates it with POST /v1/tenants",
    )
}

impl From<PartnerError> for ApiError {
    fn from(e: PartnerError) -> Self {
        match e {
            PartnerError::PartnerNotFound => Self::coded(
                ErrorCode::PartnerNotFound,
                "no partner with this id; a platform admin creates partners with POST /v1/partners",
            ),
            PartnerError::PartnerExists => Self::coded(
                ErrorCode::PartnerExists,
                "a partner with this id exists; choose another id",
            ),
            PartnerError::GrantNotFound => Self::coded(
                ErrorCode::GrantNotFound,
                "this tenant has not granted this partner; grant it with PUT /v1/grants/{partner_id}",
            ),
            PartnerError::TenantNotFound => tenant_not_found(),
            PartnerError::Database(e) => database(e),
        }
    }
}

impl From<SinkError> for ApiError {
    fn from(e: SinkError) -> Self {
        match e {
            SinkError::NotFound => Self::coded(
                ErrorCode::SinkNotFound,
                "this tenant has no sink; set one with PUT /v1/sink",
            ),
            SinkError::TenantNotFound => tenant_not_found(),
            SinkError::Database(e) => database(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_url_is_https_with_a_host_or_http_to_loopback_in_development() {
        for ok in [
            "https://hooks.example.com/locus",
            "https://hooks.example.com:8443/a?b=c",
            "HTTPS://Hooks.Example.com",
            "https://[2001:db8::1]/x",
        ] {
            assert_eq!(check_sink_url(ok, false), Ok(()), "{ok}");
        }
        for dev in [
            "http://localhost:9000/hook",
            "http://127.0.0.1:9000/",
            "http://[::1]:8080",
        ] {
            assert_eq!(check_sink_url(dev, true), Ok(()), "{dev}");
            assert!(
                check_sink_url(dev, false).is_err(),
                "{dev} outside dev mode"
            );
        }
        for bad in [
            "",
            "hooks.example.com/x",
            "ftp://hooks.example.com/",
            "https://",
            "https:///path",
            "https://user:pw@hooks.example.com/",
            "https://hooks.example.com/a b",
            "https://hooks.example.com:0/",
            "https://hooks.example.com:99999/",
            "http://hooks.example.com/",
            "http://10.0.0.1/",
            "javascript:alert(1)",
        ] {
            assert!(check_sink_url(bad, true).is_err(), "{bad:?} was taken");
        }
        assert!(check_sink_url(&format!("https://h.example/{}", "a".repeat(2048)), false).is_err());
    }

    #[test]
    fn a_sink_secret_is_32_to_512_printable_characters() {
        assert!(check_sink_secret(&"k".repeat(32)).is_ok());
        assert!(check_sink_secret(&"k".repeat(512)).is_ok());
        assert!(check_sink_secret(&"k".repeat(31)).is_err());
        assert!(check_sink_secret(&"k".repeat(513)).is_err());
        assert!(check_sink_secret(&format!("{} x", "k".repeat(40))).is_err());
    }
}
