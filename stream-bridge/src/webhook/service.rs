//! Sends one webhook attempt with reqwest and says what it came to, in the outcome
//! vocabulary of [`Outcome`]. Retrying is the caller's business.

use std::time::Duration;

use chrono::Utc;
use reqwest::header::RETRY_AFTER;
use reqwest::redirect;

use super::config::Sink;
use super::request_builder::WebhookRequest;
use super::retry::{Outcome, classify};
use crate::error::BridgeError;

/// The HTTP client of webhook deliveries.
#[derive(Debug, Clone)]
pub struct WebhookService {
    client: reqwest::Client,
}

impl WebhookService {
    /// A client whose requests time out after `timeout` and never follow redirects: the
    /// sink URL was checked at start, a redirect target was not.
    pub fn new(timeout: Duration) -> Result<Self, BridgeError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(redirect::Policy::none())
            .user_agent(concat!("locus-stream-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(BridgeError::HttpClient)?;
        Ok(Self { client })
    }

    /// POSTs `request` to `sink`, signed now.
    pub async fn send(&self, sink: &Sink, request: &WebhookRequest) -> Outcome {
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
            // Connection refused, reset, DNS failure or timeout: the webhook may be back
            // in a moment. The URL is cut from the text, which goes to logs and to the
            // dead-letter topic: some partners put a token in their webhook URL.
            Err(e) => Outcome::Retriable {
                retry_after: None,
                reason: format!("request failed: {}", error_chain(&e.without_url())),
                status: None,
            },
        }
    }
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
