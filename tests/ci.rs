//! `.ci/run`'s closing line counts every failure the runners report: failed
//! tests, test binaries that died, targets that did not compile, vitest
//! suites that failed to load, and steps `.ci/run` marked as failed. The
//! logs under `tests/fixtures/ci/` are real output of cargo and vitest.

use std::path::Path;
use std::process::Command;

fn summary(fixture: &str) -> String {
    summary_of(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/ci")
            .join(fixture),
    )
}

fn summary_of(log: &Path) -> String {
    let out = Command::new("awk")
        .arg("-f")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/summary"))
        .arg(log)
        .output()
        .expect("awk");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn a_test_binary_that_dies_counts_as_a_failure() {
    // One failed test in one binary; another binary aborted before its result.
    assert_eq!(summary("cargo-crash-and-failure.log"), "2 passed, 2 failed");
}

#[test]
fn targets_that_do_not_compile_count_as_failures() {
    assert_eq!(summary("cargo-compile-error.log"), "0 passed, 2 failed");
}

#[test]
fn a_vitest_suite_that_fails_to_load_counts_as_a_failure() {
    assert_eq!(
        summary("vitest-failed-suite-only.log"),
        "19 passed, 1 failed"
    );
    assert_eq!(
        summary("vitest-failed-suite-and-test.log"),
        "20 passed, 2 failed"
    );
}

#[test]
fn steps_marked_failed_count_too() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.log");
    std::fs::write(
        &log,
        "test result: ok. 5 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.1s\n\
         .ci/run: FAILED: cargo fmt --check\n",
    )
    .unwrap();
    assert_eq!(summary_of(&log), "5 passed, 1 failed");
}
