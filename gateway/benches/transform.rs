//! What running transforms in worker processes costs per delivery: the samples' transform on
//! a typical order payload, evaluated in this process (`Expression::evaluate`, what the engine
//! itself costs) and through the sandbox (a worker process with its memory cap, the round
//! trip over its pipes included), one at a time and with as many at once as there are
//! workers. Prints microseconds per evaluation and CPU seconds per 1,000 (this process and
//! its workers).
//!
//! Run: `cargo bench -p hookstream-gateway --bench transform` (`BENCH_EVALUATIONS`, 20000).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use hookstream_transform::sandbox::{Sandbox, SandboxLimits, Stage};
use hookstream_transform::{Expression, Limits};
use serde_json::{json, Value};

const TRANSFORM: &str = r#"{
  "orderId": data.id,
  "total": data.amount / 100,
  "currency": $uppercase(data.currency),
  "receivedVia": $event.source
}"#;

/// CPU seconds (user + system) of this process and of its children that have exited or are
/// running, from /proc.
fn cpu_seconds() -> f64 {
    let ticks = |pid: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.to_owned();
                let f: Vec<u64> = rest
                    .split_whitespace()
                    .skip(11)
                    .take(4)
                    .filter_map(|v| v.parse().ok())
                    .collect();
                Some(f.iter().sum())
            })
            .unwrap_or(0)
    };
    let me = std::process::id();
    let mut total = ticks("self");
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(me) {
            total += ticks(&name);
        }
    }
    total as f64 / 100.0
}

fn input() -> (Value, Vec<(String, Value)>) {
    let body = json!({"type": "order.paid", "data": {"id": "ord_123", "amount": 4999, "currency": "eur", "items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}]}});
    let event =
        json!({"id": "evt_1", "source": "orders", "namespace": "shop", "body": body.clone()});
    (body, vec![("event".to_owned(), event)])
}

fn report(what: &str, n: u64, started: Instant, cpu_before: f64) {
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    println!(
        "{what}: {n} evaluations in {wall:.2} s = {:.1} us each, {:.0}/s, {:.3} CPU s per 1,000",
        wall * 1e6 / n as f64,
        n as f64 / wall,
        cpu * 1000.0 / n as f64
    );
}

#[tokio::main]
async fn main() {
    let n: u64 = std::env::var("BENCH_EVALUATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let (body, bindings) = input();

    let expression = Expression::compile(TRANSFORM).expect("the sample transform compiles");
    let refs: Vec<(&str, &Value)> = bindings.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let (started, cpu) = (Instant::now(), cpu_seconds());
    for _ in 0..n {
        let out = expression.evaluate(&body, &refs, &Limits::default());
        assert!(matches!(out, Ok(Some(_))));
    }
    report("in process (engine alone)", n, started, cpu);

    let program = PathBuf::from(env!("CARGO_BIN_EXE_hookstream-transform-worker"));
    let limits = SandboxLimits::default();
    let sandbox = Sandbox::new(program, limits);
    sandbox.warm_up().await.expect("the worker runs");
    let stage = || Stage {
        expression: TRANSFORM.to_owned(),
        bindings: bindings.clone(),
    };
    let (started, cpu) = (Instant::now(), cpu_seconds());
    for _ in 0..n {
        let out = sandbox.evaluate(body.clone(), vec![stage()]).await;
        assert!(matches!(out, Ok(Some(_))), "{out:?}");
    }
    report("sandbox, one at a time", n, started, cpu);

    let sandbox = Arc::new(sandbox);
    let (started, cpu) = (Instant::now(), cpu_seconds());
    let mut tasks = Vec::new();
    for _ in 0..limits.workers * 2 {
        let (sandbox, body, stage) = (sandbox.clone(), body.clone(), stage());
        let share = n / (limits.workers as u64 * 2);
        tasks.push(tokio::spawn(async move {
            for _ in 0..share {
                let out = sandbox.evaluate(body.clone(), vec![stage.clone()]).await;
                assert!(matches!(out, Ok(Some(_))), "{out:?}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    report(
        &format!("sandbox, {} at once", limits.workers * 2),
        n / (limits.workers as u64 * 2) * (limits.workers as u64 * 2),
        started,
        cpu,
    );
}
