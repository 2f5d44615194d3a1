//! The data of a timed run (`run`, `sweep`), prepared before the clock starts: the
//! simulated devices, one batch body per device (`{"fixes":[...]}`, gzipped when asked),
//! and for the ceilings the same batches as Redis entries and as Kafka records.

use std::io::Write as _;

use anyhow::Context as _;
use bytes::Bytes;
use chrono::Utc;
use locus_wire::api::{Fix, FixInput, FixLimits};
use locus_wire::buffer::{BufferEntry, BufferedBatch};
use locus_wire::headers::{RecordType, record_headers};
use locus_wire::record::LocationRecord;
use locus_wire::{BatchId, DeviceId, SessionId, TenantId};

use crate::ceiling::kafka::ScratchRecord;
use crate::driver::Target;
use crate::track::Track;

/// The simulated devices of a run and their prepared data.
#[derive(Debug)]
pub struct Workload {
    /// Run id: device ids are `perf-<run_id>-<n>`.
    pub run_id: String,
    /// Per device: tenant, device id, the fixes of its batch.
    pub devices: Vec<(TenantId, DeviceId, Vec<FixInput>)>,
    /// The batch body per device (`{"fixes":[...]}`), gzipped when `gzip` is set.
    pub bodies: Vec<Bytes>,
    /// The bodies are gzipped.
    pub gzip: bool,
    /// Fixes per batch.
    pub batch_size: u32,
}

impl Workload {
    /// `devices` devices spread round-robin over `tenants`, one batch of `batch_size`
    /// fixes each.
    pub fn new(
        tenants: &[TenantId],
        devices: u32,
        batch_size: u32,
        gzip: bool,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!tenants.is_empty(), "give at least one tenant");
        anyhow::ensure!(
            devices > 0 && batch_size > 0,
            "devices and batch size must be > 0"
        );
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let now = Utc::now();
        let mut out = Vec::new();
        let mut bodies = Vec::new();
        for n in 0..devices {
            let tenant = tenants[n as usize % tenants.len()].clone();
            let device = DeviceId::parse(format!("perf-{run_id}-{n}"))?;
            let fixes = Track::random(u64::from(n), chrono::Duration::seconds(1))
                .next_batch(batch_size as usize, now);
            let json = serde_json::to_vec(&serde_json::json!({ "fixes": fixes }))?;
            let body = if gzip {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&json)?;
                enc.finish()?
            } else {
                json
            };
            bodies.push(Bytes::from(body));
            out.push((tenant, device, fixes));
        }
        Ok(Self {
            run_id,
            devices: out,
            bodies,
            gzip,
            batch_size,
        })
    }

    /// Prefix of every device id of this run, and of no other run's.
    pub fn device_prefix(&self) -> String {
        format!("perf-{}-", self.run_id)
    }

    /// The target of device `i` on the batch path `path`, as `authorization`.
    pub fn target(&self, i: usize, path: String, authorization: String) -> Target {
        Target {
            path,
            authorization,
            body: self.bodies[i].clone(),
            gzip: self.gzip,
            fixes: u64::from(self.batch_size),
        }
    }

    /// Targets for a server that ignores paths and tokens (the no-op ceiling).
    pub fn noop_targets(&self) -> Vec<Target> {
        (0..self.bodies.len())
            .map(|i| self.target(i, "/v1/sessions/x/locations".into(), "Bearer x".into()))
            .collect()
    }

    /// The Redis entries ingest would write for one batch of each device (session ids
    /// made up, same shape and size).
    pub fn buffer_entries(&self) -> anyhow::Result<Vec<(Bytes, u64)>> {
        let now = Utc::now();
        self.batches(now)?
            .into_iter()
            .map(|b| {
                let n = b.fixes.len() as u64;
                Ok((Bytes::from(serde_json::to_vec(&BufferEntry::Fixes(b))?), n))
            })
            .collect()
    }

    fn batches(&self, now: chrono::DateTime<Utc>) -> anyhow::Result<Vec<BufferedBatch>> {
        self.devices
            .iter()
            .enumerate()
            .map(|(i, (tenant, device, fixes))| {
                let limits = FixLimits::default();
                let fixes = fixes
                    .iter()
                    .enumerate()
                    .map(|(k, f)| Fix::validate(k as u32, *f, now, &limits))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|r| anyhow::anyhow!("a generated fix is invalid: {}", r.message))?;
                Ok(BufferedBatch {
                    tenant_id: tenant.clone(),
                    session_id: SessionId(uuid::Uuid::now_v7()),
                    device_id: device.clone(),
                    batch_id: BatchId::parse(format!("{}-{i}", self.run_id))
                        .context("the run id makes an invalid batch id")?,
                    received_at: now,
                    fixes,
                })
            })
            .collect()
    }

    /// `total` Kafka records as the forwarder would produce them, cycling over the batches.
    pub fn records(&self, total: u64) -> anyhow::Result<Vec<ScratchRecord>> {
        let batches = self.batches(Utc::now())?;
        let mut out = Vec::with_capacity(total as usize);
        'outer: for round in 0.. {
            for b in &batches {
                for fix in &b.fixes {
                    if out.len() as u64 >= total {
                        break 'outer;
                    }
                    let mut record = LocationRecord::from_fix(b, fix);
                    record.batch_id = format!("{}-{round}", b.batch_id);
                    out.push(ScratchRecord {
                        key: b.session_id.to_string(),
                        headers: record_headers(RecordType::Location, &b.tenant_id, b.session_id),
                        value: Bytes::from(serde_json::to_vec(&record)?),
                    });
                }
            }
        }
        Ok(out)
    }
}
