//! Roles and the principal a verified token stands for.

use std::fmt;
use std::str::FromStr;

use locus_wire::TenantId;
use serde::{Deserialize, Serialize};

/// What a token lets its bearer do; the services map each route to the roles it takes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Role {
    /// Runs the platform: manages tenants and partners. Has no tenant.
    PlatformAdmin,
    /// Administers one tenant: devices, sinks, grants; reads its sessions.
    TenantAdmin,
    /// One device of one tenant (the subject is the device id): its own sessions.
    Device,
    /// A partner (the subject is the partner id): reads sessions of tenants that granted it.
    Partner,
}

impl Role {
    /// Every role, in order of the enum.
    pub const ALL: [Role; 4] = [
        Role::PlatformAdmin,
        Role::TenantAdmin,
        Role::Device,
        Role::Partner,
    ];

    /// The role's snake_case name, as in tokens and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::PlatformAdmin => "platform_admin",
            Role::TenantAdmin => "tenant_admin",
            Role::Device => "device",
            Role::Partner => "partner",
        }
    }

    /// The role named `s` (snake_case), if any.
    pub fn from_name(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether a principal of this role belongs to exactly one tenant (tenant admins and
    /// devices), so that its token must name the tenant.
    pub fn has_tenant(self) -> bool {
        matches!(self, Role::TenantAdmin | Role::Device)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not one of the four roles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected platform_admin, tenant_admin, device or partner")]
pub struct UnknownRoleName(pub String);

impl FromStr for Role {
    type Err = UnknownRoleName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::from_name(s).ok_or_else(|| UnknownRoleName(s.to_owned()))
    }
}

/// Who a verified token stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// What it may do.
    pub role: Role,
    /// Who it is: the device id for devices, the partner id for partners, the user otherwise.
    pub subject: String,
    /// Its tenant: `Some` exactly for tenant admins and devices.
    pub tenant: Option<TenantId>,
    /// When the token was issued (unix seconds), if it says.
    pub issued_at: Option<i64>,
    /// When the token expires (unix seconds).
    pub expires_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_named_in_snake_case_everywhere() {
        for role in Role::ALL {
            assert_eq!(Role::from_name(role.as_str()), Some(role));
            assert_eq!(
                serde_json::to_value(role).unwrap(),
                serde_json::json!(role.as_str())
            );
            let value = clap::ValueEnum::to_possible_value(&role).unwrap();
            assert_eq!(value.get_name(), role.as_str());
        }
        assert!("tenant-admin".parse::<Role>().is_err());
    }
}
