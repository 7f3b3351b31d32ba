use jsonata_core::evaluator::{Context, Evaluator, EvaluatorOptions};
use jsonata_core::parser;
use jsonata_core::value::JValue;

fn assert_send_sync<T: Send + Sync>() {}

fn main() {
    assert_send_sync::<jsonata_core::ast::AstNode>();
    for src in ["a.b[", "foo(", "1 +* 2", "\"abc", "$x := ", "a.b.c)", "{ 'a': }", "[1,2", "a ~> ", "%.x", "$formatInteger(", "(1", "a b"] {
        match parser::parse(src) {
            Ok(_) => println!("{src:?} OK"),
            Err(e) => println!("{src:?} -> {e} | {e:?}"),
        }
    }
    let exprs = std::env::args().skip(1).collect::<Vec<_>>();
    for src in exprs {
        let ast = match parser::parse(&src) { Ok(a) => a, Err(e) => { println!("{src}: parse {e}"); continue } };
        let mut ev = Evaluator::with_options(Context::new(), EvaluatorOptions { timeout_ms: Some(100), max_stack_depth: Some(200), ..Default::default() });
        if src.contains("formatInteger") {
            ev.register_fn_override("formatInteger", |args: &[JValue]| { println!("host args {args:?}"); Ok(JValue::Null) }).unwrap();
        }
        let data = JValue::from_json_str(r#"{"data":{"a":10,"b":0}}"#).unwrap();
        let t = std::time::Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ev.evaluate(&ast, &data)));
        match r { Ok(Ok(v)) => println!("{src}: {v:?} {:?}", t.elapsed()), Ok(Err(e)) => println!("{src}: ERR {e} code={:?} {:?}", e.code(), t.elapsed()), Err(_) => println!("{src}: PANIC") }
    }
}
