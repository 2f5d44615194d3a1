//! A tenant's geofences (table `geofences`): a GeoJSON Polygon or MultiPolygon, or a circle,
//! under an id the tenant admin chooses. The admin API writes them in the tenant's scope,
//! with an audit row in the same transaction; the tracker reads one tenant's fences at a
//! time to build its index, and keeps where each device stands with each fence in
//! `geofence_states` (see the tracker's `fences` module).
//!
//! Geometries are checked by the caller (`locus_geo::Shape::from_geojson`) before they get
//! here: this module stores and returns them, it does not interpret them.

use chrono::{DateTime, Utc};
use locus_wire::{GeofenceId, TenantId};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use crate::audit::{self, AuditEntry};
use crate::registry::{Actor, Page};
use crate::scope::{Scope, begin};

/// What can go wrong with a geofence.
#[derive(Debug, thiserror::Error)]
pub enum GeofenceError {
    /// The tenant has no fence with this id.
    #[error("geofence not found")]
    NotFound,
    /// The tenant is not in the tenants table (a platform admin creates it).
    #[error("tenant not found")]
    TenantNotFound,
    /// PostgreSQL failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// The area of a fence, as stored.
#[derive(Debug, Clone, PartialEq)]
pub enum FenceArea {
    /// A GeoJSON geometry of type Polygon or MultiPolygon (`type` and `coordinates` only).
    Geometry(Value),
    /// Every point within `radius_m` metres of the centre.
    Circle {
        /// Latitude of the centre in degrees.
        lat: f64,
        /// Longitude of the centre in degrees.
        lon: f64,
        /// Radius in metres.
        radius_m: f64,
    },
}

/// A fence of a tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Geofence {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its id within the tenant.
    pub geofence_id: GeofenceId,
    /// Its display name.
    pub name: Option<String>,
    /// Its area.
    pub area: FenceArea,
    /// When it was first put.
    pub created_at: DateTime<Utc>,
    /// When it was last put.
    pub updated_at: DateTime<Utc>,
}

/// A fence without its area, as a listing shows it (one area can hold thousands of
/// positions: a page of them would be megabytes).
#[derive(Debug, Clone, PartialEq)]
pub struct GeofenceSummary {
    /// Its id within the tenant.
    pub geofence_id: GeofenceId,
    /// Its display name.
    pub name: Option<String>,
    /// `polygon` or `circle`.
    pub kind: &'static str,
    /// When it was first put.
    pub created_at: DateTime<Utc>,
    /// When it was last put.
    pub updated_at: DateTime<Utc>,
}

/// Result of [`put`].
#[derive(Debug, Clone, PartialEq)]
pub struct PutGeofenceOutcome {
    /// The fence as it is now.
    pub geofence: Geofence,
    /// Whether the tenant had no fence with this id before.
    pub created: bool,
}

/// The columns of a [`Geofence`], in the order [`geofence_row`] reads them.
const COLUMNS: &str = "tenant_id, geofence_id, name, geometry, center_lat, center_lon, radius_m, created_at, updated_at";

/// Largest geometry (serialized) an audit row carries whole; a larger one is audited by
/// its type and size. Audit rows go to the tenant-events topic, whose records have a size
/// bound, and a fence may have up to 10,000 positions (about 400 KB).
const AUDIT_GEOMETRY_BYTES: usize = 16 * 1024;

fn geofence_row(row: &PgRow) -> Result<Geofence, sqlx::Error> {
    let decode = |column: &str, e: locus_wire::IdError| sqlx::Error::ColumnDecode {
        index: column.into(),
        source: Box::new(e),
    };
    let geometry: Option<Value> = row.try_get("geometry")?;
    let area = match geometry {
        Some(g) => FenceArea::Geometry(g),
        // The table's check: no geometry means all three circle columns are set.
        None => FenceArea::Circle {
            lat: row.try_get("center_lat")?,
            lon: row.try_get("center_lon")?,
            radius_m: row.try_get("radius_m")?,
        },
    };
    Ok(Geofence {
        tenant_id: TenantId::parse(row.try_get::<String, _>("tenant_id")?)
            .map_err(|e| decode("tenant_id", e))?,
        geofence_id: GeofenceId::parse(row.try_get::<String, _>("geofence_id")?)
            .map_err(|e| decode("geofence_id", e))?,
        name: row.try_get("name")?,
        area,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// What an audit row says of a fence: all of it, but a large geometry only by its size.
fn audited(fence: &Geofence) -> Value {
    let area = match &fence.area {
        FenceArea::Geometry(g) => {
            let bytes = g.to_string().len();
            if bytes <= AUDIT_GEOMETRY_BYTES {
                json!({ "geometry": g })
            } else {
                json!({ "geometry": { "type": g["type"], "bytes": bytes } })
            }
        }
        FenceArea::Circle { lat, lon, radius_m } => {
            json!({ "circle": { "lat": lat, "lon": lon, "radius_m": radius_m } })
        }
    };
    let mut value = json!({
        "tenant_id": fence.tenant_id,
        "geofence_id": fence.geofence_id,
        "name": fence.name,
    });
    if let (Some(v), Value::Object(a)) = (value.as_object_mut(), area) {
        v.extend(a);
    }
    value
}

async fn locked(
    conn: &mut PgConnection,
    tenant: &TenantId,
    id: &GeofenceId,
) -> Result<Option<Geofence>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM geofences WHERE tenant_id = $1 AND geofence_id = $2 FOR UPDATE"
    ))
    .bind(tenant.as_str())
    .bind(id.as_str())
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(geofence_row)
    .transpose()
}

/// Creates or replaces `tenant`'s fence `id` (its area checked by the caller), with its
/// audit row in the same transaction. Replacing keeps the devices' states with the fence:
/// the next fix of each device decides whether it is still inside the new area.
pub async fn put(
    pool: &PgPool,
    actor: Actor<'_>,
    tenant: &TenantId,
    id: &GeofenceId,
    name: Option<&str>,
    area: &FenceArea,
) -> Result<PutGeofenceOutcome, GeofenceError> {
    let mut tx = begin(pool, Scope::Tenant(tenant)).await?;
    // Locked, so two concurrent puts audit the right `before`.
    let before = locked(&mut tx, tenant, id).await?;
    let (geometry, lat, lon, radius) = match area {
        FenceArea::Geometry(g) => (Some(g), None, None, None),
        FenceArea::Circle { lat, lon, radius_m } => (None, Some(*lat), Some(*lon), Some(*radius_m)),
    };
    let upserted = sqlx::query(&format!(
        "INSERT INTO geofences (tenant_id, geofence_id, name, geometry, center_lat, center_lon, radius_m) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (tenant_id, geofence_id) DO UPDATE \
           SET name = EXCLUDED.name, geometry = EXCLUDED.geometry, \
               center_lat = EXCLUDED.center_lat, center_lon = EXCLUDED.center_lon, \
               radius_m = EXCLUDED.radius_m, updated_at = now() \
         RETURNING {COLUMNS}"
    ))
    .bind(tenant.as_str())
    .bind(id.as_str())
    .bind(name)
    .bind(geometry)
    .bind(lat)
    .bind(lon)
    .bind(radius)
    .fetch_one(&mut *tx)
    .await;
    let geofence = match upserted {
        Ok(row) => geofence_row(&row)?,
        // geofences.tenant_id references tenants: no such tenant.
        Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => {
            return Err(GeofenceError::TenantNotFound);
        }
        Err(e) => return Err(e.into()),
    };
    audit::record(
        &mut tx,
        &AuditEntry {
            tenant: Some(tenant),
            actor: actor.subject,
            actor_role: actor.role,
            action: "geofence.set",
            target_kind: "geofence",
            target_id: id.as_str(),
            before: before.as_ref().map(audited),
            after: Some(audited(&geofence)),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(PutGeofenceOutcome {
        created: before.is_none(),
        geofence,
    })
}

/// `tenant`'s fence `id`.
pub async fn get(
    pool: &PgPool,
    tenant: &TenantId,
    id: &GeofenceId,
) -> Result<Geofence, GeofenceError> {
    let mut tx = begin(pool, Scope::Tenant(tenant)).await?;
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM geofences WHERE tenant_id = $1 AND geofence_id = $2"
    ))
    .bind(tenant.as_str())
    .bind(id.as_str())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(GeofenceError::NotFound)?;
    tx.commit().await?;
    Ok(geofence_row(&row)?)
}

/// A page of `tenant`'s fences by id, after `after`, without their areas.
pub async fn list(
    pool: &PgPool,
    tenant: &TenantId,
    after: Option<&GeofenceId>,
    limit: i64,
) -> Result<Page<GeofenceSummary>, GeofenceError> {
    let mut tx = begin(pool, Scope::Tenant(tenant)).await?;
    let rows = sqlx::query(
        "SELECT geofence_id, name, geometry IS NOT NULL AS polygon, created_at, updated_at \
         FROM geofences \
         WHERE tenant_id = $1 AND ($2::text IS NULL OR geofence_id > $2) \
         ORDER BY geofence_id LIMIT $3",
    )
    .bind(tenant.as_str())
    .bind(after.map(GeofenceId::as_str))
    .bind(limit + 1)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut items = rows
        .iter()
        .map(|row| {
            let id: String = row.try_get("geofence_id")?;
            Ok(GeofenceSummary {
                geofence_id: GeofenceId::parse(id).map_err(|e| sqlx::Error::ColumnDecode {
                    index: "geofence_id".into(),
                    source: Box::new(e),
                })?,
                name: row.try_get("name")?,
                kind: if row.try_get("polygon")? {
                    "polygon"
                } else {
                    "circle"
                },
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = items.len() > limit;
    items.truncate(limit);
    let next_after = more
        .then(|| items.last().map(|f| f.geofence_id.to_string()))
        .flatten();
    Ok(Page { items, next_after })
}

/// Removes `tenant`'s fence `id` and every device's state with it, with its audit row. A
/// device inside it gets no exit event: the fence is gone, not left. The tracker stops
/// checking the fence at its next fence refresh.
pub async fn delete(
    pool: &PgPool,
    actor: Actor<'_>,
    tenant: &TenantId,
    id: &GeofenceId,
) -> Result<Geofence, GeofenceError> {
    let mut tx = begin(pool, Scope::Tenant(tenant)).await?;
    let row = sqlx::query(&format!(
        "DELETE FROM geofences WHERE tenant_id = $1 AND geofence_id = $2 RETURNING {COLUMNS}"
    ))
    .bind(tenant.as_str())
    .bind(id.as_str())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(GeofenceError::NotFound)?;
    let geofence = geofence_row(&row)?;
    // States of a fence that is gone would make a fence put again under the same id start
    // from where devices stood with the old one.
    sqlx::query("DELETE FROM geofence_states WHERE tenant_id = $1 AND geofence_id = $2")
        .bind(tenant.as_str())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        &AuditEntry {
            tenant: Some(tenant),
            actor: actor.subject,
            actor_role: actor.role,
            action: "geofence.deleted",
            target_kind: "geofence",
            target_id: id.as_str(),
            before: Some(audited(&geofence)),
            after: None,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(geofence)
}

/// Every fence of `tenant`, with its area: what the tracker indexes. In the tenant's scope:
/// the tracker reads one tenant's fences at a time and needs no other's.
pub async fn all_of_tenant(pool: &PgPool, tenant: &TenantId) -> Result<Vec<Geofence>, sqlx::Error> {
    let mut tx = begin(pool, Scope::Tenant(tenant)).await?;
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM geofences WHERE tenant_id = $1 ORDER BY geofence_id"
    ))
    .bind(tenant.as_str())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    rows.iter().map(geofence_row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence(area: FenceArea) -> Geofence {
        Geofence {
            tenant_id: TenantId::parse("acme").unwrap(),
            geofence_id: GeofenceId::parse("depot").unwrap(),
            name: Some("Depot".into()),
            area,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn an_audit_row_has_a_small_geometry_whole_and_a_large_one_by_its_size() {
        let small = json!({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]});
        let a = audited(&fence(FenceArea::Geometry(small.clone())));
        assert_eq!(a["geometry"], small);
        assert_eq!(a["name"], "Depot");
        let ring: Vec<Value> = (0..2000)
            .map(|i| json!([f64::from(i) * 1e-4, 0.5]))
            .collect();
        let large = json!({"type": "Polygon", "coordinates": [ring]});
        let a = audited(&fence(FenceArea::Geometry(large)));
        assert_eq!(a["geometry"]["type"], "Polygon");
        assert!(a["geometry"]["bytes"].as_u64().unwrap() > AUDIT_GEOMETRY_BYTES as u64);
        assert!(a["geometry"].get("coordinates").is_none());
        let c = audited(&fence(FenceArea::Circle {
            lat: 1.0,
            lon: 2.0,
            radius_m: 50.0,
        }));
        assert_eq!(c["circle"]["radius_m"], 50.0);
    }
}
