//! The chaos harness, short: load through real gateway processes while they are SIGKILLed,
//! the PostgreSQL server restarts and the receiver flaps; no acknowledged event may be lost.
//! The long runs are `hookstream-chaos` (see the README's "Chaos" section).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use hookstream_e2e::chaos::{self, Backend, Config, Summary};
use hookstream_e2e::cluster::binary;

async fn gateway_binary() -> std::path::PathBuf {
    tokio::task::spawn_blocking(|| binary("hookstream-gateway"))
        .await
        .unwrap()
}

/// Short pauses, so that a run takes well under a minute.
fn short(mut config: Config) -> Config {
    config.rate = 50;
    config.between_faults = (Duration::from_millis(500), Duration::from_millis(1500));
    config.down_time = (Duration::from_millis(0), Duration::from_millis(500));
    config.pg_down_time = (Duration::from_secs(1), Duration::from_secs(6));
    config.drain_timeout = Duration::from_secs(45);
    config
}

fn check(summary: &Summary) {
    println!("{summary}");
    for line in summary.details() {
        println!("{line}");
    }
    assert!(summary.acknowledged > 0, "no event acknowledged: {summary}");
    assert_eq!(summary.lost, 0, "acknowledged events lost: {summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sigkills_and_a_flapping_receiver_lose_no_acknowledged_event() {
    let mut config = short(Config::new(Backend::Sqlite, gateway_binary().await));
    config.kill_cycles = 3;
    config.flap = true;
    let summary = chaos::run(&config).await.unwrap();
    check(&summary);
    assert_eq!(summary.kill_cycles, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replica_sigkills_and_a_database_restart_lose_no_acknowledged_event() {
    // The harness runs a PostgreSQL server of its own (a temporary HOOKSTREAM_PG_STATE and a
    // free HOOKSTREAM_PG_PORT), so the restart never disturbs the shared test server.
    let mut config = short(Config::new(Backend::Postgres, gateway_binary().await));
    config.replicas = 3;
    config.kill_cycles = 3;
    config.pg_restarts = 1;
    config.flap = true;
    let summary = chaos::run(&config).await.unwrap();
    check(&summary);
    assert_eq!((summary.kill_cycles, summary.pg_restarts), (3, 1));
}
