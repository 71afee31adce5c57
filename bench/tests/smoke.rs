//! Smoke version of the benchmark, run by the test suite on its own (scripts/test.sh
//! runs it after the node's tests, never beside them): 20 generated publishers for 5 s
//! through streamgate (and nginx-rtmp) to the sink; every stream must arrive, no
//! connection may fail, and relay delays must have been measured. And a short fleet
//! load simulation against a private PostgreSQL: every kind of statement ran, none
//! failed, and the server counted the rows.

use std::sync::Arc;
use std::time::Duration;

use streamgate_bench::flv_source::FlvSource;
use streamgate_bench::relay_run;
use streamgate_bench::servers::ServerKind;

fn small_flv() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("sgbench-smoke-{}.flv", std::process::id()));
    streamgate_bench::encode_flv(
        &path,
        "320x240",
        4,
        30,
        &["-b:v", "300k", "-preset", "ultrafast"],
        "48k",
    )
    .expect("test media (ffmpeg is required: scripts/setup-test-deps.sh installs it)");
    path
}

/// The SRT workload: generated SRT callers (ours, and libsrt's) through streamgate
/// (relayed to the sink as RTMP, delays measured) and the srt-live-transmit floor
/// (bytes counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_srt_publishers_reach_the_sink_through_streamgate_and_the_floor() {
    use streamgate_bench::srt_bench::{srt_run, Generator, SrtServer, TsSource};
    let path = small_flv();
    let source = Arc::new(TsSource::from_flv(&path, 30).unwrap());
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(path.with_extension("30s.ts"));
    for (kind, generator) in [
        (SrtServer::Streamgate, Generator::Native),
        (SrtServer::Streamgate, Generator::Libsrt),
        (SrtServer::Floor, Generator::Native),
    ] {
        let r = srt_run(
            kind,
            generator,
            10,
            source.clone(),
            100.0,
            Duration::from_secs(5),
            Duration::from_millis(10),
        )
        .await
        .unwrap();
        assert_eq!((r.connected, r.failed), (10, 0), "{}: {r:?}", kind.name());
        assert_eq!(r.relayed_streams, 10, "{}: {r:?}", kind.name());
        assert!(r.relayed_mbps > 1.0, "{}: {r:?}", kind.name());
        if kind == SrtServer::Streamgate {
            assert!(r.delay_samples > 100, "relay delay measured: {r:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_publishers_reach_the_sink_through_each_server() {
    let path = small_flv();
    let source = Arc::new(FlvSource::load(&path).unwrap());
    let _ = std::fs::remove_file(&path);
    for kind in [ServerKind::Streamgate, ServerKind::Nginx] {
        let r = relay_run(
            kind,
            20,
            source.clone(),
            100.0,
            Duration::from_secs(5),
            Duration::from_millis(20),
        )
        .await
        .unwrap();
        assert_eq!((r.connected, r.failed), (20, 0), "{}: {r:?}", kind.name());
        assert_eq!(
            r.relayed_streams,
            20,
            "{}: every stream arrived at the sink: {r:?}",
            kind.name()
        );
        assert!(r.relayed_mbps > 1.0, "{}: {r:?}", kind.name());
        assert!(
            r.delay_samples > 100,
            "{}: relay delay measured: {r:?}",
            kind.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_load_simulation_runs_every_statement_kind() {
    let report = streamgate_bench::fleet::run(streamgate_bench::fleet::FleetLoad {
        nodes: 2,
        channels_per_node: 10,
        heartbeat: Duration::from_millis(500),
        recheck: Duration::from_millis(500),
        dead_after_beats: 3,
        session: Duration::from_secs(5),
        warmup: Duration::from_millis(500),
        window: Duration::from_secs(3),
    })
    .await
    .expect("a private PostgreSQL (scripts/setup-test-deps.sh installs it)");
    report.print();
    assert_eq!(report.failed, 0);
    for s in &report.statements {
        assert!(s.per_second > 0.0, "{} never ran: {report:?}", s.kind);
    }
    // 2 nodes x 10 channels' last_seen every 0.5 s, plus the status writes.
    assert!(report.rows_written_per_second >= 20.0, "{report:?}");
}
