//! `pgbroadcast bench ARGS` is `pgbroadcast-bench ARGS`: the server binary
//! hands over to the bench binary beside it, arguments and exit code as they are.

mod common;

use std::process::Command;

#[test]
fn bench_help_is_the_bench_binarys_help() {
    let out = Command::new(common::server_bin())
        .args(["bench", "--help"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Usage: pgbroadcast bench"), "{stdout}");
    for flag in [
        "--scenario",
        "--target",
        "--live-timeout",
        "compare",
        "floor",
    ] {
        assert!(stdout.contains(flag), "{flag} in {stdout}");
    }
    let direct = Command::new(common::BENCH_BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&direct.stdout), stdout);
}

#[test]
fn bench_arguments_and_exit_code_are_passed_through() {
    // Both `pgbroadcast bench` and the bench's own binary refuse a target
    // without its database, with the same message and exit code.
    let args = [
        "--scenario",
        "smoke",
        "--target",
        "ws://127.0.0.1:1/ws/broadcast",
    ];
    let through = Command::new(common::server_bin())
        .arg("bench")
        .args(args)
        .env_remove("DATABASE_URL")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&through.stderr);
    assert_eq!(through.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--target needs --database-url"), "{stderr}");
    // A usage error is clap's exit code 2, from the bench's parser.
    let usage = Command::new(common::server_bin())
        .args(["bench", "--scenario", "nonsense"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&usage.stderr);
    assert_eq!(usage.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value 'nonsense' for '--scenario"),
        "{stderr}"
    );
}

#[test]
fn log_format_given_to_pgbroadcast_reaches_the_bench() {
    let out = Command::new(common::server_bin())
        .args(["--log-format", "json", "bench", "--scenario", "smoke"])
        .args(["--target", "ws://127.0.0.1:1/ws/broadcast"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("database-url"))
        .unwrap_or_default();
    let json: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(json["level"], "ERROR", "{json}");
}
