//! A full disk under SQLite: ingest answers 503, `/readyz` fails and the failures are counted,
//! completions that cannot be written are kept, and when space comes back the gateway is
//! ready again by itself and delivers everything it acknowledged.
//!
//! It mounts a small tmpfs, so it needs root; the README's test command runs it with
//! `--include-ignored`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{metric, Answer, Gateway, Receiver};
use serde_json::Value;

/// A tmpfs of `megabytes`, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs needs root");
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn manifests(url: &str) -> String {
    common::single_route(&format!(
        r#"  type: http
  http: {{url: "{url}/hook", timeoutSeconds: 5}}
  retry: {{maxRetries: 20, backoff: fixed, intervals: [1s]}}
  circuitBreaker: {{failureThreshold: 1000}}"#
    ))
}

async fn ready(gw: &Gateway) -> u16 {
    reqwest::get(format!("{}/readyz", gw.base))
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: mounts a small tmpfs"]
async fn a_full_disk_fails_readiness_and_loses_nothing_when_space_returns() {
    let disk = SmallDisk::mount(10);
    // Space to give back later.
    let ballast = disk.dir.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 5 * 1024 * 1024]).unwrap();
    let receiver = Receiver::start().await;
    receiver.set_default(Answer::status(503));
    let database = format!(
        "sqlite://{}",
        disk.dir.path().join("hookstream.db").display()
    );
    let gw = Gateway::start_on(&manifests(&receiver.url), &database).await;

    // Large events until one no longer fits, then smaller ones until nothing does.
    let mut acknowledged = HashSet::new();
    let mut refused = false;
    let mut n = 0;
    for size in [64 * 1024, 4 * 1024, 64] {
        let pad = "x".repeat(size);
        refused = false;
        for _ in 0..400 {
            n += 1;
            let r = gw
                .ingest("t", "in", &format!(r#"{{"n":{n},"pad":"{pad}"}}"#), &[])
                .await;
            match r.status().as_u16() {
                200 => {
                    let body = r.json::<Value>().await.unwrap();
                    acknowledged.insert(body["event_id"].as_str().unwrap().to_owned());
                }
                503 => {
                    refused = true;
                    break;
                }
                other => panic!("ingest answered {other} on a filling disk"),
            }
        }
    }
    assert!(refused, "the disk never filled");
    assert!(!acknowledged.is_empty());
    let log = gw.log();
    let tail: String = log.lines().rev().take(8).collect::<Vec<_>>().join("\n");
    assert_eq!(
        ready(&gw).await,
        503,
        "not ready while writes fail:\n{tail}"
    );
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let failures = metric(
            &gw.metrics().await,
            "hookstream_gateway_storage_write_failures_total",
            &[],
        );
        if failures.is_some_and(|f| f > 0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "write failures not counted: {failures:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Space comes back, and so does the destination.
    std::fs::remove_file(&ballast).unwrap();
    receiver.set_default(Answer::status(200));
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready(&gw).await != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready again after space came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = gw.ingest("t", "in", r#"{"after":"space"}"#, &[]).await;
    let log = gw.log();
    let tail: String = log.lines().rev().take(6).collect::<Vec<_>>().join("\n");
    assert_eq!(r.status(), 200, "ingest once ready again:\n{tail}");
    acknowledged.insert(
        r.json::<Value>().await.unwrap()["event_id"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let delivered: HashSet<String> = receiver
            .received()
            .iter()
            .filter(|r| r.status == 200)
            .filter_map(|r| r.header("x-hookstream-event-id"))
            .collect();
        let missing: Vec<&String> = acknowledged.difference(&delivered).collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let (_, example) = gw.get(&format!("/v1/events/{}", missing[0])).await;
            panic!(
                "{} acknowledged events never delivered, like one with attempts {}",
                missing.len(),
                example["delivery_attempts"]
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
