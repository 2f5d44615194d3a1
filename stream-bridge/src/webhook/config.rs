//! The webhook sink table: one URL and signing secret per tenant, each checked once where
//! it comes in (the JSON of the static configuration at start, a PostgreSQL row at each
//! refresh, see [`crate::sink_store`]), so the delivery code only ever holds a usable
//! [`Sink`].

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use locus_wire::TenantId;
use locus_wire::webhook::SigningKey;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::error::SinkError;

/// One tenant's sink as written in the configuration, not yet checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// Where deliveries are POSTed.
    pub url: String,
    /// The HMAC key deliveries are signed with.
    pub secret: SecretString,
}

/// The sink table as written: tenant id to [`SinkSpec`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct SinkSpecs(BTreeMap<String, SinkSpec>);

impl SinkSpecs {
    /// Parses `{"<tenant>": {"url": "...", "secret": "..."}}`. The error never quotes the
    /// input, which holds secrets.
    pub fn parse_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| {
            format!(
                "expected a JSON object {{\"<tenant>\": {{\"url\": \"...\", \"secret\": \"...\"}}}} \
                 (line {}, column {}: {:?} error)",
                e.line(),
                e.column(),
                e.classify()
            )
        })
    }

    /// Sets the sink of `tenant`.
    pub fn insert(&mut self, tenant: &str, url: &str, secret: &str) {
        self.0.insert(
            tenant.to_owned(),
            SinkSpec {
                url: url.to_owned(),
                secret: SecretString::from(secret),
            },
        );
    }

    /// Adds `other`'s sinks, replacing ours for the tenants it names.
    pub fn merge(&mut self, other: SinkSpecs) {
        self.0.extend(other.0);
    }

    /// Checks every entry: the tenant id, the URL (absolute, http or https) and its host,
    /// which may only be a loopback, private or link-local address when `allow_private`.
    pub fn validate(self, allow_private: bool) -> Result<Sinks, SinkError> {
        let mut sinks = HashMap::with_capacity(self.0.len());
        for (tenant, spec) in self.0 {
            let (tenant_id, sink) = Sink::parse(&tenant, &spec.url, spec.secret, allow_private)?;
            sinks.insert(tenant_id, sink);
        }
        Ok(Sinks(sinks))
    }
}

fn parse_sink_url(tenant: &str, raw: &str, allow_private: bool) -> Result<Url, SinkError> {
    let url = Url::parse(raw).map_err(|e| SinkError::InvalidUrl {
        tenant: tenant.to_owned(),
        message: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(SinkError::InvalidUrl {
            tenant: tenant.to_owned(),
            message: format!("scheme {:?} is not http or https", url.scheme()),
        });
    }
    let host = url.host_str().ok_or_else(|| SinkError::InvalidUrl {
        tenant: tenant.to_owned(),
        message: "the URL has no host".to_owned(),
    })?;
    if !allow_private && is_private_host(host) {
        return Err(SinkError::PrivateAddress {
            tenant: tenant.to_owned(),
            host: host.to_owned(),
        });
    }
    Ok(url)
}

/// Whether `host` (as in a URL: IPv6 in brackets) is `localhost` or a literal special
/// address (`locus_service::net::special_address`: loopback, private, link-local, shared,
/// NAT64, metadata and the other IANA special-purpose ranges).
///
/// Names are not resolved here: the delivery checks the address it connects to
/// (`webhook::service::PublicOnly`).
pub fn is_private_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    literal
        .parse::<IpAddr>()
        .is_ok_and(|ip| locus_service::net::special_address(ip).is_some())
}

/// A checked webhook sink.
#[derive(Debug, Clone)]
pub struct Sink {
    /// Where deliveries are POSTed.
    pub url: Url,
    /// The HMAC key deliveries are signed with.
    pub secret: SecretString,
    /// `secret` decoded (`whsec_<base64>`, or an old-format secret's own bytes).
    pub key: SigningKey,
    /// The secret being rolled over from: it signs too, until its expiry.
    pub previous: Option<PreviousKey>,
    /// Set (with why) when the webhook answered 410 Gone: nothing is sent until the sink
    /// is set again; the tenant's records wait.
    pub gone: Option<String>,
    /// The row's `updated_at` (`None` for a static sink): a 410 recorded against one
    /// version of a sink never disables the next one.
    pub version: Option<DateTime<Utc>>,
}

/// A previous signing key during a secret rollover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousKey {
    /// The key.
    pub key: SigningKey,
    /// Until when it signs.
    pub until: DateTime<Utc>,
}

impl Sink {
    /// Checks one sink as written: the tenant id, the URL (absolute, http or https) and its
    /// host, which may only be a loopback, private or link-local address when
    /// `allow_private`.
    pub fn parse(
        tenant: &str,
        url: &str,
        secret: SecretString,
        allow_private: bool,
    ) -> Result<(TenantId, Sink), SinkError> {
        let tenant_id =
            TenantId::parse(tenant.to_owned()).map_err(|source| SinkError::InvalidTenant {
                tenant: tenant.to_owned(),
                source,
            })?;
        let url = parse_sink_url(tenant, url, allow_private)?;
        let key = SigningKey::from_stored(secret.expose_secret()).map_err(|e| {
            SinkError::InvalidSecret {
                tenant: tenant.to_owned(),
                message: e.to_string(),
            }
        })?;
        Ok((
            tenant_id,
            Sink {
                url,
                secret,
                key,
                previous: None,
                gone: None,
                version: None,
            },
        ))
    }

    /// Whether `other` sends to the same URL with the same secret: a refresh that reads a
    /// row unchanged changes nothing.
    pub fn same_as(&self, other: &Sink) -> bool {
        self.url == other.url
            && self.secret.expose_secret() == other.secret.expose_secret()
            && self.previous == other.previous
            && self.gone == other.gone
            && self.version == other.version
    }
}

/// The checked sink table: at most one sink per tenant.
#[derive(Debug, Clone, Default)]
pub struct Sinks(HashMap<TenantId, Sink>);

impl Sinks {
    /// The sink of `tenant`, if it has one.
    pub fn get(&self, tenant: &TenantId) -> Option<&Sink> {
        self.0.get(tenant)
    }

    /// How many tenants have a sink.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no tenant has a sink.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets the sink of `tenant`, replacing its previous one.
    pub fn insert(&mut self, tenant: TenantId, sink: Sink) {
        self.0.insert(tenant, sink);
    }

    /// Every tenant with its sink, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&TenantId, &Sink)> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(url: &str, allow_private: bool) -> Result<Sinks, SinkError> {
        let mut specs = SinkSpecs::default();
        specs.insert("acme", url, "s3cret");
        specs.validate(allow_private)
    }

    #[test]
    fn a_sink_table_parses_from_json() {
        let specs = SinkSpecs::parse_json(
            r#"{"acme": {"url": "https://hooks.example.com/locus", "secret": "s3cret"}}"#,
        )
        .unwrap();
        let sinks = specs.validate(false).unwrap();
        let sink = sinks.get(&TenantId::parse("acme").unwrap()).unwrap();
        assert_eq!(sink.url.as_str(), "https://hooks.example.com/locus");
        assert_eq!(sink.secret.expose_secret(), "s3cret");
        assert_eq!(sinks.len(), 1);
    }

    #[test]
    fn a_malformed_sink_table_is_refused_without_echoing_secrets() {
        for text in [
            r#"["acme"]"#,
            r#"{"acme": {"url": "https://x.example"}}"#,
            r#"{"acme": {"url": "https://x.example", "secret": "hunter2", "extra": 1}}"#,
            r#"{"acme": {"url": "https://x.example", "secret": "hunter2""#,
        ] {
            let err = SinkSpecs::parse_json(text).unwrap_err();
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn a_bad_tenant_id_or_url_is_refused() {
        let mut specs = SinkSpecs::default();
        specs.insert("not a tenant", "https://x.example", "s");
        assert!(matches!(
            specs.validate(false),
            Err(SinkError::InvalidTenant { .. })
        ));
        assert!(matches!(
            one("not a url", false),
            Err(SinkError::InvalidUrl { .. })
        ));
        assert!(matches!(
            one("ftp://x.example/", false),
            Err(SinkError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn loopback_private_and_link_local_sinks_are_refused_by_default() {
        for url in [
            "http://localhost:8080/hook",
            "http://LOCALHOST./hook",
            "http://api.localhost/hook",
            "http://127.0.0.1/hook",
            "http://127.9.9.9/hook",
            "http://10.1.2.3/hook",
            "http://172.16.0.1/hook",
            "http://192.168.1.10/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://0.0.0.0/hook",
            "http://100.64.0.1/hook",
            "http://[::1]/hook",
            "http://[fd00::1]/hook",
            "http://[fe80::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            // NAT64 of 10.0.0.1, the benchmarking range, documentation: special as well.
            "http://[64:ff9b::a00:1]/hook",
            "http://198.18.0.1/hook",
            "http://[2001:db8::1]/hook",
            // The URL parser normalises these to 127.0.0.1; the check sees the normal form.
            "http://2130706433/hook",
            "http://0x7f.1/hook",
        ] {
            match one(url, false) {
                Err(SinkError::PrivateAddress { .. }) => {}
                other => panic!("{url} was not refused: {other:?}"),
            }
            assert!(one(url, true).is_ok(), "{url} refused even when allowed");
        }
    }

    #[test]
    fn public_sinks_are_accepted() {
        for url in [
            "https://hooks.example.com/locus",
            "http://93.184.216.34/hook",
            "http://172.32.0.1/hook",
            "http://[2606:4700:4700::1111]/hook",
        ] {
            assert!(one(url, false).is_ok(), "{url} refused");
        }
    }
}
