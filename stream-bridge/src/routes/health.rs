//! GET /healthz: the process is alive and serving HTTP.

/// Always 200: liveness says nothing about Kafka or the webhooks, so a broker outage does
/// not get the bridge restarted in a loop.
pub async fn healthz() -> &'static str {
    "ok"
}
