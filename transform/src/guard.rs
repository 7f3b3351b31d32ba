//! Guarded replacements for the engine built-ins that attacker data can turn
//! into a crash or an exhaustion of the process.
//!
//! Data reaches these through ordinary arithmetic: `data.a % data.b` is NaN
//! when `b` is 0 and `data.a / data.b` is Infinity.
//!
//! - `$formatInteger` with NaN or Infinity and a words picture
//!   (`$formatInteger(10 % 0, 'w')`) recurses without end inside the engine
//!   (its number-to-words step only stops below twenty, which NaN and
//!   Infinity never reach) and overflows the stack. A stack overflow aborts
//!   the process and cannot be caught. With a roman-numeral picture it writes
//!   one `M` per thousand, so a huge number exhausts memory.
//! - `$formatNumber` with Infinity and an exponent picture (`'0.0e0'`)
//!   divides by ten until the mantissa is small, which Infinity never becomes:
//!   an endless loop inside one call, where the time limit cannot stop it.
//! - `$pad` turns its width into a 32-bit integer, saturating, so Infinity or
//!   a huge width builds a string of two billion characters (over a minute
//!   and gigabytes for `$pad('x', 1/0)`).
//! - `$fromMillis` pads a date component with as many zeros as its picture's
//!   width modifier asks for (`'[Y,2000000000]'`).
//!
//! Each evaluation registers two host functions per guarded built-in:
//!
//! - one under the built-in's own name, which replaces it wherever it is
//!   reached as a value: passed to a higher-order function (`$map(xs,
//!   $pad)`), partially applied (`$pad(?, 5)`), on the right of `~>`, aliased
//!   (`$f := $pad`), or called from `$eval`;
//! - one under a routed name, which takes the context value as an extra first
//!   argument. A host function is not given the context, yet these built-ins
//!   read it when called with fewer arguments than they take
//!   (`name.$pad(10)` pads `name`). So at compile time every direct call
//!   `$pad(a, b)` becomes `$__guarded_pad($, a, b)`, and the replacement runs
//!   the engine's built-in with that context, which keeps the engine's own
//!   rules for when the context is used. A call on the right of `~>` keeps its
//!   name (the engine puts the left side first), and an expression that binds
//!   one of these names itself (`$pad := ...`, a parameter `$pad`) is left as
//!   written, since its calls may mean the binding.
//!
//! Before running the engine's built-in, a replacement checks every number
//! and picture among the arguments, and the context when the call is short of
//! arguments, and fails with an ordinary error on what would crash or exhaust
//! the process. Every other call gets the engine's own result and errors.

use jsonata_core::ast::{AstNode, BinaryOp, PathStep, Stage, StepId};
use jsonata_core::evaluator::{Context, Evaluator, EvaluatorError};
use jsonata_core::parser;
use jsonata_core::value::{with_stack, JValue};

use crate::{MAX_PAD_WIDTH, MAX_ROMAN_NUMERAL};

/// A built-in replaced by a guarded version.
struct Guarded {
    /// The built-in's name, without `$`.
    name: &'static str,
    /// The name direct calls are routed to.
    routed: &'static str,
    /// The most arguments the built-in takes. Called with fewer, the engine
    /// may fill the first from the context, so the check covers the context.
    arity: usize,
    /// Rejects argument values that would crash or exhaust the process.
    check: fn(&[JValue]) -> Result<(), EvaluatorError>,
}

const GUARDED: &[Guarded] = &[
    Guarded {
        name: "formatInteger",
        routed: "__guarded_formatInteger",
        arity: 2,
        check: check_format_integer,
    },
    Guarded {
        name: "formatNumber",
        routed: "__guarded_formatNumber",
        arity: 3,
        check: check_format_number,
    },
    Guarded {
        name: "pad",
        routed: "__guarded_pad",
        arity: 3,
        check: check_pad,
    },
    Guarded {
        name: "fromMillis",
        routed: "__guarded_fromMillis",
        arity: 3,
        check: check_from_millis,
    },
];

/// Whether `name` (without `$`) is a guarded built-in.
pub(crate) fn is_guarded(name: &str) -> bool {
    GUARDED.iter().any(|g| g.name == name)
}

/// Register the replacements on `evaluator`.
pub(crate) fn register(evaluator: &mut Evaluator) -> Result<(), EvaluatorError> {
    for guard in GUARDED {
        evaluator.register_fn_override(guard.name, move |args: &[JValue]| {
            call_guarded(guard, &JValue::Undefined, args)
        })?;
        evaluator.register_fn(guard.routed, move |args: &[JValue]| {
            match args.split_first() {
                Some((context, args)) => call_guarded(guard, context, args),
                None => call_guarded(guard, &JValue::Undefined, args),
            }
        })?;
    }
    Ok(())
}

/// Check the arguments (and the context, when the call is short of
/// arguments so the engine may use it), then run the engine's own built-in.
fn call_guarded(
    guard: &Guarded,
    context: &JValue,
    args: &[JValue],
) -> Result<JValue, EvaluatorError> {
    if args.len() < guard.arity && !context.is_undefined() {
        let mut with_context = Vec::with_capacity(args.len() + 1);
        with_context.push(context.clone());
        with_context.extend_from_slice(args);
        (guard.check)(&with_context)?;
    } else {
        (guard.check)(args)?;
    }
    call_engine_builtin(guard.name, context, args)
}

/// `$formatInteger`: reject NaN and Infinity with D3001, the error JSONata
/// raises for non-finite numbers given to `$string`; reject numbers beyond
/// [`MAX_ROMAN_NUMERAL`] when a roman-numeral picture (`'I'`, `'i'`, with or
/// without modifiers) is given.
fn check_format_integer(values: &[JValue]) -> Result<(), EvaluatorError> {
    let roman = values.iter().any(|v| {
        v.as_str()
            .map(|picture| picture.rsplit_once(';').map_or(picture, |(p, _)| p))
            .is_some_and(|primary| primary == "I" || primary == "i")
    });
    for n in values.iter().filter_map(JValue::as_f64) {
        if !n.is_finite() {
            return Err(EvaluatorError::EvaluationError(format!(
                "D3001: Attempting to invoke $formatInteger with non-finite number: {n}"
            )));
        }
        if roman && n.abs() > MAX_ROMAN_NUMERAL {
            return Err(EvaluatorError::EvaluationError(format!(
                "$formatInteger formats roman numerals up to {MAX_ROMAN_NUMERAL}, not {n}"
            )));
        }
    }
    Ok(())
}

/// `$formatNumber`: reject NaN and Infinity with D3001.
fn check_format_number(values: &[JValue]) -> Result<(), EvaluatorError> {
    match values
        .iter()
        .filter_map(JValue::as_f64)
        .find(|n| !n.is_finite())
    {
        Some(n) => Err(EvaluatorError::EvaluationError(format!(
            "D3001: Attempting to invoke $formatNumber with non-finite number: {n}"
        ))),
        None => Ok(()),
    }
}

/// `$pad`: reject non-finite widths (JavaScript's `$pad` fails on them too)
/// and widths beyond [`MAX_PAD_WIDTH`].
fn check_pad(values: &[JValue]) -> Result<(), EvaluatorError> {
    for n in values.iter().filter_map(JValue::as_f64) {
        if !n.is_finite() || n.abs() > MAX_PAD_WIDTH {
            return Err(EvaluatorError::EvaluationError(format!(
                "D3001: $pad width must be a finite number of at most {MAX_PAD_WIDTH} \
                 characters, not {n}"
            )));
        }
    }
    Ok(())
}

/// `$fromMillis`: reject pictures with any number above [`MAX_PAD_WIDTH`]
/// inside a `[...]` marker, where width modifiers (`[Y,5]`, `[M,2-4]`) live.
fn check_from_millis(values: &[JValue]) -> Result<(), EvaluatorError> {
    for picture in values.iter().filter_map(JValue::as_str) {
        let mut in_marker = false;
        let mut number = 0.0_f64;
        for c in picture.chars() {
            match c {
                '[' => in_marker = true,
                ']' => in_marker = false,
                _ => {}
            }
            match c.to_digit(10) {
                Some(digit) if in_marker && c.is_ascii_digit() => {
                    number = number * 10.0 + f64::from(digit);
                    if number > MAX_PAD_WIDTH {
                        return Err(EvaluatorError::EvaluationError(format!(
                            "D3133: $fromMillis picture asks for a width over \
                             {MAX_PAD_WIDTH} characters"
                        )));
                    }
                }
                _ => number = 0.0,
            }
        }
    }
    Ok(())
}

/// Run the engine's own built-in `name` on `args` with `context` as the
/// context value, bypassing the replacements: a fresh evaluator, which has
/// none, evaluates `$name($a0, $a1, ...)` with the arguments bound to those
/// variables. Called only with checked arguments.
fn call_engine_builtin(
    name: &str,
    context: &JValue,
    args: &[JValue],
) -> Result<JValue, EvaluatorError> {
    let params: Vec<String> = (0..args.len()).map(|i| format!("$a{i}")).collect();
    let source = format!("${name}({})", params.join(", "));
    let ast = parser::parse(&source)
        .map_err(|e| EvaluatorError::EvaluationError(format!("internal call of ${name}: {e}")))?;
    let mut bound = Context::new();
    for (i, arg) in args.iter().enumerate() {
        bound.bind(format!("a{i}"), arg.clone());
    }
    Evaluator::with_context(bound).evaluate(&ast, context)
}

/// Route direct calls of guarded built-ins to their context-taking
/// replacements. Returns the routed tree, and the tree as written when
/// routing changed it (for evaluations whose bindings shadow a guarded name:
/// the engine resolves such a call to the binding).
pub(crate) fn route_calls(ast: AstNode) -> (AstNode, Option<AstNode>) {
    if binds_guarded_name(&ast) {
        return (ast, None);
    }
    let mut routed = ast.clone();
    if route(&mut routed) {
        (routed, Some(ast))
    } else {
        (ast, None)
    }
}

/// JSONata's built-in functions (the engine's library).
const BUILT_INS: &[&str] = &[
    "abs",
    "append",
    "assert",
    "average",
    "base64decode",
    "base64encode",
    "boolean",
    "ceil",
    "contains",
    "count",
    "decodeUrl",
    "decodeUrlComponent",
    "distinct",
    "each",
    "encodeUrl",
    "encodeUrlComponent",
    "error",
    "eval",
    "exists",
    "filter",
    "floor",
    "formatBase",
    "formatInteger",
    "formatNumber",
    "fromMillis",
    "join",
    "keys",
    "length",
    "lookup",
    "lowercase",
    "map",
    "match",
    "max",
    "merge",
    "millis",
    "min",
    "not",
    "now",
    "number",
    "pad",
    "parseInteger",
    "power",
    "random",
    "reduce",
    "replace",
    "reverse",
    "round",
    "shuffle",
    "sift",
    "single",
    "sort",
    "split",
    "spread",
    "sqrt",
    "string",
    "substring",
    "substringAfter",
    "substringBefore",
    "sum",
    "toMillis",
    "trim",
    "type",
    "uppercase",
    "zip",
];

/// Functions `ast` calls by name that are neither JSONata built-ins, nor in `bound` (names
/// the caller binds), nor defined in the expression (a variable it assigns or a parameter
/// of one of its functions). Sorted, without the `$`.
pub(crate) fn unknown_calls(ast: &AstNode, bound: &[&str]) -> Vec<String> {
    let mut called = std::collections::BTreeSet::new();
    let mut defined = std::collections::BTreeSet::new();
    visit(ast, &mut |n| match n {
        AstNode::Function {
            name,
            is_builtin: true,
            ..
        } => {
            called.insert(name.trim_start_matches('$').to_owned());
        }
        AstNode::Binary {
            op: BinaryOp::ColonEqual,
            lhs,
            ..
        } => {
            if let AstNode::Variable(v) = &**lhs {
                defined.insert(v.trim_start_matches('$').to_owned());
            }
        }
        AstNode::Lambda { params, .. } => {
            defined.extend(params.iter().map(|p| p.trim_start_matches('$').to_owned()));
        }
        _ => {}
    });
    called
        .into_iter()
        .filter(|name| {
            !defined.contains(name)
                && !BUILT_INS.contains(&name.as_str())
                && !bound.contains(&name.as_str())
        })
        .collect()
}

/// Whether `node` binds a guarded built-in's name as a variable, so that a
/// call of that name might mean the variable.
fn binds_guarded_name(node: &AstNode) -> bool {
    let mut found = false;
    visit(node, &mut |n| match n {
        AstNode::Binary {
            op: BinaryOp::ColonEqual,
            lhs,
            ..
        } => found |= matches!(&**lhs, AstNode::Variable(v) if is_guarded(v)),
        AstNode::Lambda { params, .. } => found |= params.iter().any(|p| is_guarded(p)),
        AstNode::Path { steps } => {
            found |= steps.iter().any(|step| {
                step.focus.as_deref().is_some_and(is_guarded)
                    || step.index_var.as_deref().is_some_and(is_guarded)
                    || step
                        .stages
                        .iter()
                        .any(|s| matches!(s, Stage::Index(v) if is_guarded(v)))
            })
        }
        _ => {}
    });
    found
}

/// Call `f` on `node` and every node below it. Every variant is listed, so a
/// new one in a later engine version fails to compile here until handled.
fn visit(node: &AstNode, f: &mut dyn FnMut(&AstNode)) {
    with_stack(|| {
        f(node);
        match node {
            AstNode::String(_)
            | AstNode::Name(_)
            | AstNode::Number(_)
            | AstNode::Boolean(_)
            | AstNode::Null
            | AstNode::Undefined
            | AstNode::Placeholder
            | AstNode::Regex { .. }
            | AstNode::Variable(_)
            | AstNode::ParentVariable(_)
            | AstNode::Wildcard
            | AstNode::Descendant
            | AstNode::Parent(_) => {}
            AstNode::Path { steps } => {
                for step in steps {
                    visit(&step.node, f);
                    for stage in &step.stages {
                        if let Stage::Filter(filter) = stage {
                            visit(filter, f);
                        }
                    }
                }
            }
            AstNode::Binary { lhs, rhs, .. } => {
                visit(lhs, f);
                visit(rhs, f);
            }
            AstNode::Unary { operand, .. } => visit(operand, f),
            AstNode::Function { args, .. } => args.iter().for_each(|a| visit(a, f)),
            AstNode::Call { procedure, args } => {
                visit(procedure, f);
                args.iter().for_each(|a| visit(a, f));
            }
            AstNode::Lambda { body, .. } => visit(body, f),
            AstNode::Array(items) | AstNode::Block(items) | AstNode::ArrayGroup(items) => {
                items.iter().for_each(|a| visit(a, f))
            }
            AstNode::Object(pairs) => pairs.iter().for_each(|(k, v)| {
                visit(k, f);
                visit(v, f);
            }),
            AstNode::ObjectTransform { input, pattern } => {
                visit(input, f);
                pattern.iter().for_each(|(k, v)| {
                    visit(k, f);
                    visit(v, f);
                });
            }
            AstNode::Conditional {
                condition,
                then_branch,
                else_branch,
            } => {
                visit(condition, f);
                visit(then_branch, f);
                if let Some(e) = else_branch {
                    visit(e, f);
                }
            }
            AstNode::FunctionApplication(inner) => visit(inner, f),
            AstNode::Sort { input, terms } => {
                visit(input, f);
                terms.iter().for_each(|(t, _)| visit(t, f));
            }
            AstNode::Transform {
                location,
                update,
                delete,
            } => {
                visit(location, f);
                visit(update, f);
                if let Some(d) = delete {
                    visit(d, f);
                }
            }
        }
    })
}

/// Rewrite the direct calls of guarded built-ins in `node`; true when any was
/// rewritten. Every path step gets a new identity, as the engine asks of a
/// step whose node may have changed (it caches compiled steps by identity).
fn route(node: &mut AstNode) -> bool {
    with_stack(|| match node {
        AstNode::String(_)
        | AstNode::Name(_)
        | AstNode::Number(_)
        | AstNode::Boolean(_)
        | AstNode::Null
        | AstNode::Undefined
        | AstNode::Placeholder
        | AstNode::Regex { .. }
        | AstNode::Variable(_)
        | AstNode::ParentVariable(_)
        | AstNode::Wildcard
        | AstNode::Descendant
        | AstNode::Parent(_) => false,
        AstNode::Path { steps } => steps
            .iter_mut()
            .fold(false, |changed, step| route_step(step, true) | changed),
        AstNode::Binary { op, lhs, rhs } => {
            let left = route(lhs);
            let right = if *op == BinaryOp::ChainPipe {
                route_pipe_target(rhs)
            } else {
                route(rhs)
            };
            left | right
        }
        AstNode::Unary { operand, .. } => route(operand),
        AstNode::Function {
            name,
            args,
            is_builtin,
        } => {
            let mut changed = route_all(args);
            let direct = *is_builtin && !args.iter().any(|a| matches!(a, AstNode::Placeholder));
            if let Some(guard) = GUARDED.iter().find(|g| g.name == name.as_str()) {
                if direct {
                    *name = guard.routed.to_owned();
                    args.insert(0, AstNode::Variable(String::new()));
                    changed = true;
                }
            }
            changed
        }
        AstNode::Call { procedure, args } => route(procedure) | route_all(args),
        AstNode::Lambda { body, .. } => route(body),
        AstNode::Array(items) | AstNode::Block(items) | AstNode::ArrayGroup(items) => {
            route_all(items)
        }
        AstNode::Object(pairs) => route_pairs(pairs),
        AstNode::ObjectTransform { input, pattern } => route(input) | route_pairs(pattern),
        AstNode::Conditional {
            condition,
            then_branch,
            else_branch,
        } => {
            let c = route(condition);
            let t = route(then_branch);
            let e = else_branch.as_mut().is_some_and(|e| route(e));
            c | t | e
        }
        AstNode::FunctionApplication(inner) => route(inner),
        AstNode::Sort { input, terms } => {
            let i = route(input);
            terms
                .iter_mut()
                .fold(i, |changed, (t, _)| route(t) | changed)
        }
        AstNode::Transform {
            location,
            update,
            delete,
        } => {
            let l = route(location);
            let u = route(update);
            let d = delete.as_mut().is_some_and(|d| route(d));
            l | u | d
        }
    })
}

fn route_all(nodes: &mut [AstNode]) -> bool {
    nodes
        .iter_mut()
        .fold(false, |changed, n| route(n) | changed)
}

fn route_pairs(pairs: &mut [(AstNode, AstNode)]) -> bool {
    pairs
        .iter_mut()
        .fold(false, |changed, (k, v)| route(k) | route(v) | changed)
}

/// Route one path step. `rename` false keeps a call that is the step's node
/// under its own name (the right of `~>`).
fn route_step(step: &mut PathStep, rename: bool) -> bool {
    step.id = StepId::default();
    let node = if rename {
        route(&mut step.node)
    } else {
        route_pipe_call(&mut step.node)
    };
    step.stages
        .iter_mut()
        .fold(node, |changed, stage| match stage {
            Stage::Filter(filter) => route(filter) | changed,
            Stage::KeepArray | Stage::Index(_) => changed,
        })
}

/// The right of `~>`: the engine calls a function there (alone, or as the
/// only step of a path with a filter) with the left side as its first
/// argument, so that call keeps its name and only its arguments are routed.
fn route_pipe_target(rhs: &mut AstNode) -> bool {
    match rhs {
        AstNode::Path { steps } if steps.len() == 1 => steps
            .iter_mut()
            .fold(false, |changed, step| route_step(step, false) | changed),
        _ => route_pipe_call(rhs),
    }
}

fn route_pipe_call(node: &mut AstNode) -> bool {
    match node {
        AstNode::Function { args, .. } => route_all(args),
        other => route(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(source: &str) -> String {
        let ast = parser::parse(source).expect("parses");
        format!("{:?}", route_calls(ast).0)
    }

    #[test]
    fn direct_calls_are_routed_with_the_context() {
        let text = routed("a.$pad(5)");
        assert!(text.contains("__guarded_pad"), "{text}");
        assert!(text.contains("Variable(\"\")"), "{text}");
        let text = routed("{'x': [$formatInteger(1, 'w')]}");
        assert!(text.contains("__guarded_formatInteger"), "{text}");
    }

    #[test]
    fn pipe_targets_partials_and_shadowed_names_are_not_routed() {
        assert!(!routed("x ~> $pad(5)").contains("__guarded"));
        assert!(!routed("x ~> $pad(5)[0]").contains("__guarded"));
        assert!(routed("$pad(x, 1) ~> $pad(5)").contains("__guarded"));
        assert!(!routed("$pad(?, 5)").contains("__guarded"));
        assert!(!routed("($pad := function($x){$x}; $pad(1))").contains("__guarded"));
        assert!(!routed("function($pad){ $pad(1) }").contains("__guarded"));
    }

    #[test]
    fn checks() {
        let n = |v: f64| JValue::Number(v);
        let s = |v: &str| JValue::string(v);
        assert!(check_format_integer(&[n(f64::NAN), s("w")]).is_err());
        assert!(check_format_integer(&[n(f64::INFINITY), s("0")]).is_err());
        assert!(check_format_integer(&[n(1e9), s("I")]).is_err());
        assert!(check_format_integer(&[n(1e9), s("i;o")]).is_err());
        assert!(check_format_integer(&[n(1e9), s("w")]).is_ok());
        assert!(check_format_integer(&[n(1999.0), s("I")]).is_ok());
        assert!(check_format_number(&[n(f64::INFINITY), s("0.0e0")]).is_err());
        assert!(check_format_number(&[n(1e300), s("0.0e0")]).is_ok());
        assert!(check_pad(&[s("x"), n(f64::NEG_INFINITY)]).is_err());
        assert!(check_pad(&[s("x"), n(-2e6)]).is_err());
        assert!(check_pad(&[s("x"), n(-20.0), s("#")]).is_ok());
        assert!(check_from_millis(&[n(0.0), s("[Y,2000000000]")]).is_err());
        assert!(check_from_millis(&[n(0.0), s("[Y0001,2-2] 20000000")]).is_ok());
    }
}
