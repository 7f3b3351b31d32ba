//! Transforms cannot take the gateway down: hostile expressions run in worker processes under
//! a memory cap and a time limit that the gateway enforces, fail their delivery with the limit
//! they hit, and leave the gateway and its other routes alone.

// Test helpers unwrap like the tests themselves: a panic is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{Gateway, Receiver};
use serde_json::Value;

/// Hostile transforms, each on a Source of its own: (name, expression).
const HOSTILE: &[(&str, &str)] = &[
    ("range", r#"{"r": $count([1..10000000])}"#),
    ("replace", r#"{"r": $replace(s, "a", s)}"#),
    (
        "join",
        r#"{"r": $join($map([1..200000], function($v) { s }))}"#,
    ),
    (
        "recursion",
        r#"( $f := function($n) { $n = 0 ? 0 : 1 + $f($n - 1) }; {"r": $f(100000000)} )"#,
    ),
    (
        "crash",
        r#"{"r": $formatInteger(10 % 0, 'w'), "p": $pad("x", 1/0)}"#,
    ),
];

fn manifests(receiver: &Receiver) -> String {
    let mut text = String::new();
    for (name, expression) in HOSTILE {
        text.push_str(&format!(
            r#"
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: {name}, namespace: t}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: {name}, namespace: t}}
spec:
  type: http
  http: {{url: "{url}/{name}"}}
  retry: {{maxRetries: 0}}
  circuitBreaker: {{failureThreshold: 1000}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: {name}, namespace: t}}
spec:
  source: {name}
  destination: {name}
  transform:
    jsonata: |
      {expression}
"#,
            url = receiver.url,
        ));
    }
    text.push_str(&format!(
        r#"
---
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: good, namespace: t}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: good, namespace: t}}
spec:
  type: http
  http: {{url: "{url}/good"}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: good, namespace: t}}
spec: {{source: good, destination: good}}
"#,
        url = receiver.url
    ));
    text
}

/// Resident memory of `pid` and of its children, in bytes.
fn resident_with_children(pid: u32) -> u64 {
    let rss = |pid: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0)
            * 1024
    };
    let mut total = rss(&pid.to_string());
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
            continue;
        };
        // The parent pid is the second field after the command name's closing parenthesis.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            total += rss(&name);
        }
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_hostile_transforms_at_once_stay_within_limits_and_other_routes_keep_delivering() {
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&manifests(&receiver)).await;
    let pid = gw.pid();

    // Memory of the gateway and its workers, sampled all along.
    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::task::spawn_blocking(move || {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(resident_with_children(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    // A 50 KB string for the string blow-ups.
    let body = serde_json::json!({ "s": "a".repeat(50_000) }).to_string();
    let mut sends = Vec::new();
    for i in 0..50 {
        let (name, _) = HOSTILE[i % HOSTILE.len()];
        let (gw_base, body) = (gw.base.clone(), body.clone());
        sends.push(tokio::spawn(async move {
            let r = reqwest::Client::new()
                .post(format!("{gw_base}/v1/ingest/t/{name}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = r.json().await.unwrap();
            v["event_id"].as_str().unwrap().to_owned()
        }));
    }
    // Meanwhile the other route delivers.
    let started = Instant::now();
    let mut good = 0;
    while started.elapsed() < Duration::from_secs(3) {
        let r = gw.ingest("t", "good", r#"{"ok":true}"#, &[]).await;
        assert_eq!(r.status(), 200);
        good += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut hostile_ids = Vec::new();
    for s in sends {
        hostile_ids.push(s.await.unwrap());
    }
    let delivered_good = |r: &Receiver| {
        r.received()
            .iter()
            .filter(|x| x.uri.path() == "/good")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while delivered_good(&receiver) < good {
        assert!(
            Instant::now() < deadline,
            "the good route stalled: {} of {good}",
            delivered_good(&receiver)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every hostile delivery fails, saying which limit it hit; none reaches the receiver.
    let mut reasons = HashSet::new();
    for id in &hostile_ids {
        let event = gw
            .wait_event_status(id, "failed", Duration::from_secs(60))
            .await;
        let (code, attempts) = gw
            .get(&format!("/v1/delivery-attempts?event_id={id}"))
            .await;
        assert_eq!(code, StatusCode::OK);
        let list = attempts["delivery_attempts"].as_array().unwrap();
        assert_eq!(list.len(), 1, "{event}");
        let error = list[0]["error"].as_str().unwrap().to_owned();
        assert!(
            error.contains("memory limit")
                || error.contains("time limit")
                || error.contains("crashed")
                || error.contains("depth")
                || error.contains("refuses")
                || error.contains("not a finite")
                || error.contains("failed:"),
            "{error}"
        );
        reasons.insert(error.split(':').next().unwrap_or_default().to_owned());
        if error.contains("memory limit") {
            assert!(error.contains("64 MiB"), "{error}");
        }
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    assert!(
        receiver.received().iter().all(|x| x.uri.path() == "/good"),
        "no hostile transform produced a delivery"
    );
    let errors: Vec<String> = {
        let (_, list) = gw
            .get("/v1/delivery-attempts?status=failed&limit=100")
            .await;
        list["delivery_attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["error"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert!(
        errors.iter().any(|e| e.contains("memory limit (64 MiB)")),
        "the memory cap stopped something: {errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("time limit")),
        "the time limit stopped something: {errors:?}"
    );
    let peak_mib = peak.load(Ordering::Relaxed) / (1024 * 1024);
    assert!(
        peak_mib < 512,
        "gateway and workers peaked at {peak_mib} MiB"
    );
    eprintln!("peak resident memory of the gateway and its workers: {peak_mib} MiB; {good} good events delivered meanwhile; reasons {reasons:?}");

    // The gateway is still whole.
    let (code, _) = gw.get("/v1/events?limit=1").await;
    assert_eq!(code, StatusCode::OK);
}
