use jsonata_core::evaluator::Evaluator;
use jsonata_core::parser;
use jsonata_core::value::JValue;
fn main() {
    for src in ["**", "$base64encode()", "$base64decode()", "$string()", "$trim()", "$"] {
        let ast = parser::parse(src).unwrap();
        println!("{src}: {:?}", Evaluator::new().evaluate(&ast, &JValue::Undefined));
    }
}
