//! Registering the simulated tenants and devices through ingest's admin API before their
//! sessions start: ingest refuses a session of a device it does not know (403
//! `device_not_registered`), and a device belongs to a tenant that must exist.
//!
//! Every user of the bench that starts sessions (`demo`, `run`, `sweep`, the fault harness)
//! calls [`register`] first. Tenants are created with a `platform_admin` token
//! (`POST /v1/tenants`), devices with a `tenant_admin` token of their tenant
//! (`POST /v1/devices`), all HS256 development tokens ([`crate::auth`]), so ingest must run
//! with `LOCUS_DEV_MODE=true` and the bench's `LOCUS_JWT_SECRET`. A 409 `tenant_exists` or
//! `device_exists` counts as registered: a rerun with the same ids, or devices someone
//! registered before, is not an error. Devices go [`IN_FLIGHT`] requests at a time, so
//! hundreds take a fraction of a second rather than one round trip each.
//!
//! The credential a `POST /v1/devices` answers with is dropped: the simulated devices keep
//! signing their own development tokens, so the load measures batches, not the exchange.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use locus_wire::api::ErrorBody;
use locus_wire::{DeviceId, TenantId};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::auth;
use crate::client::{self, IngestClient, Post, Retry};

/// Admin requests on the wire at once.
pub const IN_FLIGHT: usize = 32;

/// Attempts per admin request (429, 503 and transport errors are retried; the body is
/// the same, and a retried create that had landed answers 409, which counts as done).
const ATTEMPTS: u32 = 5;

/// Path of `POST /v1/tenants` (platform_admin).
pub const TENANTS_PATH: &str = "/v1/tenants";

/// Path of `POST /v1/devices` (tenant_admin of the device's tenant).
pub const DEVICES_PATH: &str = "/v1/devices";

/// What a registration did, and how long it took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    /// Tenants created (201).
    pub tenants_created: u64,
    /// Tenants that were there already (409 `tenant_exists`).
    pub tenants_existing: u64,
    /// Devices created (201).
    pub devices_created: u64,
    /// Devices that were there already (409 `device_exists`).
    pub devices_existing: u64,
    /// Wall time of the whole registration, tenants included, in seconds.
    pub secs: f64,
}

impl Registration {
    /// Devices registered, new or not.
    pub fn devices(&self) -> u64 {
        self.devices_created + self.devices_existing
    }

    /// `"512 devices (512 new) of 2 tenants (0 new) in 0.41 s"`, for the logs and reports.
    pub fn summary(&self) -> String {
        format!(
            "{} devices ({} new) of {} tenants ({} new) in {:.2} s",
            self.devices(),
            self.devices_created,
            self.tenants_created + self.tenants_existing,
            self.tenants_created,
            self.secs
        )
    }
}

/// How one create ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Created {
    New,
    Existing,
}

/// Registers the tenants of `devices`, then the devices, through the admin API of the
/// ingest `ingest` talks to (its HTTP client and base URL; its retry and in-flight
/// settings are not used: registration has its own). An error names the first refusal
/// and how to fix it; nothing is rolled back (a rerun finds what was done and goes on).
pub async fn register(
    ingest: &IngestClient,
    secret: &SecretString,
    devices: &[(TenantId, DeviceId)],
) -> anyhow::Result<Registration> {
    let started = Instant::now();
    let admin = Arc::new(
        IngestClient::new(ingest.http().clone(), ingest.base())
            .with_retry(Retry::up_to(ATTEMPTS))
            .with_max_in_flight(IN_FLIGHT),
    );
    // Each device once: a repeated one would come back as 409 and count as "existing".
    let devices: BTreeSet<(&TenantId, &DeviceId)> = devices.iter().map(|(t, d)| (t, d)).collect();
    let tenants: BTreeSet<&TenantId> = devices.iter().map(|(t, _)| *t).collect();
    let mut reg = Registration::default();

    // Tenants first: a device of a tenant that does not exist yet cannot be created.
    let platform = client::bearer(&auth::platform_admin_token(secret)?);
    let mut tasks = JoinSet::new();
    for tenant in &tenants {
        let admin = Arc::clone(&admin);
        let authorization = platform.clone();
        let body = serde_json::json!({ "tenant_id": tenant.as_str() });
        tasks.spawn(async move {
            create(&admin, TENANTS_PATH, &authorization, body, "tenant_exists").await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined.context("a tenant registration task panicked")?? {
            Created::New => reg.tenants_created += 1,
            Created::Existing => reg.tenants_existing += 1,
        }
    }

    let mut tokens = BTreeMap::new();
    for tenant in &tenants {
        let token = auth::tenant_admin_token(secret, tenant.as_str())?;
        tokens.insert(*tenant, client::bearer(&token));
    }
    let mut tasks = JoinSet::new();
    for (tenant, device) in &devices {
        let admin = Arc::clone(&admin);
        let authorization = tokens[tenant].clone();
        let body = serde_json::json!({ "device_id": device.as_str() });
        let what = format!("device {device} of tenant {tenant}");
        tasks.spawn(async move {
            create(&admin, DEVICES_PATH, &authorization, body, "device_exists")
                .await
                .with_context(|| format!("cannot register {what}"))
        });
    }
    // Every device is tried; the error then says how many failed and why the first did.
    let mut failed = 0;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.context("a device registration task panicked")? {
            Ok(Created::New) => reg.devices_created += 1,
            Ok(Created::Existing) => reg.devices_existing += 1,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e.context(format!(
            "{failed} of {} devices could not be registered",
            devices.len()
        )));
    }
    reg.secs = started.elapsed().as_secs_f64();
    tracing::info!(
        devices = reg.devices(),
        devices_created = reg.devices_created,
        tenants = tenants.len(),
        secs = reg.secs,
        "Devices registered."
    );
    Ok(reg)
}

/// One `POST` of a create: 201 is new, 409 with `exists_code` was there already; anything
/// else is an error saying what ingest answered.
async fn create(
    admin: &IngestClient,
    path: &str,
    authorization: &str,
    body: serde_json::Value,
    exists_code: &str,
) -> anyhow::Result<Created> {
    let bytes = serde_json::to_vec(&body).expect("a JSON value serialises");
    let answer = admin
        .post(&Post::json(path, authorization, bytes.into()), |_| {})
        .await
        .map_err(|e| anyhow::anyhow!("POST {path} {body}: {e}"))?;
    match answer.status {
        StatusCode::CREATED => Ok(Created::New),
        StatusCode::CONFLICT
            if serde_json::from_slice::<ErrorBody>(&answer.body)
                .is_ok_and(|e| e.error == exists_code) =>
        {
            Ok(Created::Existing)
        }
        status => anyhow::bail!(
            "POST {path} {body}: {}{}",
            client::refusal(status, &answer.body),
            hint(status)
        ),
    }
}

/// How to fix the usual refusals of the bench's admin calls.
fn hint(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => {
            " (ingest refused the bench's development admin token: run ingest with \
             LOCUS_DEV_MODE=true and give the bench the same LOCUS_JWT_SECRET)"
        }
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            " (this ingest has no admin API: rebuild it from this checkout)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_new_and_existing_together() {
        let reg = Registration {
            tenants_created: 1,
            tenants_existing: 1,
            devices_created: 500,
            devices_existing: 12,
            secs: 0.414,
        };
        assert_eq!(
            reg.summary(),
            "512 devices (500 new) of 2 tenants (1 new) in 0.41 s"
        );
    }
}
