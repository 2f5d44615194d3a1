//! The sessions of a timed run (`run`, `sweep`): one per simulated device, started before
//! the clock starts and stopped after the run, so the load measures batch posts only.

use anyhow::Context as _;
use locus_wire::SessionId;
use secrecy::SecretString;

use crate::auth::{self, DEVICE_TOKEN_TTL_SECS};
use crate::client::{self, IngestClient};
use crate::driver::Target;
use crate::register::{self, Registration};
use crate::workload::Workload;

/// A device's session and the request that posts its batch into it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The session id ingest gave it.
    pub id: SessionId,
    /// The batch POST of this device into it.
    pub target: Target,
}

/// The `max_duration_secs` of a run's sessions. They must outlive the run (the server
/// default is 10 minutes, a soak's length): the load, the drain and a margin, within the
/// server's 24 h maximum.
pub fn lifetime_secs(duration_secs: u64, drain_secs: u64) -> u64 {
    (duration_secs + drain_secs + 600).min(86_400)
}

/// Registers the devices of `work` ([`register`]), then starts one session per device,
/// one after another, each lasting `lifetime_secs`. Any failure stops the run: a timed run
/// without all its devices would measure something else.
pub async fn start_sessions(
    ingest: &IngestClient,
    secret: &SecretString,
    work: &Workload,
    lifetime_secs: u64,
) -> anyhow::Result<(Vec<Session>, Registration)> {
    let devices: Vec<_> = work
        .devices
        .iter()
        .map(|(t, d, _)| (t.clone(), d.clone()))
        .collect();
    let registration = register::register(ingest, secret, &devices).await?;
    let mut out = Vec::new();
    for (i, (tenant, device, _)) in work.devices.iter().enumerate() {
        let token = auth::device_token(
            secret,
            tenant.as_str(),
            device.as_str(),
            DEVICE_TOKEN_TTL_SECS,
        )?;
        let authorization = client::bearer(&token);
        let id = ingest
            .start_session(&authorization, Some(lifetime_secs), |_| {})
            .await
            .with_context(|| format!("cannot start a session for {device}"))?;
        let target = work.target(i, client::locations_path(id), authorization);
        out.push(Session { id, target });
    }
    Ok((out, registration))
}

/// Stops the sessions; failures are only logged (the sessions expire by themselves).
pub async fn stop_sessions(ingest: &IngestClient, sessions: &[Session]) {
    for s in sessions {
        if let Err(e) = ingest
            .stop_session(&s.target.authorization, s.id, |_| {})
            .await
        {
            tracing::warn!(error = %e, "Could not stop a bench session.");
        }
    }
}
