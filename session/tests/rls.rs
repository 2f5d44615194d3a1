//! Row-level security proofs against a real, fresh PostgreSQL database, connected as the
//! service role: the wall holds even for queries that forget their own tenant filter.

use chrono::Duration;
use locus_session::{Scope, SessionStore, begin};
use locus_wire::{DeviceId, TenantId};
use sqlx::PgPool;

/// A database where acme and globex each have one device with one session.
async fn two_tenants() -> (PgPool, locus_testkit::TestDatabase) {
    let db = locus_testkit::test_database().await;
    locus_testkit::register_device(&db.owner_url, "acme", "a1").await;
    locus_testkit::register_device(&db.owner_url, "globex", "g1").await;
    let pool = PgPool::connect(&db.url)
        .await
        .expect("connect as locus_app");
    let store = SessionStore::new(pool.clone());
    for (t, d) in [("acme", "a1"), ("globex", "g1")] {
        store
            .start(
                &TenantId::parse(t).unwrap(),
                &DeviceId::parse(d).unwrap(),
                Duration::minutes(5),
            )
            .await
            .expect("start");
    }
    (pool, db)
}

/// Every table that carries a tenant, with its tenant column.
const TENANT_TABLES: [(&str, &str); 9] = [
    ("tenants", "id"),
    ("devices", "tenant_id"),
    ("device_credentials", "tenant_id"),
    ("partner_grants", "tenant_id"),
    ("sinks", "tenant_id"),
    ("audit_log", "tenant_id"),
    ("sessions", "tenant_id"),
    ("session_event_outbox", "tenant_id"),
    ("partners", "id"),
];

#[tokio::test]
async fn a_query_with_no_tenant_set_reads_no_rows_of_any_table() {
    let (pool, _db) = two_tenants().await;
    for (table, _) in TENANT_TABLES {
        // Outside any scope, and in a plain transaction: no tenant set.
        let n: Result<i64, _> = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&pool)
            .await;
        match n {
            Ok(n) => assert_eq!(n, 0, "{table} showed {n} rows with no tenant set"),
            // partners is not granted to the service role at all.
            Err(e) => assert!(
                table == "partners" && e.to_string().contains("permission denied"),
                "{table}: {e}"
            ),
        }
    }
}

#[tokio::test]
async fn a_tenant_transaction_sees_only_its_rows_even_without_a_filter() {
    let (pool, _db) = two_tenants().await;
    let acme = TenantId::parse("acme").unwrap();
    let mut tx = begin(&pool, Scope::Tenant(&acme)).await.unwrap();
    // A buggy query: no tenant condition at all.
    let tenants: Vec<String> = sqlx::query_scalar("SELECT DISTINCT tenant_id FROM sessions")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(tenants, ["acme"]);
    let devices: Vec<String> = sqlx::query_scalar("SELECT id FROM devices")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(devices, ["a1"]);
    // Nor can it change another tenant's rows, or write rows for it.
    let changed = sqlx::query("UPDATE sessions SET fix_count = 99 WHERE tenant_id = 'globex'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 0);
    let forged = sqlx::query("INSERT INTO devices (tenant_id, id) VALUES ('globex', 'planted')")
        .execute(&mut *tx)
        .await;
    assert!(
        forged
            .as_ref()
            .is_err_and(|e| e.to_string().contains("row-level security")),
        "{forged:?}"
    );
}

#[tokio::test]
async fn a_partner_scope_sees_its_granted_tenants_and_the_system_scope_sees_all() {
    let (pool, _db) = two_tenants().await;
    let granted = [TenantId::parse("globex").unwrap()];
    let mut tx = begin(&pool, Scope::Tenants(&granted)).await.unwrap();
    let seen: Vec<String> = sqlx::query_scalar("SELECT tenant_id FROM sessions")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, ["globex"]);
    drop(tx);
    let mut tx = begin(&pool, Scope::Tenants(&[])).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 0, "no grants, no rows");
    drop(tx);
    let mut tx = begin(&pool, Scope::System).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 2);
    tx.commit().await.unwrap();
    // The system role ends with its transaction: the next one is back to no rows.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn the_service_role_is_refused_nothing_it_needs_and_the_superuser_is_refused_as_a_service() {
    let (pool, db) = two_tenants().await;
    locus_session::check_service_role(&pool)
        .await
        .expect("locus_app is an acceptable service role");
    let owner = PgPool::connect(&db.owner_url).await.unwrap();
    let refused = locus_session::check_service_role(&owner).await;
    assert!(
        matches!(
            refused,
            Err(locus_session::BootstrapError::PrivilegedRole { .. })
        ),
        "{refused:?}"
    );
    // Every tenant table has RLS enabled and forced.
    let unforced: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class WHERE relnamespace = 'public'::regnamespace \
         AND relkind = 'r' AND relname <> '_sqlx_migrations' \
         AND NOT (relrowsecurity AND relforcerowsecurity)",
    )
    .fetch_all(&owner)
    .await
    .unwrap();
    assert!(
        unforced.is_empty(),
        "tables without forced RLS: {unforced:?}"
    );
}
