//! Edge cases of the JSON parser.

use wasmforge_core::Error;
use wasmforge_plan_json::json::{parse, Value};

fn err(text: &str) -> String {
    match parse(text) {
        Err(Error::Json(m)) => m,
        other => panic!("{text:?} should fail, got {other:?}"),
    }
}

#[test]
fn scalars() {
    assert_eq!(parse("null"), Ok(Value::Null));
    assert_eq!(parse(" true "), Ok(Value::Bool(true)));
    assert_eq!(parse("false"), Ok(Value::Bool(false)));
    assert_eq!(parse("0"), Ok(Value::Int(0)));
    assert_eq!(parse("-0"), Ok(Value::Int(0)));
    assert_eq!(parse("-42"), Ok(Value::Int(-42)));
    assert_eq!(parse("9223372036854775807"), Ok(Value::Int(i64::MAX)));
    assert_eq!(parse("-9223372036854775808"), Ok(Value::Int(i64::MIN)));
    // Too big for i64: still a number, but not an integer.
    assert_eq!(parse("9223372036854775808"), Ok(Value::Float(9223372036854775808.0)));
    assert_eq!(parse("1.5"), Ok(Value::Float(1.5)));
    assert_eq!(parse("1e3"), Ok(Value::Float(1000.0)));
    assert_eq!(parse("-2.5E-1"), Ok(Value::Float(-0.25)));
    assert_eq!(parse("\"\""), Ok(Value::String(String::new())));
}

#[test]
fn containers_and_whitespace() {
    let v = parse(" \n\t{ \"a\" : [ 1 , {\"b\":null} , [] ] , \"c\" : {} }\r\n").unwrap();
    assert_eq!(v.get("a").and_then(Value::as_array).map(<[Value]>::len), Some(3));
    assert_eq!(v.get("c"), Some(&Value::Object(vec![])));
    assert_eq!(v.get("missing"), None);
    assert_eq!(parse("[]"), Ok(Value::Array(vec![])));
    // Member order is kept.
    let v = parse(r#"{"z": 1, "a": 2}"#).unwrap();
    assert_eq!(v, Value::Object(vec![("z".into(), Value::Int(1)), ("a".into(), Value::Int(2))]));
}

#[test]
fn string_escapes() {
    let v = parse(r#""q\" b\\ s\/ \b\f\n\r\t \u0041\u00e9\u20AC \ud83d\ude00 é""#).unwrap();
    assert_eq!(v.as_str(), Some("q\" b\\ s/ \u{8}\u{c}\n\r\t Aé€ 😀 é"));
}

#[test]
fn bad_strings() {
    assert!(err(r#""abc"#).contains("unterminated string"));
    assert!(err(r#""\x""#).contains("invalid escape"));
    assert!(err(r#""\u12""#).contains("\\u escape"));
    assert!(err(r#""\u12G4""#).contains("bad hex digit"));
    assert!(err(r#""\ud83d""#).contains("unpaired surrogate"));
    assert!(err(r#""\ud83d\u0041""#).contains("unpaired surrogate"));
    assert!(err(r#""\ude00""#).contains("unpaired surrogate"));
    assert!(err("\"tab\there\"").contains("control character"));
    assert!(err("'single'").contains("unexpected character"));
}

#[test]
fn bad_numbers() {
    assert!(err("01").contains("leading zero"));
    assert!(err("-").contains("expected a digit"));
    assert!(err("1.").contains("after '.'"));
    assert!(err(".5").contains("unexpected character"));
    assert!(err("1e").contains("exponent"));
    assert!(err("+1").contains("unexpected character"));
    assert!(err("1e999").contains("out of range"));
    assert!(err("NaN").contains("unexpected character"));
}

#[test]
fn bad_structure() {
    assert!(err("").contains("unexpected end of input"));
    assert!(err("   ").contains("unexpected end of input"));
    assert!(err("[1, 2").contains("expected ',' or ']'"));
    assert!(err("[1,]").contains("unexpected character"));
    assert!(err("{\"a\": 1,}").contains("expected a string key"));
    assert!(err("{\"a\" 1}").contains("expected ':'"));
    assert!(err("{1: 2}").contains("expected a string key"));
    assert!(err("{\"a\": 1} x").contains("after the JSON value"));
    assert!(err("[] []").contains("after the JSON value"));
    assert!(err("tru").contains("unknown literal"));
    assert!(err("nul").contains("unknown literal"));
    assert!(err(r#"{"a": 1, "a": 2}"#).contains("duplicate key \"a\""));
}

#[test]
fn error_position() {
    assert_eq!(err("{\n  \"a\": x\n}"), "invalid JSON at line 2 column 8: unexpected character");
}

#[test]
fn nesting_is_bounded() {
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    assert!(parse(&deep).is_ok());
    // Deep enough to overflow the stack of a naive recursive parser.
    let too_deep = "[".repeat(100_000);
    assert!(err(&too_deep).contains("nesting too deep"));
}
