//! Control-plane figures, measured against the real kube-apiserver of `e2e/kube-up`:
//!
//! 1. apply to first delivery: from `kubectl apply` of a Source, a Destination and a
//!    Connection to the first webhook sent to the new ingest URL reaching the receiver;
//! 2. reconciling 1,000 Connections: from the start of `kubectl apply` of one Source,
//!    10 Destinations and 1,000 Connections until all of them are Ready=True.
//!
//! `cargo bench -p hookstream-e2e --bench operator` prints the figures; nothing is asserted.
#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use hookstream_e2e::cluster::{Gateway, Namespace, Operator};
use hookstream_e2e::receiver::Receiver;

const CONNECTIONS: usize = 1000;
const DESTINATIONS: usize = 10;
const ROUNDS: usize = 5;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let ns = Namespace::create("bench");
    let receiver = Receiver::start().await;
    let gw = Gateway::start(&ns, "").await;
    let op = Operator::start(&ns, &gw.base).await;
    let http = reqwest::Client::new();

    let mut firsts = Vec::new();
    for round in 0..ROUNDS {
        let yaml = format!(
            r#"
apiVersion: hookstream.io/v1alpha1
kind: Source
metadata: {{name: src-{round}}}
spec: {{}}
---
apiVersion: hookstream.io/v1alpha1
kind: Destination
metadata: {{name: dst-{round}}}
spec:
  type: http
  http: {{url: "{}/r{round}"}}
---
apiVersion: hookstream.io/v1alpha1
kind: Connection
metadata: {{name: conn-{round}}}
spec: {{source: src-{round}, destination: dst-{round}}}
"#,
            receiver.url
        );
        let before = receiver.received().len();
        let started = Instant::now();
        ns.apply_ok(&yaml);
        let url = format!("{}/v1/ingest/{}/src-{round}", gw.base, ns.name);
        loop {
            // 404 until the gateway has the Source; then the delivery follows.
            let _ = http.post(&url).body(r#"{"bench":true}"#).send().await;
            if receiver.received().len() > before {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "never delivered"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        firsts.push(started.elapsed());
    }
    firsts.sort();
    println!(
        "apply to first delivery ({ROUNDS} rounds): median {:?}, min {:?}, max {:?}",
        firsts[ROUNDS / 2],
        firsts[0],
        firsts[ROUNDS - 1]
    );

    let mut yaml = String::from(
        "apiVersion: hookstream.io/v1alpha1\nkind: Source\nmetadata: {name: many}\nspec: {}\n",
    );
    for d in 0..DESTINATIONS {
        write!(
            yaml,
            "---\napiVersion: hookstream.io/v1alpha1\nkind: Destination\nmetadata: {{name: many-{d}}}\nspec: {{type: http, http: {{url: \"{}/many\"}}}}\n",
            receiver.url
        )
        .unwrap();
    }
    for c in 0..CONNECTIONS {
        write!(
            yaml,
            "---\napiVersion: hookstream.io/v1alpha1\nkind: Connection\nmetadata: {{name: many-{c}}}\nspec:\n  source: many\n  destination: many-{}\n  filters: [{{field: body.n, op: eq, value: {c}}}]\n  transform: {{jsonata: '{{\"n\": n, \"route\": {c}}}'}}\n",
            c % DESTINATIONS
        )
        .unwrap();
    }
    let started = Instant::now();
    let out = ns.apply(&yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied = started.elapsed();
    loop {
        let list = ns.kubectl_ok(&["get", "connections", "-o", "json"]);
        let list: serde_json::Value = serde_json::from_str(&list).unwrap();
        let ready = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                c["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("many-"))
                    && hookstream_e2e::cluster::condition(c, "Ready")
                        .is_some_and(|(s, ..)| s == "True")
            })
            .count();
        if ready == CONNECTIONS {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {ready} of {CONNECTIONS} Connections Ready after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_ready = started.elapsed();
    let metrics = reqwest::get(format!("{}/metrics", op.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let compile = metrics
        .lines()
        .filter(|l| l.starts_with("hookstream_operator_compile_duration_seconds_"))
        .filter(|l| l.contains("_sum") || l.contains("_count"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "{CONNECTIONS} Connections (with filters and JSONata transforms) over {DESTINATIONS} Destinations: kubectl apply took {applied:?}, all Ready=True after {all_ready:?} from the start of the apply"
    );
    println!("operator compilations so far: {compile}");
    let routed_url = format!("{}/v1/ingest/{}/many", gw.base, ns.name);
    let before = receiver.received().len();
    let r = http
        .post(&routed_url)
        .body(r#"{"n": 777}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let got = receiver.wait_for(before + 1, Duration::from_secs(10)).await;
    assert_eq!(
        got[before].json()["route"],
        777,
        "routed by the 777th filter"
    );
}
