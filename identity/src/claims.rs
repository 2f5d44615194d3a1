//! Claim checks after the signature verified: times, lifetime, and the mapping of claims to
//! a [`Principal`]. Pure functions of the claims and the clock, so the boundaries are
//! tested exactly.

use locus_wire::{DeviceId, TenantId};
use serde::Deserialize;
use serde_json::Value;

use crate::{AuthError, ClaimMapping, Principal, Role};

/// The time rules: `exp` plus leeway not past, `nbf` and `iat` minus leeway not future,
/// lifetime (`exp - iat`, or `exp - now` without `iat`) at most `max_lifetime`.
pub(crate) fn check_times(
    exp: i64,
    nbf: Option<i64>,
    iat: Option<i64>,
    now: i64,
    leeway: u64,
    max_lifetime: u64,
) -> Result<(), AuthError> {
    let lee = i64::try_from(leeway).unwrap_or(i64::MAX);
    // Inclusive at the edge, as jsonwebtoken is: valid while now <= exp + leeway.
    if now > exp.saturating_add(lee) {
        return Err(AuthError::Expired { exp, now, leeway });
    }
    if let Some(nbf) = nbf
        && nbf > now.saturating_add(lee)
    {
        return Err(AuthError::NotYetValid { nbf, now });
    }
    if let Some(iat) = iat
        && iat > now.saturating_add(lee)
    {
        return Err(AuthError::IssuedInFuture { iat, now });
    }
    let lifetime = exp.saturating_sub(iat.unwrap_or(now));
    if u64::try_from(lifetime).is_ok_and(|l| l > max_lifetime) {
        return Err(AuthError::LifetimeTooLong {
            lifetime,
            max: max_lifetime,
        });
    }
    Ok(())
}

/// Claims of a Locus device token or a development HS256 token. `iss`, `aud`, `sub` and
/// `exp` were required by jsonwebtoken already; read again here for their values.
#[derive(Debug, Deserialize)]
pub(crate) struct LocusClaims {
    sub: Option<String>,
    tenant: Option<String>,
    role: Option<String>,
    #[serde(default, deserialize_with = "numeric")]
    iat: Option<i64>,
    #[serde(default, deserialize_with = "numeric")]
    nbf: Option<i64>,
    #[serde(default, deserialize_with = "numeric")]
    exp: Option<i64>,
}

impl LocusClaims {
    /// The principal of a Locus token, after the time rules.
    pub(crate) fn into_principal(
        self,
        now: i64,
        leeway: u64,
        max_lifetime: u64,
    ) -> Result<Principal, AuthError> {
        let exp = self.exp.ok_or_else(|| missing("exp"))?;
        check_times(exp, self.nbf, self.iat, now, leeway, max_lifetime)?;
        let subject = self.sub.ok_or_else(|| missing("sub"))?;
        let role_name = self.role.ok_or_else(|| missing("role"))?;
        // Locus tokens name roles exactly; mapping is only for providers.
        let role = Role::from_name(&role_name).ok_or(AuthError::UnknownRole(role_name))?;
        let tenant = if role.has_tenant() {
            Some(parse_tenant("tenant", self.tenant)?)
        } else {
            None
        };
        principal(role, subject, tenant, self.iat, exp)
    }
}

/// The principal of a provider token, claims mapped by `mapping`, after the time rules.
pub(crate) fn provider_principal(
    claims: &Value,
    mapping: &ClaimMapping,
    now: i64,
    leeway: u64,
    max_lifetime: u64,
) -> Result<Principal, AuthError> {
    let time = |name: &str| -> Result<Option<i64>, AuthError> {
        match claims.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => as_seconds(v)
                .map(Some)
                .ok_or_else(|| AuthError::InvalidClaim {
                    claim: name.to_owned(),
                    reason: "not a number of seconds".to_owned(),
                }),
        }
    };
    let exp = time("exp")?.ok_or_else(|| missing("exp"))?;
    let iat = time("iat")?;
    check_times(exp, time("nbf")?, iat, now, leeway, max_lifetime)?;
    let role = map_role(claims, mapping)?;
    let subject_claim = if role == Role::Partner {
        mapping.partner.as_str()
    } else {
        "sub"
    };
    let subject = match lookup(claims, subject_claim) {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(not_a_string(subject_claim)),
        None => return Err(missing(subject_claim)),
    };
    let tenant = if role.has_tenant() {
        let value = match lookup(claims, &mapping.tenant) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(not_a_string(&mapping.tenant)),
            None => None,
        };
        Some(parse_tenant(&mapping.tenant, value)?)
    } else {
        None
    };
    principal(role, subject, tenant, iat, exp)
}

/// The claim at `path`: a top-level claim of that exact name, else the dotted path walked
/// through nested objects.
pub(crate) fn lookup<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    if !path.contains('.') {
        return None;
    }
    path.split('.')
        .try_fold(claims, |v, segment| v.get(segment))
}

/// The one Locus role the role claim (a string or an array of strings) maps to.
fn map_role(claims: &Value, mapping: &ClaimMapping) -> Result<Role, AuthError> {
    let values: Vec<&str> = match lookup(claims, &mapping.role) {
        None | Some(Value::Null) => return Err(missing(&mapping.role)),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        Some(_) => return Err(not_a_string(&mapping.role)),
    };
    let mut found: Option<Role> = None;
    for value in &values {
        let Some(role) = mapping
            .roles
            .get(*value)
            .copied()
            .or_else(|| Role::from_name(value))
        else {
            continue;
        };
        match found {
            Some(other) if other != role => {
                return Err(AuthError::AmbiguousRole(format!("{other}, {role}")));
            }
            _ => found = Some(role),
        }
    }
    found.ok_or_else(|| AuthError::UnknownRole(values.join(",")))
}

fn principal(
    role: Role,
    subject: String,
    tenant: Option<TenantId>,
    issued_at: Option<i64>,
    expires_at: i64,
) -> Result<Principal, AuthError> {
    if role == Role::Device {
        // A device's subject is its device id: parse it here so the services can too.
        DeviceId::parse(subject.as_str()).map_err(|e| AuthError::InvalidClaim {
            claim: "sub".to_owned(),
            reason: e.to_string(),
        })?;
    } else if subject.is_empty() || subject.len() > 256 {
        return Err(AuthError::InvalidClaim {
            claim: "sub".to_owned(),
            reason: "must be 1 to 256 bytes".to_owned(),
        });
    }
    Ok(Principal {
        role,
        subject,
        tenant,
        issued_at,
        expires_at,
    })
}

fn parse_tenant(claim: &str, value: Option<String>) -> Result<TenantId, AuthError> {
    let value = value.ok_or_else(|| missing(claim))?;
    TenantId::parse(value).map_err(|e| AuthError::InvalidClaim {
        claim: claim.to_owned(),
        reason: e.to_string(),
    })
}

fn missing(claim: &str) -> AuthError {
    AuthError::MissingClaim(claim.to_owned())
}

fn not_a_string(claim: &str) -> AuthError {
    AuthError::InvalidClaim {
        claim: claim.to_owned(),
        reason: "not a string".to_owned(),
    }
}

/// NumericDate: integer seconds, or a float (RFC 7519 allows fractions), floored.
fn as_seconds(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite())
            .map(|f| f.floor() as i64)
    })
}

fn numeric<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => as_seconds(&v)
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("a time claim is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_token_is_valid_up_to_exp_plus_leeway_and_not_a_second_later() {
        assert_eq!(check_times(NOW - 30, None, None, NOW, 30, 86_400), Ok(()));
        assert_eq!(
            check_times(NOW - 31, None, None, NOW, 30, 86_400),
            Err(AuthError::Expired {
                exp: NOW - 31,
                now: NOW,
                leeway: 30
            })
        );
    }

    #[test]
    fn nbf_and_iat_may_be_ahead_by_the_leeway_and_no_more() {
        assert_eq!(
            check_times(NOW + 60, Some(NOW + 30), Some(NOW + 30), NOW, 30, 86_400),
            Ok(())
        );
        assert!(matches!(
            check_times(NOW + 60, Some(NOW + 31), None, NOW, 30, 86_400),
            Err(AuthError::NotYetValid { .. })
        ));
        assert!(matches!(
            check_times(NOW + 60, None, Some(NOW + 31), NOW, 30, 86_400),
            Err(AuthError::IssuedInFuture { .. })
        ));
    }

    #[test]
    fn the_lifetime_cap_counts_from_iat_or_else_from_now() {
        assert_eq!(check_times(NOW + 100, None, Some(NOW), NOW, 0, 100), Ok(()));
        assert!(matches!(
            check_times(NOW + 50, None, Some(NOW - 51), NOW, 0, 100),
            Err(AuthError::LifetimeTooLong { lifetime: 101, .. })
        ));
        assert!(matches!(
            check_times(NOW + 101, None, None, NOW, 0, 100),
            Err(AuthError::LifetimeTooLong { .. })
        ));
    }

    #[test]
    fn a_claim_path_is_a_top_level_name_first_then_a_dotted_path() {
        let claims = json!({
            "custom:tenant": "acme",
            "https://locus.example/tenant": "beta",
            "app_metadata": {"tenant": "gamma", "deep": {"x": 1}},
        });
        assert_eq!(lookup(&claims, "custom:tenant"), Some(&json!("acme")));
        assert_eq!(
            lookup(&claims, "https://locus.example/tenant"),
            Some(&json!("beta"))
        );
        assert_eq!(
            lookup(&claims, "app_metadata.tenant"),
            Some(&json!("gamma"))
        );
        assert_eq!(lookup(&claims, "app_metadata.deep.x"), Some(&json!(1)));
        assert_eq!(lookup(&claims, "app_metadata.nope"), None);
    }

    fn mapping() -> ClaimMapping {
        let mut m = ClaimMapping {
            tenant: "app_metadata.tenant".to_owned(),
            role: "groups".to_owned(),
            partner: "partner_id".to_owned(),
            ..ClaimMapping::default()
        };
        m.roles.insert("locus-admins".to_owned(), Role::TenantAdmin);
        m.roles.insert("ops".to_owned(), Role::PlatformAdmin);
        m
    }

    fn claims(extra: Value) -> Value {
        let mut c = json!({"sub": "u1", "iat": NOW, "exp": NOW + 60});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    }

    #[test]
    fn provider_roles_are_mapped_and_unrelated_groups_ignored() {
        let p = provider_principal(
            &claims(
                json!({"groups": ["everyone", "locus-admins"], "app_metadata": {"tenant": "acme"}}),
            ),
            &mapping(),
            NOW,
            0,
            3600,
        )
        .unwrap();
        assert_eq!(p.role, Role::TenantAdmin);
        assert_eq!(p.tenant.unwrap().as_str(), "acme");
        assert_eq!(p.subject, "u1");
    }

    #[test]
    fn a_partner_is_named_by_the_partner_claim_and_has_no_tenant() {
        let p = provider_principal(
            &claims(json!({"groups": "partner", "partner_id": "fleetco", "app_metadata": {"tenant": "acme"}})),
            &mapping(),
            NOW,
            0,
            3600,
        )
        .unwrap();
        assert_eq!(
            (p.role, p.subject.as_str(), p.tenant),
            (Role::Partner, "fleetco", None)
        );
    }

    #[test]
    fn a_role_claim_that_maps_to_two_roles_or_none_is_refused() {
        let err = provider_principal(
            &claims(json!({"groups": ["ops", "locus-admins"]})),
            &mapping(),
            NOW,
            0,
            3600,
        );
        assert!(matches!(err, Err(AuthError::AmbiguousRole(_))), "{err:?}");
        let err = provider_principal(&claims(json!({"groups": ["x"]})), &mapping(), NOW, 0, 3600);
        assert_eq!(err, Err(AuthError::UnknownRole("x".to_owned())));
        let err = provider_principal(&claims(json!({})), &mapping(), NOW, 0, 3600);
        assert_eq!(err, Err(AuthError::MissingClaim("groups".to_owned())));
    }

    #[test]
    fn a_tenant_admin_without_its_tenant_claim_is_refused() {
        let err = provider_principal(
            &claims(json!({"groups": "locus-admins"})),
            &mapping(),
            NOW,
            0,
            3600,
        );
        assert_eq!(
            err,
            Err(AuthError::MissingClaim("app_metadata.tenant".to_owned()))
        );
    }
}
