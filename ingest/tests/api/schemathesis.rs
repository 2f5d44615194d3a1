//! schemathesis against the running application: requests generated from /openapi.json,
//! once per role, checked for server errors and for answers that do not match the document.
//!
//! The CLI lives in `.locus/venv` (`./locus deps` installs it); the test fails, rather than
//! skips, when it is missing, so a machine without it cannot pass the suite by accident.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use locus_ingest::routes::ROLE_NAMES;
use locus_testkit as kit;

use crate::helpers::spawn_app;

/// Test cases per operation and generation phase. The coverage phase's boundary cases come
/// on top and grow with the operations: with 23 operations and four roles run at once, the
/// test takes about two minutes.
const MAX_EXAMPLES: &str = "5";
/// Longest run of one role before the test fails (a hung server, or far more operations).
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// The CLI `./locus deps` installs.
fn schemathesis_cli() -> PathBuf {
    let cli = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.locus/venv/bin/schemathesis");
    assert!(
        cli.is_file(),
        "schemathesis is not installed at {}: run `./locus deps`",
        cli.display()
    );
    cli
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_of_every_role_get_no_server_error_and_answers_that_match_the_document()
{
    let cli = schemathesis_cli();
    let (app, scope) = spawn_app().await;
    let tenant = kit::unique("fuzz-");
    let schema = app.url("/openapi.json");
    // One real session, so that the `{id}` operations get past 404 (the document has no
    // links schemathesis could follow from the start to them). Its device fuzzes as `device`.
    let device_token = scope.device_token(&tenant, "device-1").await;
    let session = app.session_id(&device_token).await;
    // The tool keeps a cache in `.schemathesis/` of its working directory: a directory of
    // its own keeps it out of the repository.
    let work = std::env::temp_dir().join(kit::unique("schemathesis-"));
    std::fs::create_dir_all(&work).expect("create the schemathesis directory");
    let config = work.join("schemathesis.toml");
    let parameters = format!("[parameters]\n\"path.id\" = \"{session}\"\n");
    std::fs::write(&config, parameters).expect("write the schemathesis config");
    let started = Instant::now();
    // The roles run at once, each in its own process (one worker each: the tool's threads
    // trip a CPython 3.11 `ast.parse` bug, "AST constructor recursion depth mismatch", in
    // hypothesis).
    let runs = ROLE_NAMES.map(|role| {
        let token = if role == "device" {
            device_token.clone()
        } else {
            kit::token(kit::JWT_SECRET, &tenant, &format!("{role}-1"), role, 3600)
        };
        let output = tokio::process::Command::new(&cli)
            .current_dir(&work)
            .arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(&schema)
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(["--checks", "not_a_server_error,response_schema_conformance"])
            // Examples from the document, then the boundary and negative cases of the
            // coverage phase, then random ones; no stateful phase (the document has no
            // links between operations).
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--max-examples", MAX_EXAMPLES])
            // A fixed seed: a failure reproduces with the same command.
            .args(["--seed", "9"])
            .args(["--workers", "1", "--request-timeout", "10"])
            .args(["--no-color", "--generation-database", "none"])
            .kill_on_drop(true)
            .output();
        async move {
            let output = tokio::time::timeout(RUN_LIMIT, output)
                .await
                .unwrap_or_else(|_| panic!("schemathesis as {role} ran for over {RUN_LIMIT:?}"))
                .expect("schemathesis starts");
            (role, output)
        }
    });
    let mut failures = Vec::new();
    for (role, output) in futures::future::join_all(runs).await {
        if !output.status.success() {
            failures.push(format!(
                "as {role} ({}):\n{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    eprintln!(
        "schemathesis: {} roles in {:.1} s",
        ROLE_NAMES.len(),
        started.elapsed().as_secs_f64()
    );
    app.stop().await;
    let _ = std::fs::remove_dir_all(&work);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
