//! Runs the official JSONata test suite through this crate's public API.
//!
//! The suite lives outside the project: the folder named by the environment
//! variable `HOOKSTREAM_JSONATA_SUITE`, or else `shared/conformance/jsonata`
//! beside the checkout (`/work/shared/...` for `/work/main`). Without it the
//! test prints one line saying it skipped the suite and how to provide it, and
//! passes: a missing suite says nothing about the code. Case format: see
//! `TESTSUITE.md` there. Each `groups/<group>/*.json` file holds one case or an
//! array of cases; the expression is `expr` or the file named by `expr-file`;
//! the input is `data`, or the dataset named by `dataset` (`null`: no input);
//! `bindings` become variables; the outcome is `result`, `undefinedResult`, or
//! an expected error `code` (also written `error.code`); `timelimit` and
//! `depth` set the limits; `unordered` compares the result as a multiset.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hookstream_transform::{EvalError, Expression, Limits};
use serde_json::Value;

/// Environment variable naming the suite's folder; it overrides [`DEFAULT_SUITE`].
const SUITE_ENV: &str = "HOOKSTREAM_JSONATA_SUITE";

/// Where the suite is looked for without [`SUITE_ENV`], relative to this crate.
const DEFAULT_SUITE: &str = "../../shared/conformance/jsonata";

/// The suite's folder, resolved when the test runs: `HOOKSTREAM_JSONATA_SUITE`
/// if set and not empty, else [`DEFAULT_SUITE`] under this crate's directory.
fn suite_root() -> PathBuf {
    match std::env::var_os(SUITE_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_SUITE),
    }
}

/// Measured through the public API: 1,677 passed, 7 failed, 2 not loadable
/// (of 1,686). The engine alone was measured at 1,680 with a throwaway
/// harness; the difference is the public API, not the engine:
///
/// - six cases evaluate with no input at all (`"dataset": null`), where
///   JSONata's input is undefined. [`Expression::evaluate`] takes a JSON value,
///   so the nearest it can pass is `null`, and `$`, `**`, `$string()`,
///   `$trim()`, `$base64encode()` and `$base64decode()` then see null instead
///   of nothing (descendent-operator/case016, encoding/case001 and case003,
///   function-string/case022, function-trim/case002, transform/case022);
/// - one is the engine's: tail-recursion/case006 (`$inf := function(){$inf()}`)
///   expects the depth error U1001, but the engine runs an endless tail call
///   as a loop, so the time limit stops it (D1012) instead.
///
/// The floor sits two under the measured figure: the two 10,000,000-item
/// range cases (range-operator/case021, case024) take one to four seconds of
/// their ten-second `timelimit` in an unoptimised build and could run over it
/// on an overloaded machine. Anything more is a regression in the engine or
/// in this crate's guards.
const PASS_FLOOR: usize = 1_675;

/// Time budget for cases that set no `timelimit`. The suite checks results,
/// not speed, and this test runs in an unoptimised build on shared machines,
/// so a generous budget keeps it from failing on load; the gateway's default
/// limit is exercised by `tests/hostile.rs`. Cases that do set `timelimit`
/// (and `depth`) get exactly what they ask for. Cases with no `depth` use the
/// gateway default, `Limits::default().max_depth`.
const UNTIMED_CASE_BUDGET: Duration = Duration::from_secs(10);

/// Relative tolerance for comparing numbers.
const REL_TOLERANCE: f64 = 1e-9;

struct Case {
    name: String,
    expr: String,
    input: Value,
    bindings: Vec<(String, Value)>,
    limits: Limits,
    expected: Expected,
    unordered: bool,
}

enum Expected {
    Value(Value),
    Undefined,
    Error(Option<String>),
}

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: Vec<String>,
    not_loadable: Vec<String>,
    errors_without_code: Vec<String>,
    slower_than_default: usize,
    slowest: Vec<(Duration, String)>,
}

#[test]
fn official_jsonata_suite() {
    let root = suite_root();
    if !root.is_dir() {
        // Straight to stderr rather than through `println!`, so that the line
        // shows even when the test harness captures output.
        let _ = writeln!(
            std::io::stderr(),
            "jsonata conformance: SKIPPED, suite not found at {}; to run it, set \
             {SUITE_ENV} to its folder or place it at ../shared/conformance/jsonata \
             beside the checkout",
            root.display()
        );
        return;
    }
    let groups = root.join("groups");
    assert!(
        groups.is_dir(),
        "{} is not the JSONata conformance suite: it has no groups/ folder",
        root.display()
    );
    let datasets = load_datasets(&root.join("datasets"));

    let mut tally = Tally::default();
    let started = Instant::now();
    let mut group_dirs: Vec<PathBuf> = read_dir_sorted(&groups)
        .into_iter()
        .filter(|p| p.is_dir())
        .collect();
    group_dirs.sort();
    for group in &group_dirs {
        for file in read_dir_sorted(group) {
            if file.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match load_cases(&file, &groups, &datasets) {
                Ok(cases) => {
                    for case in cases {
                        run_case(&case, &mut tally);
                    }
                }
                Err(why) => tally
                    .not_loadable
                    .push(format!("{}: {why}", relative(&file, &groups))),
            }
        }
    }

    let total = tally.passed + tally.failed.len() + tally.not_loadable.len();
    println!(
        "jsonata conformance: {} passed, {} failed, {} not loadable (of {} cases) in {:.1?}",
        tally.passed,
        tally.failed.len(),
        tally.not_loadable.len(),
        total,
        started.elapsed()
    );
    println!(
        "  {} expected-error cases passed on an error that carries no JSONata code; \
         {} cases took longer than the gateway's default time limit in this build",
        tally.errors_without_code.len(),
        tally.slower_than_default
    );
    for line in &tally.errors_without_code {
        println!("  passed without a code: {line}");
    }
    tally.slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
    for (elapsed, name) in tally.slowest.iter().take(5) {
        println!("  slow: {name} took {elapsed:.1?}");
    }
    for line in &tally.not_loadable {
        println!("  not loadable: {line}");
    }
    for line in tally.failed.iter().take(20) {
        println!("  FAILED {line}");
    }
    if tally.failed.len() > 20 {
        println!("  ... and {} more", tally.failed.len() - 20);
    }
    assert!(
        tally.passed >= PASS_FLOOR,
        "only {} cases passed; the floor is {PASS_FLOOR}",
        tally.passed
    );
}

fn run_case(case: &Case, tally: &mut Tally) {
    let started = Instant::now();
    let outcome = Expression::compile(&case.expr)
        .map_err(Outcome::Compile)
        .and_then(|expr| {
            let bindings: Vec<(&str, &Value)> =
                case.bindings.iter().map(|(k, v)| (k.as_str(), v)).collect();
            expr.evaluate(&case.input, &bindings, &case.limits)
                .map_err(Outcome::Eval)
        });
    let elapsed = started.elapsed();
    if elapsed > Limits::default().timeout {
        tally.slower_than_default += 1;
        tally.slowest.push((elapsed, case.name.clone()));
    }
    let verdict = match (&case.expected, &outcome) {
        (Expected::Error(code), Err(error)) => match (code, error.code()) {
            (Some(want), Some(got)) if !codes_match(want, got) => {
                Err(format!("expected error {want}, got {}", error.describe()))
            }
            (Some(want), None) => {
                tally.errors_without_code.push(format!(
                    "{} (expected {want}: {})",
                    case.name,
                    error.describe()
                ));
                Ok(())
            }
            _ => Ok(()),
        },
        (Expected::Error(code), Ok(value)) => Err(format!(
            "expected error {}, got {}",
            code.as_deref().unwrap_or("(any)"),
            show(value.as_ref())
        )),
        (_, Err(error)) => Err(format!("unexpected error {}", error.describe())),
        (Expected::Undefined, Ok(None)) => Ok(()),
        (Expected::Undefined, Ok(Some(v))) => Err(format!("expected undefined, got {v}")),
        (Expected::Value(want), Ok(got)) => {
            let equal = match got {
                Some(got) if case.unordered => unordered_equal(want, got),
                Some(got) => json_equal(want, got),
                None => false,
            };
            if equal {
                Ok(())
            } else {
                Err(format!("expected {want}, got {}", show(got.as_ref())))
            }
        }
    };
    match verdict {
        Ok(()) => tally.passed += 1,
        Err(why) => tally
            .failed
            .push(format!("{}: {} -- {why}", case.name, case.expr.trim())),
    }
}

enum Outcome {
    Compile(hookstream_transform::CompileError),
    Eval(EvalError),
}

impl Outcome {
    /// The JSONata code this failure stands for. The guard's own categories
    /// map to the codes the suite's runner uses for them.
    fn code(&self) -> Option<&str> {
        match self {
            Outcome::Compile(e) => e.code(),
            Outcome::Eval(EvalError::Timeout(_)) => Some("D1012"),
            Outcome::Eval(EvalError::DepthExceeded(_)) => Some("U1001"),
            Outcome::Eval(e) => e.code(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Outcome::Compile(e) => format!("(compile) {e}"),
            Outcome::Eval(e) => format!("({}) {e}", e.category()),
        }
    }
}

/// The suite's runner raises U1001 when its depth limit is hit; the engine
/// raises D1011 for the same limit when it enforces it itself.
fn codes_match(want: &str, got: &str) -> bool {
    want == got || (matches!(want, "U1001" | "D1011") && matches!(got, "U1001" | "D1011"))
}

fn show(value: Option<&Value>) -> String {
    value.map_or_else(|| "undefined".to_owned(), Value::to_string)
}

fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y || (x - y).abs() <= REL_TOLERANCE * x.abs().max(y.abs()),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// Arrays compared as multisets; anything else as `json_equal`.
fn unordered_equal(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Array(want), Value::Array(got)) if want.len() == got.len() => {
            let mut unused: Vec<&Value> = got.iter().collect();
            want.iter()
                .all(|w| match unused.iter().position(|g| json_equal(w, g)) {
                    Some(i) => {
                        unused.swap_remove(i);
                        true
                    }
                    None => false,
                })
        }
        _ => json_equal(want, got),
    }
}

fn read_dir_sorted(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    entries
}

fn relative(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn load_datasets(dir: &Path) -> BTreeMap<String, Value> {
    let mut datasets = BTreeMap::new();
    for path in read_dir_sorted(dir) {
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read dataset {}: {e}", path.display()));
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("dataset {} is not JSON: {e}", path.display()));
        datasets.insert(name.to_owned(), value);
    }
    assert!(!datasets.is_empty(), "no datasets in {}", dir.display());
    datasets
}

/// The cases in one file, or why the file cannot be used (counted as one
/// case that is not loadable).
fn load_cases(
    file: &Path,
    groups: &Path,
    datasets: &BTreeMap<String, Value>,
) -> Result<Vec<Case>, String> {
    let text = fs::read_to_string(file).map_err(|e| e.to_string())?;
    let parsed: Value = serde_json::from_str(&text).map_err(|e| format!("not strict JSON: {e}"))?;
    let (raw_cases, many) = match parsed {
        Value::Array(cases) => (cases, true),
        one => (vec![one], false),
    };
    let dir = file.parent().unwrap_or(groups);
    raw_cases
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let mut name = relative(file, groups);
            if many {
                name.push_str(&format!("[{i}]"));
            }
            parse_case(name, &raw, dir, datasets)
        })
        .collect()
}

fn parse_case(
    name: String,
    raw: &Value,
    dir: &Path,
    datasets: &BTreeMap<String, Value>,
) -> Result<Case, String> {
    let expr = match (raw.get("expr"), raw.get("expr-file")) {
        (Some(Value::String(expr)), _) => expr.clone(),
        (_, Some(Value::String(file))) => fs::read_to_string(dir.join(file))
            .map_err(|e| format!("{name}: expr-file {file}: {e}"))?,
        _ => return Err(format!("{name}: no expr or expr-file")),
    };
    // `data` (even null) is the input; otherwise a named dataset; a null
    // dataset means no input at all, which the public API (input is always a
    // JSON value) expresses as null.
    let input = match (raw.get("data"), raw.get("dataset")) {
        (Some(data), _) => data.clone(),
        (None, Some(Value::String(set))) => datasets
            .get(set)
            .cloned()
            .ok_or_else(|| format!("{name}: unknown dataset {set}"))?,
        _ => Value::Null,
    };
    let bindings = match raw.get("bindings") {
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => Vec::new(),
    };
    let defaults = Limits::default();
    let limits = Limits {
        timeout: raw
            .get("timelimit")
            .and_then(Value::as_u64)
            .map_or(UNTIMED_CASE_BUDGET, Duration::from_millis),
        max_depth: raw
            .get("depth")
            .and_then(Value::as_u64)
            .and_then(|d| usize::try_from(d).ok())
            .unwrap_or(defaults.max_depth),
    };
    let error_code = raw
        .get("code")
        .or_else(|| raw.get("error").and_then(|e| e.get("code")));
    let expected = if let Some(code) = error_code {
        Expected::Error(code.as_str().map(str::to_owned))
    } else if raw.get("error").is_some() {
        Expected::Error(None)
    } else if raw.get("undefinedResult").and_then(Value::as_bool) == Some(true) {
        Expected::Undefined
    } else if let Some(result) = raw.get("result") {
        Expected::Value(result.clone())
    } else {
        Expected::Undefined
    };
    Ok(Case {
        name,
        expr,
        input,
        bindings,
        limits,
        expected,
        unordered: raw.get("unordered").and_then(Value::as_bool) == Some(true),
    })
}
