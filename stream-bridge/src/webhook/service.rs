//! Sends one webhook attempt with reqwest and says what it came to, in the outcome
//! vocabulary of [`Outcome`]. Retrying is the caller's business.
//!
//! Where the attempt may connect is decided here, at connect time, not only when the sink
//! was registered: a name that resolved to a public address then may resolve to 10.0.0.1
//! now (DNS rebinding). The client's resolver ([`PublicOnly`]) drops every special address
//! ([`locus_service::net::special_address`]), so the address connected to is one that was
//! checked; reqwest does not resolve a literal IP, so [`WebhookService::send`] checks
//! those itself, and plain `http://` too. No proxy is used: a proxy would connect on our
//! behalf, to an address we never saw. A refused target is a misconfiguration of the
//! sink, not a passing trouble: the attempt is [`Outcome::Rejected`], so the tenant pauses
//! (its records wait, nothing is dead-lettered) and the endpoint's health says why.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use locus_service::net::{self, SinkTargetSettings};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::RETRY_AFTER;
use reqwest::{Url, redirect};

use super::config::Sink;
use super::request_builder::WebhookRequest;
use super::retry::{Outcome, classify};
use crate::error::BridgeError;

/// The HTTP client of webhook deliveries.
#[derive(Debug, Clone)]
pub struct WebhookService {
    client: reqwest::Client,
    targets: SinkTargetSettings,
}

impl WebhookService {
    /// A client whose requests time out after `timeout`, never follow redirects (the sink
    /// URL was checked, a redirect target was not), use no proxy, and connect only to
    /// public addresses unless `targets` allows private ones.
    pub fn new(timeout: Duration, targets: SinkTargetSettings) -> Result<Self, BridgeError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(redirect::Policy::none())
            // HTTP(S)_PROXY would make the proxy connect for us, to an address it resolves.
            .no_proxy()
            .dns_resolver(Arc::new(PublicOnly {
                allow_private: targets.allow_private,
            }))
            .user_agent(concat!("locus-stream-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(BridgeError::HttpClient)?;
        Ok(Self { client, targets })
    }

    /// POSTs `request` to `sink`, signed now.
    pub async fn send(&self, sink: &Sink, request: &WebhookRequest) -> Outcome {
        if let Some(reason) = refused_target(&sink.url, self.targets) {
            return refused(reason);
        }
        let headers = request.headers(sink, Utc::now());
        let result = self
            .client
            .post(sink.url.clone())
            .headers(headers)
            .body(request.body.clone())
            .send()
            .await;
        match result {
            Ok(response) => {
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok());
                classify(response.status(), retry_after, Utc::now())
                // The response body is dropped unread: partners' answers carry no data.
            }
            Err(e) => match find_source::<OnlySpecialAddresses>(&e) {
                Some(only_special) => refused(only_special.to_string()),
                // Connection refused, reset, DNS failure or timeout: the webhook may be
                // back in a moment. The URL is cut from the text, which goes to logs and
                // to the dead-letter topic: some partners put a token in their webhook URL.
                None => Outcome::Retriable {
                    retry_after: None,
                    reason: format!("request failed: {}", error_chain(&e.without_url())),
                    status: None,
                },
            },
        }
    }
}

/// The outcome of an attempt whose target is refused: no request was sent.
fn refused(reason: String) -> Outcome {
    Outcome::Rejected {
        retry_after: None,
        reason,
        status: None,
    }
}

/// Why the bridge will not send to `url` before any name is resolved: plain http without
/// `LOCUS_SINK_ALLOW_HTTP`, or a literal IP host (which reqwest connects to without asking
/// the resolver) on a special address without `LOCUS_SINK_ALLOW_PRIVATE`.
pub fn refused_target(url: &Url, targets: SinkTargetSettings) -> Option<String> {
    if url.scheme() == "http" && !targets.allow_http {
        return Some(
            "the sink URL is plain http:// and LOCUS_SINK_ALLOW_HTTP is off; set the sink \
             again with an https:// URL"
                .to_owned(),
        );
    }
    if targets.allow_private {
        return None;
    }
    let ip = match url.host()? {
        url::Host::Ipv4(ip) => IpAddr::V4(ip),
        url::Host::Ipv6(ip) => IpAddr::V6(ip),
        url::Host::Domain(_) => return None,
    };
    let why = net::special_address(ip)?;
    Some(format!(
        "sink address {ip} is {why}; set the sink again with a public host, or allow \
         private targets with LOCUS_SINK_ALLOW_PRIVATE=true"
    ))
}

/// The resolver of webhook clients: the system's (getaddrinfo, through tokio), minus every
/// special address unless `allow_private`.
#[derive(Debug, Clone, Copy)]
pub struct PublicOnly {
    /// Keep special addresses too (`LOCUS_SINK_ALLOW_PRIVATE`).
    pub allow_private: bool,
}

impl PublicOnly {
    /// The addresses of `host` that may be connected to, in the resolver's order. Port 0:
    /// reqwest puts in the URL's port.
    pub async fn lookup(&self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(ResolveError::Lookup)?
            .collect();
        if self.allow_private {
            return Ok(addrs);
        }
        let refused = net::special_addresses(addrs.iter().map(SocketAddr::ip));
        let public: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| net::special_address(a.ip()).is_none())
            .collect();
        if public.is_empty() {
            return Err(ResolveError::OnlySpecial(OnlySpecialAddresses {
                host: host.to_owned(),
                refused: net::describe(&refused),
            }));
        }
        Ok(public)
    }
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let this = *self;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            match this.lookup(&host).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                Err(ResolveError::Lookup(e)) => Err(e.into()),
                Err(ResolveError::OnlySpecial(e)) => Err(e.into()),
            }
        })
    }
}

/// Why [`PublicOnly::lookup`] gave no address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The name did not resolve (or the system resolver failed): a passing trouble.
    #[error("cannot resolve the sink host: {0}")]
    Lookup(std::io::Error),
    /// Every address of the name is special.
    #[error(transparent)]
    OnlySpecial(OnlySpecialAddresses),
}

/// Every address the sink's host resolved to is a special one: nothing is connected to.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "sink host resolves only to special addresses ({refused}); point its DNS at a public \
     address, or allow private targets with LOCUS_SINK_ALLOW_PRIVATE=true"
)]
pub struct OnlySpecialAddresses {
    /// The host name.
    pub host: String,
    /// The addresses with their ranges (`127.0.0.1 is loopback, ...`).
    pub refused: String,
}

/// The first error of type `T` in `e`'s source chain (the resolver's error reaches us
/// wrapped by hyper's connector and reqwest).
fn find_source<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        current = err.source();
    }
    None
}

/// `e` and its sources on one line: reqwest's own message alone ("error sending request")
/// does not say what failed.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: SinkTargetSettings = SinkTargetSettings {
        allow_http: false,
        allow_private: false,
    };

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn plain_http_is_refused_unless_allowed() {
        let why = refused_target(&url("http://hooks.example.com/x"), STRICT).unwrap();
        assert!(why.contains("LOCUS_SINK_ALLOW_HTTP"), "{why}");
        let http_ok = SinkTargetSettings {
            allow_http: true,
            ..STRICT
        };
        assert_eq!(
            refused_target(&url("http://hooks.example.com/x"), http_ok),
            None
        );
        assert_eq!(
            refused_target(&url("https://hooks.example.com/x"), STRICT),
            None
        );
    }

    #[test]
    fn a_literal_special_address_is_refused_before_any_request() {
        for (u, range) in [
            ("https://127.0.0.1:9/x", "loopback"),
            ("https://169.254.169.254/latest/meta-data", "cloud metadata"),
            ("https://[fd00:ec2::254]/", "cloud metadata"),
            ("https://[64:ff9b::a00:1]/", "NAT64"),
            ("https://[::ffff:10.0.0.1]/", "private"),
            // The URL parser reads these as 127.0.0.1: the check sees what is connected to.
            ("https://2130706433/", "loopback"),
            ("https://0x7f.1/", "loopback"),
        ] {
            let why = refused_target(&url(u), STRICT).unwrap_or_else(|| panic!("{u} taken"));
            assert!(why.contains(range), "{u}: {why}");
            assert!(why.contains("LOCUS_SINK_ALLOW_PRIVATE"), "{why}");
            assert_eq!(
                refused_target(&url(u), SinkTargetSettings::permissive()),
                None
            );
        }
        assert_eq!(refused_target(&url("https://93.184.216.34/"), STRICT), None);
    }

    #[tokio::test]
    async fn the_resolver_drops_special_addresses_and_refuses_a_name_with_no_other() {
        // `localhost` resolves (from /etc/hosts) to loopback only, on every machine.
        let strict = PublicOnly {
            allow_private: false,
        };
        match strict.lookup("localhost").await {
            Err(ResolveError::OnlySpecial(e)) => {
                assert_eq!(e.host, "localhost");
                assert!(e.refused.contains("127.0.0.1 is loopback"), "{e}");
                assert!(
                    e.to_string()
                        .starts_with("sink host resolves only to special addresses ("),
                    "{e}"
                );
            }
            other => panic!("localhost was not refused: {other:?}"),
        }
        let allowed = PublicOnly {
            allow_private: true,
        };
        let addrs = allowed
            .lookup("localhost")
            .await
            .expect("localhost resolves");
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }

    #[tokio::test]
    async fn a_client_with_the_resolver_never_connects_to_a_name_on_loopback() {
        // A listener on loopback that counts the connections it accepts.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let server = tokio::spawn(async move {
            while let Ok((_socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let service = WebhookService::new(
            Duration::from_secs(5),
            SinkTargetSettings {
                allow_http: true,
                allow_private: false,
            },
        )
        .unwrap();
        let result = service
            .client
            .post(format!("http://localhost:{port}/hook"))
            .send()
            .await;
        let e = result.expect_err("the request was refused");
        let only = find_source::<OnlySpecialAddresses>(&e).expect("the resolver's reason");
        assert!(only.refused.contains("loopback"), "{only}");
        // The resolver refused before any connect: nothing can have been accepted.
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
        server.abort();
    }
}
