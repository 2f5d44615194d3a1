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

/// Checks a sink URL's form: absolute, `https://` or `http://`, with a host, at most
/// [`MAX_URL_BYTES`], no spaces and no credentials (they would be shown back by GET
/// /v1/sink and written to the audit log). Where it may point is [`check_sink_target`]'s.
pub fn check_sink_url(url: &str) -> Result<(), String> {
    const HOW: &str = "`url` must be an absolute https:// URL with a host, at most 2048 bytes, without spaces or credentials";
    if url.len() > MAX_URL_BYTES || url.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(HOW.into());
    }
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(|| HOW.to_owned())?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(HOW.into());
    }
    host_of(authority).ok_or_else(|| HOW.to_owned())?;
    Ok(())
}

/// How long registration waits for DNS before leaving the address check to the bridge.
const RESOLVE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Checks where a well-formed sink URL points, with the operator's switches: plain
/// `http://` only with `LOCUS_SINK_ALLOW_HTTP`, and no host on a special address
/// (loopback, private, link-local, metadata, NAT64, ...: [`locus_service::net`]), literal
/// or resolved, unless `LOCUS_SINK_ALLOW_PRIVATE`.
///
/// This answers the tenant admin at once, with the address that is wrong. It is not the
/// guard: a name can resolve elsewhere later (DNS rebinding), so the bridge judges the
/// addresses it actually connects to. A name that does not resolve now is therefore taken
/// (the receiver may not be up yet); the bridge refuses it at delivery if it then
/// resolves to a special address.
pub async fn check_sink_target(
    url: &str,
    targets: locus_service::net::SinkTargetSettings,
) -> Result<(), String> {
    use locus_service::net;
    let parsed = url::Url::parse(url).map_err(|e| format!("`url` does not parse: {e}"))?;
    if parsed.scheme() == "http" && !targets.allow_http {
        return Err(
            "`url` must use https://: deliveries carry location data and their signature; plain http:// is taken only when the operator sets LOCUS_SINK_ALLOW_HTTP=true (for a local receiver during development)"
                .into(),
        );
    }
    if targets.allow_private {
        return Ok(());
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addresses: Vec<std::net::IpAddr> = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => vec![ip.into()],
        Some(url::Host::Ipv6(ip)) => vec![ip.into()],
        Some(url::Host::Domain(name)) => {
            match tokio::time::timeout(RESOLVE_PATIENCE, tokio::net::lookup_host((name, port)))
                .await
            {
                Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
                // Not resolvable now: the bridge checks what it resolves to at delivery.
                Ok(Err(_)) | Err(_) => Vec::new(),
            }
        }
        None => return Err("`url` must have a host".into()),
    };
    let refused = net::special_addresses(addresses);
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "`url` points at an address Locus does not deliver to ({}): sinks must be public hosts, so a tenant cannot make Locus reach its own network; an operator whose receivers live on this machine or a private network sets LOCUS_SINK_ALLOW_PRIVATE=true",
            net::describe(&refused)
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
    fn a_sink_url_is_absolute_http_or_https_with_a_host_and_no_credentials() {
        for ok in [
            "https://hooks.example.com/locus",
            "https://hooks.example.com:8443/a?b=c",
            "HTTPS://Hooks.Example.com",
            "https://[2001:db8::1]/x",
            // Where it points is check_sink_target's.
            "http://localhost:9000/hook",
            "http://10.0.0.1/",
        ] {
            assert_eq!(check_sink_url(ok), Ok(()), "{ok}");
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
            "javascript:alert(1)",
        ] {
            assert!(check_sink_url(bad).is_err(), "{bad:?} was taken");
        }
        assert!(check_sink_url(&format!("https://h.example/{}", "a".repeat(2048))).is_err());
    }

    #[tokio::test]
    async fn a_sink_target_is_public_https_unless_the_operator_allows_more() {
        use locus_service::net::SinkTargetSettings;
        let strict = SinkTargetSettings::default();
        for public in [
            "https://1.1.1.1/hook",
            "https://[2606:4700:4700::1111]/hook",
            // Does not resolve here: left to the bridge's check at delivery.
            "https://hooks.invalid/hook",
        ] {
            assert_eq!(check_sink_target(public, strict).await, Ok(()), "{public}");
        }
        for (special, named) in [
            ("https://127.0.0.1/", "127.0.0.1 is loopback"),
            ("https://[::1]:8443/", "::1 is loopback"),
            ("https://192.168.1.10/", "192.168.1.10 is private"),
            ("https://localhost/", "127.0.0.1 is loopback"),
        ] {
            let message = check_sink_target(special, strict).await.unwrap_err();
            assert!(
                message.contains(named) && message.contains("LOCUS_SINK_ALLOW_PRIVATE=true"),
                "{special}: {message}"
            );
        }
        let message = check_sink_target("http://1.1.1.1/", strict)
            .await
            .unwrap_err();
        assert!(message.contains("LOCUS_SINK_ALLOW_HTTP=true"), "{message}");
        let private_only = SinkTargetSettings {
            allow_private: true,
            ..strict
        };
        assert_eq!(
            check_sink_target("https://10.0.0.1/", private_only).await,
            Ok(())
        );
        assert!(
            check_sink_target("http://10.0.0.1/", private_only)
                .await
                .is_err()
        );
        let http_only = SinkTargetSettings {
            allow_http: true,
            ..strict
        };
        assert_eq!(
            check_sink_target("http://1.1.1.1/", http_only).await,
            Ok(())
        );
        assert!(
            check_sink_target("http://127.0.0.1/", http_only)
                .await
                .is_err()
        );
        let open = SinkTargetSettings::permissive();
        assert_eq!(check_sink_target("http://127.0.0.1:9/", open).await, Ok(()));
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
