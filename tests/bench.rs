//! The bench's smoke run: a real server process, a few hundred real clients,
//! a few seconds of real writes. It checks behaviour — every signal reaches
//! every client that should get it — not speed.

use pgbroadcast::bench::{self, BenchArgs, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke_run_loses_nothing() {
    let out = tempfile::tempdir().unwrap();
    let mut args = BenchArgs::new(Scenario::Smoke);
    args.server_bin = Some(env!("CARGO_BIN_EXE_pgbroadcast").into());
    args.out = out.path().to_owned();
    args.entity_share = 0.25;
    let report = bench::run(args).await.expect("bench run");
    println!("{}", bench::table(&report));
    assert!(report.commits > 0);
    assert_eq!(report.lost, 0, "{report:#?}");
    assert_eq!(report.resyncs, 0);
    assert_eq!(report.client_errors, 0);
    assert!(
        report.deliveries > report.commits,
        "every commit reaches several clients"
    );
    assert!(report.latency.count > 0);
    assert!(out.path().join("smoke.json").is_file());
    let svg = std::fs::read_to_string(out.path().join("smoke.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
}
