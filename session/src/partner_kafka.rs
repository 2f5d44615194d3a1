//! Partners' Kafka logins and the names of what they may read: the partner topics the
//! stream bridge writes (`<prefix>partner.<partner>.<tenant>.locations`), the partner's
//! principal and its consumer-group prefix. The stream bridge's provisioner reads
//! [`SessionStore::partner_kafka_plan`] and makes the broker match it; ingest's
//! `POST /v1/partners/{id}/kafka-credentials` writes [`SessionStore::set_partner_kafka_credential`].
//!
//! Names: partner and tenant ids may hold `:` (not allowed in a Kafka topic name) and `.`
//! (the separator), so each id is written with [`kafka_name`], an escape that maps `_` to
//! `_u`, `.` to `_d` and `:` to `_c`. Its output has no `.`, and decoding is unique, so no
//! two (partner, tenant) pairs share a topic and no partner's group prefix is a prefix of
//! another partner's. Ids without those three characters (the usual `acme`, `partner-1`)
//! are written as they are.
//!
//! Only the SCRAM salt, iteration count and salted password are stored, never a password.

use chrono::{DateTime, Utc};
use locus_wire::TenantId;
use serde_json::json;

use crate::SessionStore;
use crate::audit::{self, AuditEntry};
use crate::partners::{Actor, PartnerError};
use crate::scope::{Scope, begin};

/// Longest Kafka topic name the broker accepts.
pub const TOPIC_NAME_MAX: usize = 249;

/// The SCRAM mechanism of every partner login.
pub const MECHANISM: &str = "SCRAM-SHA-512";

/// `id` in the characters of a Kafka topic name, without `.`: `_` → `_u`, `.` → `_d`,
/// `:` → `_c`, everything else (ASCII letters, digits, `-`) as it is.
pub fn kafka_name(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for c in id.chars() {
        match c {
            '_' => out.push_str("_u"),
            '.' => out.push_str("_d"),
            ':' => out.push_str("_c"),
            c => out.push(c),
        }
    }
    out
}

/// The Kafka principal (SCRAM user name) of partner `partner`: `partner.<kafka_name>`.
pub fn principal(partner: &str) -> String {
    format!("partner.{}", kafka_name(partner))
}

/// The consumer groups partner `partner` may use: every group id that starts with this
/// (its principal and a dot).
pub fn group_prefix(partner: &str) -> String {
    format!("{}.", principal(partner))
}

/// The topic the bridge republishes `tenant`'s location records to for `partner`, or
/// `None` when the name would be longer than Kafka allows ([`TOPIC_NAME_MAX`]).
pub fn topic(prefix: &str, partner: &str, tenant: &str) -> Option<String> {
    let name = format!(
        "{prefix}partner.{}.{}.locations",
        kafka_name(partner),
        kafka_name(tenant)
    );
    (name.len() <= TOPIC_NAME_MAX).then_some(name)
}

/// A partner's SCRAM-SHA-512 credential as the broker stores it (RFC 5802).
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ScramCredential {
    /// PBKDF2 iterations.
    pub iterations: i32,
    /// The random salt.
    pub salt: Vec<u8>,
    /// PBKDF2-HMAC-SHA512 of the password with the salt.
    pub salted_password: Vec<u8>,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The salted password logs in as the partner (a SCRAM client can use it instead of
        // the password): never in a log line.
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// A partner with a Kafka login and the tenants that granted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerKafka {
    /// The partner's id.
    pub partner_id: String,
    /// Its login.
    pub credential: ScramCredential,
    /// When the login was last set: a change means the broker needs the new one.
    pub updated_at: DateTime<Utc>,
    /// The granting tenants, by id.
    pub tenants: Vec<TenantId>,
}

#[derive(sqlx::FromRow)]
struct PlanRow {
    partner_id: String,
    iterations: i32,
    salt: Vec<u8>,
    salted_password: Vec<u8>,
    updated_at: DateTime<Utc>,
    tenants: Vec<String>,
}

impl SessionStore {
    /// Sets (or replaces) partner `partner`'s Kafka login. Audited without the credential.
    pub async fn set_partner_kafka_credential(
        &self,
        actor: Actor<'_>,
        partner: &str,
        credential: &ScramCredential,
    ) -> Result<DateTime<Utc>, PartnerError> {
        let mut tx = begin(self.pool(), Scope::System).await?;
        let enabled: Option<bool> =
            sqlx::query_scalar("SELECT disabled_at IS NULL FROM partners WHERE id = $1")
                .bind(partner)
                .fetch_optional(&mut *tx)
                .await?;
        if enabled != Some(true) {
            return Err(PartnerError::PartnerNotFound);
        }
        let updated_at: DateTime<Utc> = sqlx::query_scalar(
            "INSERT INTO partner_kafka_credentials (partner_id, iterations, salt, salted_password) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (partner_id) DO UPDATE SET iterations = EXCLUDED.iterations, \
               salt = EXCLUDED.salt, salted_password = EXCLUDED.salted_password, \
               updated_at = clock_timestamp() \
             RETURNING updated_at",
        )
        .bind(partner)
        .bind(credential.iterations)
        .bind(&credential.salt)
        .bind(&credential.salted_password)
        .fetch_one(&mut *tx)
        .await?;
        audit::record(
            &mut tx,
            &AuditEntry {
                tenant: None,
                actor: actor.subject,
                actor_role: actor.role,
                action: "partner.kafka_credentials_set",
                target_kind: "partner",
                target_id: partner,
                before: None,
                after: Some(json!({ "principal": principal(partner), "mechanism": MECHANISM })),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(updated_at)
    }

    /// Every enabled partner with a Kafka login, by id, with its granting tenants: what
    /// the broker should hold. A disabled partner is left out (its login and rights go).
    pub async fn partner_kafka_plan(&self) -> Result<Vec<PartnerKafka>, PartnerError> {
        let rows: Vec<PlanRow> = sqlx::query_as(
            "SELECT c.partner_id, c.iterations, c.salt, c.salted_password, c.updated_at, \
               COALESCE(array_agg(g.tenant_id ORDER BY g.tenant_id) \
                 FILTER (WHERE g.tenant_id IS NOT NULL), '{}') AS tenants \
             FROM partner_kafka_credentials c \
             JOIN partners p ON p.id = c.partner_id AND p.disabled_at IS NULL \
             LEFT JOIN partner_grants g ON g.partner_id = c.partner_id \
             GROUP BY c.partner_id, c.iterations, c.salt, c.salted_password, c.updated_at \
             ORDER BY c.partner_id",
        )
        .fetch_all(&mut *begin(self.pool(), Scope::System).await?)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| PartnerKafka {
                partner_id: r.partner_id,
                credential: ScramCredential {
                    iterations: r.iterations,
                    salt: r.salt,
                    salted_password: r.salted_password,
                },
                updated_at: r.updated_at,
                // Parsed when written; one that no longer parses is left out, not fatal.
                tenants: r
                    .tenants
                    .into_iter()
                    .filter_map(|t| TenantId::parse(t).ok())
                    .collect(),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ids_are_written_as_they_are() {
        assert_eq!(
            topic("locus.", "partner-1", "acme").as_deref(),
            Some("locus.partner.partner-1.acme.locations")
        );
        assert_eq!(principal("partner-1"), "partner.partner-1");
        assert_eq!(group_prefix("partner-1"), "partner.partner-1.");
    }

    #[test]
    fn ids_with_dots_colons_or_underscores_never_share_a_topic() {
        // (a, b.t) and (a.b, t) would both be `a.b.t` without the escape.
        let pairs = [
            ("a", "b.t"),
            ("a.b", "t"),
            ("a_db", "t"),
            ("a:b", "t"),
            ("a_", "t"),
        ];
        let topics: std::collections::HashSet<_> = pairs
            .iter()
            .map(|(p, t)| topic("x.", p, t).unwrap())
            .collect();
        assert_eq!(topics.len(), pairs.len(), "{topics:?}");
        for t in &topics {
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')),
                "{t}"
            );
        }
    }

    #[test]
    fn no_partners_group_prefix_is_a_prefix_of_anothers() {
        let ids = ["a", "a.b", "a_b", "a:b", "ab"];
        for x in ids {
            for y in ids {
                if x != y {
                    assert!(
                        !group_prefix(y).starts_with(&group_prefix(x)),
                        "{x} could join {y}'s groups"
                    );
                }
            }
        }
    }

    #[test]
    fn a_name_past_kafkas_limit_is_refused() {
        let long = "p".repeat(128);
        let tenant = "t".repeat(64);
        assert!(topic("locus.", &long, &tenant).is_some());
        assert!(topic("locus.", &":".repeat(128), &tenant).is_none());
    }
}
