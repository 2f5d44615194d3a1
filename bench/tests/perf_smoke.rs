//! Smoke of `locus-bench run --smoke`: the no-op HTTP ceiling (in-process) and the Redis
//! XADD ceiling (real Redis at `LOCUS_REDIS_URL`). No timing assertions: the suite only
//! checks that the benchmark runs and writes its reports with non-zero figures.

use locus_bench::cmd::run::{RunArgs, run};

#[tokio::test]
async fn a_smoke_run_writes_reports_with_non_zero_figures() {
    let _ = locus_testkit::require_redis().await;
    let out = std::env::temp_dir().join(format!("locus-bench-smoke-{}", uuid::Uuid::new_v4()));
    let mut args = RunArgs::defaults();
    args.smoke = true;
    args.redis_url = locus_testkit::redis_url();
    args.out = out.clone();
    args.devices = 8;
    args.batch_size = 20;

    let report = run(&args, "smoke".into()).await.expect("the smoke run");

    assert!(
        report.noop_http.accepted_fixes > 0,
        "{:?}",
        report.noop_http
    );
    assert!(report.noop_http.fixes_per_sec > 0.0);
    assert!(report.noop_http.http_ms.count > 0);
    assert!(
        report.redis_xadd.fixes_per_sec > 0.0,
        "{:?}",
        report.redis_xadd
    );
    assert!(report.pipeline.is_none());
    let md = std::fs::read_to_string(out.join("run.md")).expect("run.md");
    assert!(md.contains("no-op handler"), "{md}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run.json")).expect("run.json"))
            .expect("JSON");
    assert!(json["redis_xadd"]["fixes"].as_u64().unwrap_or(0) > 0);
    let _ = std::fs::remove_dir_all(out);
}
