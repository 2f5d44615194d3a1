//! The shared tier: one fixes budget per device and per tenant for all replicas, as GCRA
//! buckets in Redis. Lua looks at both buckets and charges both or neither, atomically,
//! with Redis' own clock (replicas' clocks never enter the arithmetic); its steps are those
//! of [`super::gcra::Gcra::look`]. On the request path that Lua ([`LOOK`]) runs inside the
//! buffer's append script, so a batch costs one Redis round trip and the budgets are
//! charged only when the batch is stored; [`Shared::charge`] is the same charge alone.
//!
//! Keys: `<prefix>:{rl:<tenant>}:fixes` and `<prefix>:{rl:<tenant>}:fixes:<device>`, in one
//! Redis Cluster slot per tenant (the `{...}` hash tag), each holding a TAT in microseconds
//! and expiring once the bucket is full again, so idle devices cost no memory.

use std::time::Duration;

use locus_wire::{DeviceId, TenantId};
use redis::aio::ConnectionManager;
use redis::{RedisError, Script};

use super::gcra::Gcra;

/// The GCRA steps of [`super::gcra::Gcra::look`] in Lua, shared by [`CHARGE`] and the
/// buffer's append script ([`crate::buffer`]): `clock()` reads Redis' clock into `now`
/// (µs; once per call, so both buckets see one instant), and `look(key, cost, interval,
/// burst)` returns {fits, wait, left now, left after the cost, reset now, reset after, TAT
/// after}.
pub(crate) const LOOK: &str = r"
local now = 0
local function clock()
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function look(key, cost, interval, burst)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local limit = burst * interval
  local new = tat + cost * interval
  local before = math.floor((limit - (tat - now)) / interval)
  if new - now > limit then
    return {false, new - now - limit, before, 0, tat - now, tat - now, new}
  end
  return {true, 0, before, math.floor((limit - (new - now)) / interval), tat - now, new - now, new}
end
-- Who refuses {by (0 none, 1 device, 2 tenant), wait}, and the answer as the budgets
-- stand: the reply of a batch not charged.
local function refusal(d, n)
  if d[1] and n[1] then return 0, 0 end
  if d[1] or (not n[1] and n[2] > d[2]) then return 2, n[2] end
  return 1, d[2]
end
-- Charges both looks: the TATs after, each expiring once its bucket is full again.
local function charge(dkey, d, nkey, n)
  redis.call('SET', dkey, string.format('%d', d[7]), 'PX', math.floor(d[6] / 1000) + 1000)
  redis.call('SET', nkey, string.format('%d', n[7]), 'PX', math.floor(n[6] / 1000) + 1000)
  return {0, 0, d[4], d[6], n[4], n[6]}
end
";

/// KEYS: the device's bucket, the tenant's. ARGV: the cost, then interval (µs) and burst
/// of the device, then of the tenant. Returns {refused_by (0 none, 1 device, 2 tenant),
/// wait µs, device remaining, device reset µs, tenant remaining, tenant reset µs}: after
/// the charge when admitted, as they stand when refused.
const CHARGE: &str = r"
clock()
local cost = tonumber(ARGV[1])
local d = look(KEYS[1], cost, tonumber(ARGV[2]), tonumber(ARGV[3]))
local n = look(KEYS[2], cost, tonumber(ARGV[4]), tonumber(ARGV[5]))
local by, wait = refusal(d, n)
if by == 0 then
  return charge(KEYS[1], d, KEYS[2], n)
end
return {by, wait, d[3], d[5], n[3], n[5]}
";

/// A charge of both fixes budgets for a script that runs [`LOOK`]: the two bucket keys and
/// the script's arguments (cost, then interval and burst of the device, then the tenant's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeArgs {
    /// The device's bucket.
    pub device_key: String,
    /// The tenant's bucket.
    pub tenant_key: String,
    /// Fixes, interval µs and burst of the device, interval µs and burst of the tenant.
    pub args: [u64; 5],
}

/// What the shared budget answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charged {
    /// `None` when admitted (both charged), else who refused (neither charged).
    pub refused_by: Option<super::Scope>,
    /// When refused: microseconds until the same batch fits.
    pub wait_us: u64,
    /// The device's units left and microseconds until full.
    pub device: (u64, u64),
    /// The tenant's.
    pub tenant: (u64, u64),
}

impl Charged {
    /// The six numbers a script built on [`LOOK`] answers.
    pub fn from_reply(reply: &[i64]) -> Self {
        let at = |i: usize| reply.get(i).copied().unwrap_or(0).max(0) as u64;
        Self {
            refused_by: match at(0) {
                0 => None,
                1 => Some(super::Scope::Device),
                _ => Some(super::Scope::Tenant),
            },
            wait_us: at(1),
            device: (at(2), at(3)),
            tenant: (at(4), at(5)),
        }
    }
}

/// Why the shared budget gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// Redis did not answer within the deadline.
    #[error("redis did not answer within {0:?}")]
    Deadline(Duration),
}

/// The shared buckets.
#[derive(Clone)]
pub struct Shared {
    conn: ConnectionManager,
    prefix: String,
    script: Script,
    deadline: Duration,
}

impl Shared {
    /// Buckets under `prefix` over `conn`; each call waits at most `deadline`.
    pub fn new(conn: ConnectionManager, prefix: &str, deadline: Duration) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            script: Script::new(&format!("{LOOK}{CHARGE}")),
            deadline,
        }
    }

    /// The key of `tenant`'s bucket (`device`'s, when given).
    pub fn key(&self, tenant: &TenantId, device: Option<&DeviceId>) -> String {
        match device {
            None => format!("{}:{{rl:{tenant}}}:fixes", self.prefix),
            Some(d) => format!("{}:{{rl:{tenant}}}:fixes:{d}", self.prefix),
        }
    }

    /// What a script needs to charge `cost` to `device` and `tenant`.
    pub fn charge_args(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        cost: u64,
        device_budget: &Gcra,
        tenant_budget: &Gcra,
    ) -> ChargeArgs {
        ChargeArgs {
            device_key: self.key(tenant, Some(device)),
            tenant_key: self.key(tenant, None),
            args: [
                cost,
                device_budget.interval_us,
                device_budget.burst,
                tenant_budget.interval_us,
                tenant_budget.burst,
            ],
        }
    }

    /// Charges `cost` to `device` and `tenant`, both or neither, in a call of its own
    /// (the request path charges inside the buffer's append instead).
    pub async fn charge(
        &self,
        tenant: &TenantId,
        device: &DeviceId,
        cost: u64,
        device_budget: &Gcra,
        tenant_budget: &Gcra,
    ) -> Result<Charged, SharedError> {
        let mut conn = self.conn.clone();
        let charge = self.charge_args(tenant, device, cost, device_budget, tenant_budget);
        let mut invocation = self.script.key(charge.device_key);
        invocation.key(charge.tenant_key);
        for arg in charge.args {
            invocation.arg(arg);
        }
        let reply: Vec<i64> =
            tokio::time::timeout(self.deadline, invocation.invoke_async(&mut conn))
                .await
                .map_err(|_| SharedError::Deadline(self.deadline))??;
        Ok(Charged::from_reply(&reply))
    }
}
