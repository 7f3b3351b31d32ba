//! Guarded JSONata evaluation for hookstream transforms.
//!
//! This crate is the one place where the gateway evaluates user-written
//! [JSONata](https://jsonata.org) transforms on webhook payloads. Payloads are
//! attacker-controlled, so everything that touches the engine goes through
//! [`Expression`], which compiles an expression once and evaluates it any
//! number of times, from any thread, under guards.
//!
//! # Engine
//!
//! Expressions run on `jsonata-core` (2.2.13, default features off). It passes
//! the official JSONata test suite: `tests/conformance.rs` runs that suite
//! through this crate's public API, guards included, and measures 1,677 of
//! 1,686 cases passing. Of the other nine, two files are not strict JSON, six
//! cases need "no input at all", which an API taking a JSON value cannot
//! express, and one expects a depth error where the engine's time limit
//! fires (details in that test). The alternative, `jsonata-rs` 0.3.4,
//! measured about 1,132 of 1,686, panics on the parent operator `%`, and
//! grows its memory without bound when one parsed expression is evaluated
//! many times. `jsonata-core` does not grow: each
//! evaluation gets a fresh evaluator, and the parsed expression is only read.
//!
//! # Guards
//!
//! Every call of [`Expression::evaluate`]:
//!
//! - **is bounded in time and depth** by the engine's own cooperative limits
//!   (`EvaluatorOptions::timeout_ms`, checked at every evaluation step and in
//!   the engine's loops, error D1012; `max_stack_depth`, error D1011), set
//!   from [`Limits`]. No thread is spawned per evaluation. The time check is
//!   cooperative: one built-in call over a very large sequence (a range may
//!   hold up to 10,000,000 items) runs to its end before the check sees the
//!   deadline.
//! - **cannot overflow the native stack** through evaluation: the engine runs
//!   every nesting level through `stacker`, moving to a heap-allocated stack
//!   segment when the thread stack runs low, and frees deep values without
//!   recursion. Values crossing this crate's boundary are limited to
//!   [`MAX_VALUE_NESTING`] levels, so converting them cannot overflow either.
//! - **guards four built-ins** that attacker data can make crash, hang or
//!   exhaust the process (`data.a % data.b` is NaN when `b` is 0):
//!   `$formatInteger` with NaN or Infinity and a words picture
//!   (`$formatInteger(10 % 0, 'w')`) recurses without end inside the engine
//!   and overflows the stack, which aborts the process and cannot be caught;
//!   `$formatNumber` with Infinity and an exponent picture loops forever
//!   inside one call, out of the time limit's reach; `$formatInteger` with a
//!   huge number and a roman picture, `$pad` with an infinite or huge width,
//!   and `$fromMillis` with a huge picture width build strings big enough to
//!   exhaust memory. Each evaluation registers replacements that reject
//!   those arguments with an ordinary error and run the engine's own built-in
//!   on everything else, and compilation routes direct calls so that the
//!   replacements also see the context value the built-ins may read (see the
//!   `guard` module).
//! - **runs under [`std::panic::catch_unwind`]**: a panic inside the engine
//!   (there are known ones in date and number picture handling) comes back as
//!   [`EvalError::Panicked`] and never unwinds into the caller. This needs
//!   `panic = "unwind"`, which the crate enforces at compile time.
//!
//! Not bounded here: memory in general. Beyond the guarded built-ins, one
//! step can allocate what it is asked for (a 10,000,000-item range is a few
//! hundred megabytes), and repeated string doubling grows until the time
//! check stops it.

use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use jsonata_core::ast::AstNode;
use jsonata_core::evaluator::{Context, Evaluator, EvaluatorError, EvaluatorOptions};
use jsonata_core::parser;
use jsonata_core::value::{with_stack, JValue};
use serde_json::Value;

mod guard;
pub mod sandbox;

// `catch_unwind` is how a panic in the engine is turned into an error. With
// `panic = "abort"` every such panic would end the gateway instead.
#[cfg(panic = "abort")]
compile_error!("hookstream-transform relies on catching panics; build with panic = \"unwind\"");

/// The deepest nesting of arrays and objects accepted in an input, a binding
/// or a result. Payloads parsed by `serde_json` are at most 128 levels deep,
/// so this only rejects values built to be pathological. It keeps results
/// shallow enough for callers to drop and serialize recursively on an
/// ordinary thread stack.
pub const MAX_VALUE_NESTING: usize = 512;

/// Largest absolute value `$formatInteger` formats as roman numerals. The
/// engine writes one `M` per thousand, so this bounds the result to about
/// ten thousand characters; larger values get an error instead of a string
/// big enough to exhaust memory.
pub const MAX_ROMAN_NUMERAL: f64 = 10_000_000.0;

/// Largest width, in characters, that `$pad` pads to and that a `$fromMillis`
/// picture may ask a component to be padded to. Wider requests get an error
/// instead of a string big enough to exhaust memory.
pub const MAX_PAD_WIDTH: f64 = 1_000_000.0;

/// Evaluation limits applied to one call of [`Expression::evaluate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock budget for one evaluation. Exceeding it yields
    /// [`EvalError::Timeout`]. Enforced cooperatively at millisecond
    /// granularity (rounded up).
    pub timeout: Duration,
    /// Maximum evaluation nesting depth (each nested expression or function
    /// call is a level). Exceeding it yields [`EvalError::DepthExceeded`].
    pub max_depth: usize,
}

impl Default for Limits {
    /// 100 ms and depth 200: enough for realistic transforms (the official
    /// suite's recursive cases ask for depths of 300 to 500 explicitly), small
    /// enough that a runaway expression costs little.
    fn default() -> Self {
        Limits {
            timeout: Duration::from_millis(100),
            max_depth: 200,
        }
    }
}

/// A JSONata expression that failed to compile.
///
/// `Display` gives the engine's message followed by where the error was
/// found, e.g. `S0203: Expected RightParen before end of expression at
/// position 2 (line 1, column 2)`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {position} (line {line}, column {column})")]
pub struct CompileError {
    message: String,
    position: usize,
    line: usize,
    column: usize,
}

impl CompileError {
    /// The engine's description of the error, without the position.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The JSONata error code (`S0201`, ...) in the message, if there is one.
    pub fn code(&self) -> Option<&str> {
        find_error_code(&self.message)
    }

    /// Where the error was found, as a count of characters from the start of
    /// the source: the end of the first piece of the source that already
    /// fails this way (as JSONata reports positions), or the end of the
    /// source when it ends too early.
    pub fn position(&self) -> usize {
        self.position
    }

    /// 1-based line of [`position`](Self::position).
    pub fn line(&self) -> usize {
        self.line
    }

    /// 1-based column of [`position`](Self::position) within its line.
    pub fn column(&self) -> usize {
        self.column
    }
}

/// Why an evaluation produced no value.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The evaluation ran longer than [`Limits::timeout`] (the limit is
    /// carried).
    #[error("evaluation timed out after {0:?}")]
    Timeout(Duration),
    /// The evaluation nested deeper than [`Limits::max_depth`] (the limit is
    /// carried), typically runaway recursion.
    #[error("evaluation nested deeper than {0} levels")]
    DepthExceeded(usize),
    /// The engine panicked; the panic was caught and its message is carried.
    #[error("evaluation panicked: {0}")]
    Panicked(String),
    /// Any other failure: a JSONata runtime error (type errors, `$error`,
    /// ...), a value too deeply nested to cross the boundary, or a result
    /// JSON cannot hold.
    #[error("{message}")]
    Failed {
        /// The JSONata error code (`T2001`, `D3001`, ...) when the message
        /// carries one.
        code: Option<String>,
        /// The full message.
        message: String,
    },
}

impl EvalError {
    /// A short, stable label for metrics and logs: `"timeout"`, `"depth"`,
    /// `"panic"` or `"error"`.
    pub fn category(&self) -> &'static str {
        match self {
            EvalError::Timeout(_) => "timeout",
            EvalError::DepthExceeded(_) => "depth",
            EvalError::Panicked(_) => "panic",
            EvalError::Failed { .. } => "error",
        }
    }

    /// The JSONata error code of a [`EvalError::Failed`], if it has one.
    pub fn code(&self) -> Option<&str> {
        match self {
            EvalError::Failed { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    fn failed(message: String) -> Self {
        EvalError::Failed {
            code: find_error_code(&message).map(str::to_owned),
            message,
        }
    }
}

/// A compiled JSONata expression.
///
/// Cheap to clone (the parsed form is shared behind an `Arc`), `Send + Sync`,
/// and reusable for any number of evaluations: evaluation only reads the
/// parsed form, and everything an evaluation builds is dropped when it ends.
#[derive(Clone)]
pub struct Expression {
    inner: Arc<Compiled>,
}

struct Compiled {
    source: String,
    /// The parsed expression, with direct calls of guarded built-ins routed
    /// to their context-taking replacements (see the `guard` module).
    ast: AstNode,
    /// The parsed expression as written, when routing changed it. Used when a
    /// caller's binding shadows a guarded built-in's name, because the engine
    /// resolves such a call to the binding.
    unrouted: Option<AstNode>,
}

impl std::fmt::Debug for Expression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Expression")
            .field(&self.inner.source)
            .finish()
    }
}

impl Expression {
    /// Parse `source`. A syntax error is a [`CompileError`] that says what is
    /// wrong and where.
    pub fn compile(source: &str) -> Result<Expression, CompileError> {
        // The parser bounds its own nesting depth and grows its stack with
        // `stacker`; the panic guard is for anything it missed.
        let parsed = panic::catch_unwind(|| parser::parse(source));
        match parsed {
            Ok(Ok(ast)) => {
                let (ast, unrouted) = guard::route_calls(ast);
                Ok(Expression {
                    inner: Arc::new(Compiled {
                        source: source.to_owned(),
                        ast,
                        unrouted,
                    }),
                })
            }
            Ok(Err(error)) => Err(compile_error(source, &error.to_string())),
            Err(payload) => Err(compile_error(
                source,
                &format!("the parser panicked: {}", panic_message(payload.as_ref())),
            )),
        }
    }

    /// Functions this expression calls that would fail on every event: neither JSONata
    /// built-ins, nor in `bound` (names the caller binds, without the `$`), nor defined in
    /// the expression itself. A misspelling such as `$upercase` is found here, at compile
    /// time, instead of failing each evaluation.
    pub fn unknown_functions(&self, bound: &[&str]) -> Vec<String> {
        let ast = self.inner.unrouted.as_ref().unwrap_or(&self.inner.ast);
        guard::unknown_calls(ast, bound)
    }

    /// The source text this expression was compiled from.
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// Evaluate against `input`, with extra variables: each `(name, value)`
    /// binds `$name` (give names without the `$`, e.g. `"headers"`).
    ///
    /// Returns `Ok(None)` when the expression yields nothing (JSONata's
    /// undefined). Runs within `limits`, and never panics: see the crate
    /// documentation for the guards.
    pub fn evaluate(
        &self,
        input: &Value,
        bindings: &[(&str, &Value)],
        limits: &Limits,
    ) -> Result<Option<Value>, EvalError> {
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            self.evaluate_unguarded(input, bindings, limits)
        }));
        match outcome {
            Ok(result) => result,
            Err(payload) => Err(EvalError::Panicked(panic_message(payload.as_ref()))),
        }
    }

    fn evaluate_unguarded(
        &self,
        input: &Value,
        bindings: &[(&str, &Value)],
        limits: &Limits,
    ) -> Result<Option<Value>, EvalError> {
        let data = to_jvalue(input, 0)?;
        let mut context = Context::new();
        for (name, value) in bindings {
            context.bind((*name).to_owned(), to_jvalue(value, 0)?);
        }
        let options = EvaluatorOptions {
            timeout_ms: Some(timeout_millis(limits.timeout)),
            max_stack_depth: Some(limits.max_depth),
            ..EvaluatorOptions::default()
        };
        let mut evaluator = Evaluator::with_options(context, options);
        guard::register(&mut evaluator).map_err(|e| EvalError::failed(e.message().to_owned()))?;
        let shadowed = bindings.iter().any(|(name, _)| guard::is_guarded(name));
        let ast = match (&self.inner.unrouted, shadowed) {
            (Some(unrouted), true) => unrouted,
            _ => &self.inner.ast,
        };
        let result = evaluator
            .evaluate(ast, &data)
            .map_err(|e| classify(&e, limits))?;
        from_jvalue(&result, 0)
    }
}

/// The engine's timeout is whole milliseconds; round up so a limit is never
/// shortened.
fn timeout_millis(timeout: Duration) -> u64 {
    let millis = timeout.as_nanos().div_ceil(1_000_000);
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// Turn an engine error into an [`EvalError`], recognising the engine's own
/// limit errors: D1012 (timeout), D1011 (`max_stack_depth`) and U1001 (its
/// built-in depth backstop). User code cannot forge these codes: `$error`
/// and `$assert` messages carry codes of their own in front.
fn classify(error: &EvaluatorError, limits: &Limits) -> EvalError {
    match error.code() {
        Some("D1012") => EvalError::Timeout(limits.timeout),
        Some("D1011") | Some("U1001") => EvalError::DepthExceeded(limits.max_depth),
        _ => EvalError::failed(error.message().to_owned()),
    }
}

/// The first JSONata-style error code (`X9999:`) in `message`, at its start
/// or after a space (parser messages can carry a prefix such as
/// `Invalid syntax: `).
fn find_error_code(message: &str) -> Option<&str> {
    let bytes = message.as_bytes();
    (0..bytes.len().saturating_sub(5))
        .filter(|&i| i == 0 || bytes[i - 1] == b' ')
        .find(|&i| {
            bytes[i].is_ascii_uppercase()
                && bytes[i + 1..i + 5].iter().all(u8::is_ascii_digit)
                && bytes[i + 5] == b':'
        })
        .and_then(|i| message.get(i..i + 5))
}

/// Build a [`CompileError`] for `source` from the parser's message, finding
/// the position the parser does not report.
///
/// The parser reads left to right and stops at the first error, so the
/// shortest prefix of the source that fails with the same message ends where
/// the error is (a binary search over character boundaries). Errors that mean
/// the source ended too early are placed at its end, since every shorter
/// prefix also ends too early.
fn compile_error(source: &str, message: &str) -> CompileError {
    let boundaries: Vec<usize> = source
        .char_indices()
        .map(|(i, _)| i)
        .skip(1)
        .chain(std::iter::once(source.len()))
        .collect();
    let ends_early = message.contains("end of expression");
    let same_error = |chars: usize| -> bool {
        let end = boundaries.get(chars - 1).copied().unwrap_or(source.len());
        let prefix = source.get(..end).unwrap_or(source);
        panic::catch_unwind(|| parser::parse(prefix))
            .ok()
            .and_then(Result::err)
            .is_some_and(|e| e.to_string() == message)
    };
    let position = if ends_early || boundaries.is_empty() {
        boundaries.len()
    } else {
        // Smallest `chars` in 1..=len with `same_error(chars)`; the full
        // source is the fallback.
        let (mut low, mut high) = (1, boundaries.len());
        while low < high {
            let mid = low + (high - low) / 2;
            if same_error(mid) {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        low
    };
    let before = source.chars().take(position);
    let (mut line, mut column) = (1, 0);
    for c in before {
        if c == '\n' {
            line += 1;
            column = 0;
        } else {
            column += 1;
        }
    }
    CompileError {
        message: message.to_owned(),
        position,
        line,
        column: column.max(1),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

fn too_deep() -> EvalError {
    EvalError::Failed {
        code: None,
        message: format!("value nested deeper than {MAX_VALUE_NESTING} levels"),
    }
}

/// Convert a JSON value into the engine's value type. Each level runs through
/// the engine's `with_stack`, which moves to a heap-allocated stack segment
/// when the thread's stack runs low, so any thread can convert the deepest
/// value allowed.
fn to_jvalue(value: &Value, depth: usize) -> Result<JValue, EvalError> {
    if depth > MAX_VALUE_NESTING {
        return Err(too_deep());
    }
    with_stack(|| to_jvalue_level(value, depth))
}

fn to_jvalue_level(value: &Value, depth: usize) -> Result<JValue, EvalError> {
    Ok(match value {
        Value::Null => JValue::Null,
        Value::Bool(b) => JValue::Bool(*b),
        // Without serde_json's arbitrary-precision feature every number has
        // an f64 form; large integers round as they do in JavaScript.
        Value::Number(n) => JValue::Number(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => JValue::string(s.as_str()),
        Value::Array(items) => JValue::array(
            items
                .iter()
                .map(|item| to_jvalue(item, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => JValue::object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), to_jvalue(v, depth + 1)?)))
                .collect::<Result<_, EvalError>>()?,
        ),
    })
}

/// Convert an evaluation result into JSON. Undefined is `None`; NaN and
/// Infinity, which JSON cannot hold, are an error (D1001, JSONata's "number
/// out of range"); functions become `""`, as the engine's own serializer and
/// JSONata's `$string` render them. Undefined inside an object drops the key,
/// inside an array becomes `null` (as `JSON.stringify` does). Stack use as in
/// [`to_jvalue`].
fn from_jvalue(value: &JValue, depth: usize) -> Result<Option<Value>, EvalError> {
    if depth > MAX_VALUE_NESTING {
        return Err(too_deep());
    }
    with_stack(|| from_jvalue_level(value, depth))
}

fn from_jvalue_level(value: &JValue, depth: usize) -> Result<Option<Value>, EvalError> {
    Ok(Some(match value {
        JValue::Undefined => return Ok(None),
        JValue::Null => Value::Null,
        JValue::Bool(b) => Value::Bool(*b),
        JValue::Number(n) => number_to_json(*n)?,
        JValue::String(s) => Value::String(s.to_string()),
        JValue::Array(items) => {
            if items.sequence && items.is_empty() {
                return Ok(None);
            }
            Value::Array(
                items
                    .iter()
                    .map(|item| Ok(from_jvalue(item, depth + 1)?.unwrap_or(Value::Null)))
                    .collect::<Result<_, EvalError>>()?,
            )
        }
        JValue::Object(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (key, item) in map.iter() {
                if let Some(item) = from_jvalue(item, depth + 1)? {
                    out.insert(key.clone(), item);
                }
            }
            Value::Object(out)
        }
        JValue::Lambda(_) | JValue::Builtin { .. } | JValue::Regex { .. } => {
            Value::String(String::new())
        }
    }))
}

fn number_to_json(n: f64) -> Result<Value, EvalError> {
    if !n.is_finite() {
        return Err(EvalError::failed(format!(
            "D1001: Number out of range: the result holds {n}, which JSON cannot represent"
        )));
    }
    // Whole numbers in the exactly representable range become JSON integers,
    // as JavaScript prints them.
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.fract() == 0.0 && n.abs() < EXACT {
        return Ok(Value::from(n as i64));
    }
    Ok(serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(source: &str, input: &Value) -> Result<Option<Value>, EvalError> {
        Expression::compile(source)
            .expect("test expression compiles")
            .evaluate(input, &[], &Limits::default())
    }

    #[test]
    fn expression_is_send_sync_and_cheap_to_clone() {
        fn assert_send_sync<T: Send + Sync + Clone>() {}
        assert_send_sync::<Expression>();
        let e = Expression::compile("a + 1").expect("compiles");
        let e2 = e.clone();
        assert!(Arc::ptr_eq(&e.inner, &e2.inner));
        assert_eq!(e2.source(), "a + 1");
    }

    #[test]
    fn evaluates_paths_and_arithmetic() {
        let input = json!({"order": {"items": [{"price": 2, "qty": 3}, {"price": 1.5, "qty": 2}]}});
        let total = eval("$sum(order.items.(price * qty))", &input).expect("evaluates");
        assert_eq!(total, Some(json!(9)));
    }

    #[test]
    fn bindings_are_visible_as_variables() {
        let expr =
            Expression::compile(r#"{"sig": $headers."x-signature", "id": $event.id, "n": a}"#)
                .expect("compiles");
        let headers = json!({"x-signature": "abc"});
        let event = json!({"id": 42});
        let result = expr
            .evaluate(
                &json!({"a": 1}),
                &[("headers", &headers), ("event", &event)],
                &Limits::default(),
            )
            .expect("evaluates");
        assert_eq!(result, Some(json!({"sig": "abc", "id": 42, "n": 1})));
    }

    #[test]
    fn bindings_do_not_leak_between_evaluations() {
        let expr = Expression::compile("$headers").expect("compiles");
        let headers = json!({"a": 1});
        let with = expr
            .evaluate(&json!({}), &[("headers", &headers)], &Limits::default())
            .expect("evaluates");
        assert_eq!(with, Some(headers.clone()));
        let without = expr
            .evaluate(&json!({}), &[], &Limits::default())
            .expect("evaluates");
        assert_eq!(without, None);
    }

    #[test]
    fn undefined_yields_none() {
        assert_eq!(eval("missing.field", &json!({"a": 1})).expect("ok"), None);
        assert_eq!(eval("a[$ > 5]", &json!({"a": [1, 2]})).expect("ok"), None);
        assert_eq!(eval("null", &json!({})).expect("ok"), Some(Value::Null));
    }

    #[test]
    fn compile_error_says_what_and_where() {
        let err = Expression::compile("a.b +* 2").expect_err("syntax error");
        let text = err.to_string();
        assert!(text.contains("position"), "{text}");
        assert!(text.contains("line 1"), "{text}");
        assert_eq!(err.code(), Some("S0201"));
        assert_eq!(err.position(), 8, "{text}");

        let err = Expression::compile("(\n  a.b\n  c").expect_err("syntax error");
        assert_eq!((err.line(), err.column()), (3, 3), "{err}");

        let err = Expression::compile("items[0").expect_err("ends early");
        assert_eq!(err.position(), 7, "{err}");
        assert!(err.to_string().contains("at position 7"), "{err}");
    }

    #[test]
    fn runtime_errors_carry_codes() {
        let err = eval("'a' + 1", &json!({})).expect_err("type error");
        assert_eq!(err.category(), "error");
        assert_eq!(err.code(), Some("T2001"));
        let err = eval("$error('boom')", &json!({})).expect_err("user error");
        assert!(err.to_string().contains("boom"), "{err}");
        // User-raised errors cannot pass for the engine's limit errors.
        for forged in ["$error('D1012: fake')", "$assert(false, 'D1011: fake')"] {
            let err = eval(forged, &json!({})).expect_err("user error");
            assert_eq!(err.category(), "error", "{forged}: {err:?}");
        }
    }

    #[test]
    fn non_finite_results_are_errors() {
        let input = json!({"a": 10, "b": 0});
        let err = eval("{'x': a / b}", &input).expect_err("infinity");
        assert_eq!(err.code(), Some("D1001"), "{err}");
    }

    #[test]
    fn format_integer_guard_keeps_normal_results() {
        let input = json!({"a": 10, "b": 0});
        assert_eq!(
            eval("$formatInteger(123, 'w')", &input).expect("ok"),
            Some(json!("one hundred and twenty-three"))
        );
        assert_eq!(
            eval("$formatInteger(1999, 'I')", &input).expect("ok"),
            Some(json!("MCMXCIX"))
        );
        assert_eq!(
            eval("$formatInteger(undefined, '0')", &input).expect("ok"),
            None
        );
        let err = eval("$formatInteger(a % b, 'w')", &input).expect_err("NaN");
        assert_eq!(err.code(), Some("D3001"), "{err}");
        let err = eval("$formatInteger(1e15, 'i')", &input).expect_err("huge roman");
        assert_eq!(err.category(), "error");
    }

    #[test]
    fn guarded_builtins_keep_the_context_form() {
        let input = json!({"name": "ab", "qty": 3, "a": 10, "b": 0});
        assert_eq!(
            eval("name.$pad(4)", &input).expect("ok"),
            Some(json!("ab  "))
        );
        assert_eq!(
            eval("name.$pad(-4, '#')", &input).expect("ok"),
            Some(json!("##ab"))
        );
        assert_eq!(
            eval("qty.$formatInteger('w')", &input).expect("ok"),
            Some(json!("three"))
        );
        assert_eq!(
            eval("name ~> $pad(3)", &input).expect("ok"),
            Some(json!("ab "))
        );
        assert_eq!(
            eval("$map(['a', 'b'], $pad(?, 2, '.'))", &input).expect("ok"),
            Some(json!(["a.", "b."]))
        );
        assert_eq!(
            eval("($pad := function($s){ 'own' }; $pad('x'))", &input).expect("ok"),
            Some(json!("own"))
        );
        let pad = json!("bound");
        let shadowed = Expression::compile("$pad")
            .expect("compiles")
            .evaluate(&input, &[("pad", &pad)], &Limits::default())
            .expect("ok");
        assert_eq!(shadowed, Some(pad));
        let err = eval("$pad('x', a / b)", &input).expect_err("infinite width");
        assert_eq!(err.code(), Some("D3001"), "{err}");
        let err = eval("(a % b).$formatInteger('w')", &input).expect_err("NaN context");
        assert_eq!(err.code(), Some("D3001"), "{err}");
        let err = eval("$fromMillis(0, '[Y,2000000000]')", &input).expect_err("wide");
        assert_eq!(err.category(), "error");
    }

    #[test]
    fn limits_map_to_categories() {
        let limits = Limits {
            timeout: Duration::from_millis(20),
            max_depth: 50,
        };
        let deep = Expression::compile("($f := function($n){ $n + $f($n + 1) }; $f(0))")
            .expect("compiles");
        let err = deep.evaluate(&json!({}), &[], &limits).expect_err("depth");
        assert!(matches!(err, EvalError::DepthExceeded(50)), "{err:?}");
        assert_eq!(err.category(), "depth");

        let forever =
            Expression::compile("($f := function($n){ $f($n + 1) }; $f(0))").expect("compiles");
        let err = forever
            .evaluate(&json!({}), &[], &limits)
            .expect_err("timeout");
        assert!(matches!(err, EvalError::Timeout(_)), "{err:?}");
        assert_eq!(err.category(), "timeout");
    }

    #[test]
    fn timeout_rounds_up_to_whole_milliseconds() {
        assert_eq!(timeout_millis(Duration::from_micros(1)), 1);
        assert_eq!(timeout_millis(Duration::from_millis(100)), 100);
        assert_eq!(timeout_millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn deep_values_are_rejected_not_overflowed() {
        let mut deep = json!(1);
        for _ in 0..(MAX_VALUE_NESTING + 5) {
            deep = json!([deep]);
        }
        let err = eval("$", &deep).expect_err("too deep");
        assert_eq!(err.category(), "error");

        let built = eval(
            "$reduce([1..2000], function($acc, $i){ {'a': $acc} }, 0)",
            &json!({}),
        );
        assert!(
            built.is_err(),
            "a 2000-deep result cannot cross the boundary"
        );
    }

    #[test]
    fn error_code_finder() {
        assert_eq!(find_error_code("T2001: x"), Some("T2001"));
        assert_eq!(find_error_code("Invalid syntax: S0201: x"), Some("S0201"));
        assert_eq!(find_error_code("no code here"), None);
        assert_eq!(find_error_code("AT1234: x"), None);
        assert_eq!(find_error_code(""), None);
    }
}
