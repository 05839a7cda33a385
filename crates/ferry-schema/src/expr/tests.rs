// Tests fail loudly on a broken fixture; that is what unwrap is for here.

use ferry_types::{Item, Value};
use serde_json::{Value as Json, json};

use super::*;

/// Test-only JSON for values JSON cannot spell: `{"$ss": [..]}`, `{"$ns": ["1"]}`,
/// `{"$bs": ["text"]}` and `{"$b": "text"}` (binaries given as their UTF-8 text).
fn value(json: &Json) -> Value {
    let texts = |v: &Json| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    if let Json::Object(map) = json
        && map.len() == 1
    {
        let (tag, inner) = map.iter().next().unwrap();
        match tag.as_str() {
            "$ss" => return Value::Ss(texts(inner).into_iter().collect()),
            "$ns" => return Value::Ns(texts(inner).iter().map(|n| n.parse().unwrap()).collect()),
            "$bs" => return Value::Bs(texts(inner).into_iter().map(String::into_bytes).collect()),
            "$b" => return Value::B(inner.as_str().unwrap().as_bytes().to_vec()),
            _ => {}
        }
    }
    match json {
        Json::Array(list) => Value::L(list.iter().map(value).collect()),
        Json::Object(map) => Value::M(item(&Json::Object(map.clone()))),
        other => Value::from_json(other).unwrap(),
    }
}

fn item(json: &Json) -> Item {
    json.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), value(v)))
        .collect()
}

/// An item with every type.
fn base() -> Json {
    json!({
        "name": "Alice", "status": "active", "age": 30, "score": 1.5, "flag": true,
        "nothing": null, "empty": "", "address": {"city": "Paris", "zip": "75001"},
        "tags": ["red", "blue"], "colors": {"$ss": ["green", "red"]}, "nums": {"$ns": ["1", "2"]},
        "blob": {"$b": "abc"}, "blob2": {"$b": "abd"}, "prefix": {"$b": "ab"},
        "blobs": {"$bs": ["x"]}, "big": 12345678901234567890123456789012345678u128,
        "unicode": "é", "date": "2024-01-01"
    })
}

fn subs() -> Subs {
    let json = json!({
        "status": "active", "ten": 10, "type": "S", "list": ["active", "gone"], "empty": [],
        "more": ["x"], "tags": ["red", "blue"], "big": 12345678901234567890123456789012345678u128
    });
    json.as_object().unwrap().clone()
}

fn check(text: &str, item_json: Json, expected: bool) {
    let cond = parse_condition(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let got = cond
        .eval(&item(&item_json), &subs())
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(got, expected, "{text} on {item_json}");
}

#[test]
fn conditions() {
    let b = base;
    let cases = [
        // Literal forms.
        ("${name} = {Alice}", b(), true),
        ("${name} = {\"Alice\"}", b(), true),
        ("${name} = {'Alice'}", b(), true),
        ("${name} = { \"Alice\" }", b(), true),
        ("${name} = {alice}", b(), false),
        ("${age} = {30}", b(), true),
        ("${age} = {30.0}", b(), true),
        ("${age} = {3e1}", b(), true),
        ("${age} = {\"30\"}", b(), false),
        ("${score} = {1.50}", b(), true),
        ("${score} = {-1.5}", b(), false),
        ("${flag} = {true}", b(), true),
        ("${flag} = {false}", b(), false),
        ("${flag} = {\"true\"}", b(), false),
        ("${nothing} = {null}", b(), true),
        ("${empty} = {}", b(), true),
        ("${date} = {2024-01-01}", b(), true),
        ("${q} = {\"a\\\"}{b\"}", json!({"q": "a\"}{b"}), true),
        ("${q} = {'it\\'s'}", json!({"q": "it's"}), true),
        ("${status} = @{status}", b(), true),
        ("@{status} = ${status}", b(), true),
        ("{30} = ${age}", b(), true),
        ("${tags} = @{tags}", b(), true),
        // Comparisons: numbers numerically, texts and binaries bytewise.
        ("${age} <> {31}", b(), true),
        ("${age} <> {30}", b(), false),
        ("${age} < {100}", b(), true),
        ("${age} <= {30}", b(), true),
        ("${age} > {30}", b(), false),
        ("${age} >= {30}", b(), true),
        ("${age} > @{ten}", b(), true),
        ("${score} > {-2}", b(), true),
        ("${age} > ${score}", b(), true),
        ("${name} < {Bob}", b(), true),
        ("${name} < {alice}", b(), true),
        ("${name} >= {Alice}", b(), true),
        ("${date} > {2023-12-31}", b(), true),
        ("${blob} < ${blob2}", b(), true),
        ("${blob} >= ${blob2}", b(), false),
        // 38-digit numbers stay exact.
        (
            "${big} = {12345678901234567890123456789012345678}",
            b(),
            true,
        ),
        (
            "${big} > {12345678901234567890123456789012345677}",
            b(),
            true,
        ),
        (
            "${big} < {12345678901234567890123456789012345679}",
            b(),
            true,
        ),
        ("${big} = @{big}", b(), true),
        ("${big} < {1e38}", b(), true),
        // Paths.
        ("${address.city} = {Paris}", b(), true),
        ("${ address.city } = {Paris}", b(), true),
        ("${address.nope} = {Paris}", b(), false),
        ("${tags[0]} = {red}", b(), true),
        ("${tags[1]} = {blue}", b(), true),
        ("${tags[5]} = {red}", b(), false),
        // Missing attributes: false, except `<>` (unequal to anything, as in DynamoDB).
        ("${missing} = {1}", b(), false),
        ("${missing} <> {1}", b(), true),
        ("${missing} < {1}", b(), false),
        ("${missing} <= {1}", b(), false),
        ("${missing} > {1}", b(), false),
        ("${missing} >= {1}", b(), false),
        ("${missing} = ${other}", json!({}), false),
        // Type mismatches: never equal, never ordered.
        ("${name} = {5}", b(), false),
        ("${name} <> {5}", b(), true),
        ("${name} < {5}", b(), false),
        ("${name} > {5}", b(), false),
        ("${flag} < {true}", b(), false),
        ("${flag} >= {true}", b(), false),
        ("${tags} < @{tags}", b(), false),
        // BETWEEN.
        ("${age} BETWEEN {18} AND {65}", b(), true),
        ("${age} between {31} and {40}", b(), false),
        ("${age} BETWEEN {30} AND {30}", b(), true),
        ("${name} BETWEEN {A} AND {B}", b(), true),
        ("${name} BETWEEN {1} AND {100}", b(), false),
        ("${missing} BETWEEN {1} AND {2}", b(), false),
        (
            "${age} BETWEEN {18} AND {65} AND ${name} = {Bob}",
            b(),
            false,
        ),
        ("${age} BETWEEN {18} AND {65} OR ${name} = {Bob}", b(), true),
        // IN.
        ("${status} IN ({active}, {inactive})", b(), true),
        ("${status} in ({x})", b(), false),
        ("${age} IN ({1}, {30})", b(), true),
        ("${age} IN ({\"30\"})", b(), false),
        ("${age} IN (@{ten}, {30})", b(), true),
        ("${status} IN (@{...list})", b(), true),
        ("${status} IN ({x}, @{ ...list })", b(), true),
        ("${status} IN (@{...empty})", b(), false),
        ("${status} IN (${missing}, {active})", b(), true),
        ("${missing} IN ({1})", b(), false),
        // Logic and precedence: comparisons > NOT > AND > OR.
        ("${age} = {30} AND ${name} = {Bob}", b(), false),
        ("${age} = {30} OR ${name} = {Bob}", b(), true),
        ("NOT ${age} = {30}", b(), false),
        ("not ${age} = {31}", b(), true),
        ("NOT NOT ${age} = {30}", b(), true),
        (
            "${a} = {1} OR ${b} = {2} AND ${c} = {3}",
            json!({"a": 1, "b": 0, "c": 0}),
            true,
        ),
        (
            "(${a} = {1} OR ${b} = {2}) AND ${c} = {3}",
            json!({"a": 1, "b": 0, "c": 0}),
            false,
        ),
        (
            "NOT ${a} = {1} AND ${b} = {2}",
            json!({"a": 1, "b": 3}),
            false,
        ),
        (
            "NOT (${a} = {1} AND ${b} = {2})",
            json!({"a": 1, "b": 3}),
            true,
        ),
        ("NOT ${a} = {1} OR ${a} = {1}", json!({"a": 1}), true),
        ("${a} = {1} aNd ${a} <> {2}", json!({"a": 1}), true),
        ("((${a} = {1}))", json!({"a": 1}), true),
        ("${a}={1}AND${a}<>{2}", json!({"a": 1}), true),
        // Functions.
        ("attribute_exists(${name})", b(), true),
        ("attribute_exists(${missing})", b(), false),
        ("attribute_exists(${nothing})", b(), true),
        ("attribute_exists(${address.city})", b(), true),
        ("attribute_exists(${tags[2]})", b(), false),
        ("ATTRIBUTE_EXISTS(${name})", b(), true),
        ("attribute_not_exists(${missing})", b(), true),
        ("attribute_not_exists(${name})", b(), false),
        ("NOT attribute_exists(${name}) OR ${age} = {30}", b(), true),
        ("attribute_type(${name}, {S})", b(), true),
        ("attribute_type(${age}, {N})", b(), true),
        ("attribute_type(${blob}, {B})", b(), true),
        ("attribute_type(${flag}, {BOOL})", b(), true),
        ("attribute_type(${nothing}, {NULL})", b(), true),
        ("attribute_type(${address}, {M})", b(), true),
        ("attribute_type(${tags}, {L})", b(), true),
        ("attribute_type(${colors}, {SS})", b(), true),
        ("attribute_type(${nums}, {NS})", b(), true),
        ("attribute_type(${blobs}, {BS})", b(), true),
        ("attribute_type(${name}, {N})", b(), false),
        ("attribute_type(${missing}, {S})", b(), false),
        ("attribute_type(${name}, @{type})", b(), true),
        ("begins_with(${name}, {Al})", b(), true),
        ("begins_with(${name}, {al})", b(), false),
        ("begins_with(${name}, {})", b(), true),
        ("begins_with(${age}, {3})", b(), false),
        ("begins_with(${blob}, ${prefix})", b(), true),
        ("begins_with(${missing}, {a})", b(), false),
        ("begins_with(${name}, ${missing})", b(), false),
        ("contains(${name}, {lic})", b(), true),
        ("contains(${name}, {bob})", b(), false),
        ("contains(${colors}, {red})", b(), true),
        ("contains(${colors}, {blue})", b(), false),
        ("contains(${nums}, {2})", b(), true),
        ("contains(${nums}, {2.0})", b(), true),
        ("contains(${nums}, {\"2\"})", b(), false),
        ("contains(${tags}, {blue})", b(), true),
        ("contains(${tags}, {green})", b(), false),
        ("contains(${missing}, {a})", b(), false),
        ("contains(${age}, {3})", b(), false),
        ("size(${name}) = {5}", b(), true),
        ("size(${unicode}) = {2}", b(), true),
        ("size(${tags}) = {2}", b(), true),
        ("size(${colors}) = {2}", b(), true),
        ("size(${address}) = {2}", b(), true),
        ("size(${blob}) = {3}", b(), true),
        ("size(${empty}) = {0}", b(), true),
        ("SIZE(${name}) BETWEEN {1} AND {10}", b(), true),
        ("size(${age}) >= {0}", b(), false),
        ("size(${missing}) >= {0}", b(), false),
        ("size(${name}) > size(${tags})", b(), true),
        ("{5} = size(${name})", b(), true),
        ("size(${tags}) IN ({1}, {2})", b(), true),
    ];
    for (text, item_json, expected) in cases {
        check(text, item_json, expected);
    }
}

fn check_expr(text: &str, item_json: Json, expected: Json) {
    let expr = parse_expr(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let got = expr
        .eval(&item(&item_json), &subs())
        .unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(got, value(&expected), "{text} on {item_json}");
}

#[test]
fn expressions() {
    let b = base;
    let n = |text: &str| Json::Number(text.parse().unwrap());
    let cases = [
        ("{10}", b(), json!(10)),
        ("{\"10\"}", b(), json!("10")),
        ("{abc}", b(), json!("abc")),
        ("{true}", b(), json!(true)),
        ("{null}", b(), json!(null)),
        ("${age}", b(), json!(30)),
        ("${address.city}", b(), json!("Paris")),
        ("${tags[1]}", b(), json!("blue")),
        ("${colors}", b(), json!({"$ss": ["green", "red"]})),
        ("@{status}", b(), json!("active")),
        ("@{tags}", b(), json!(["red", "blue"])),
        ("${age} + {10}", b(), json!(40)),
        ("${age} - {10}", b(), json!(20)),
        ("${age}+{10}", b(), json!(40)),
        ("${age} + {0.1}", b(), n("30.1")),
        ("${score} - {1.5}", b(), json!(0)),
        ("{0.1} + {0.2}", b(), n("0.3")),
        ("{-5} - {-5}", b(), json!(0)),
        ("${age} + {1} - {2} + @{ten}", b(), json!(39)),
        ("${age} - ${score}", b(), n("28.5")),
        (
            "${big} + {1}",
            b(),
            n("12345678901234567890123456789012345679"),
        ),
        ("${big} - ${big}", b(), json!(0)),
        (
            "${big} - {12345678901234567890123456789012345677}",
            b(),
            json!(1),
        ),
        ("if_not_exists(${missing}, {0})", b(), json!(0)),
        ("if_not_exists(${age}, {0})", b(), json!(30)),
        ("if_not_exists(${counter}, {0}) + {1}", b(), json!(1)),
        ("IF_NOT_EXISTS(${age}, {0}) + {1}", b(), json!(31)),
        ("if_not_exists(${missing}, ${age} + {1})", b(), json!(31)),
        (
            "list_append(${tags}, @{more})",
            b(),
            json!(["red", "blue", "x"]),
        ),
        (
            "list_append(@{more}, ${tags})",
            b(),
            json!(["x", "red", "blue"]),
        ),
        (
            "list_append(if_not_exists(${missing}, @{empty}), @{more})",
            b(),
            json!(["x"]),
        ),
    ];
    for (text, item_json, expected) in cases {
        check_expr(text, item_json, expected);
    }
}

/// Parses (and evaluates, for `Eval` rows) and expects an error at `position` whose
/// message contains `message`.
fn check_error(kind: Kind, text: &str, position: usize, message: &str) {
    let (item, subs) = (item(&base()), subs());
    let result = match kind {
        Kind::Condition => parse_condition(text).and_then(|c| c.eval(&item, &subs).map(|_| ())),
        Kind::Expr => parse_expr(text).and_then(|e| e.eval(&item, &subs).map(|_| ())),
    };
    match result {
        Err(Error::Expression {
            text: t,
            position: p,
            message: m,
        }) => {
            assert_eq!(t, text);
            assert!(
                m.contains(message),
                "{text}: message {m:?} lacks {message:?}"
            );
            assert_eq!(p, position, "{text}: position of {m:?}");
        }
        other => panic!("{text}: expected an expression error, got {other:?}"),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Condition,
    Expr,
}

#[test]
fn errors() {
    use Kind::{Condition as C, Expr as E};
    #[rustfmt::skip]
    let cases = [
        (C, "", 0, "expected a value (${name}, {value} or @{name}), found the end of the text"),
        (C, "${a} = ", 7, "expected a value (${name}, {value} or @{name}), found the end"),
        (C, "${a} IN ({1}, {2}", 17, "expected ')' after IN list, found the end of the text"),
        (C, "${a} IN ({1} {2})", 13, "expected ')' after IN list, found '{2}'"),
        (C, "${a} IN {1}", 8, "expected '(' after IN"),
        (C, "${a} IN ()", 9, "expected a value"),
        (C, "foo(${a})", 0, "unknown function 'foo'"),
        (C, "${a} = foo(${a})", 7, "unknown function 'foo'"),
        (C, "status = {1}", 0, "unexpected word 'status'"),
        (C, "${a} == {1}", 5, "unknown operator '==': use '='"),
        (C, "${a} != {1}", 5, "unknown operator '!=': use '<>'"),
        (C, "${a} = {1} # x", 11, "unexpected character '#'"),
        (C, "$a = {1}", 0, "expected '{' after '$'"),
        (C, "${a = {1}", 0, "'${' is not closed"),
        (C, "${a", 0, "'${' is not closed"),
        (C, "${a} = @{b", 7, "'@{' is not closed"),
        (C, "${a} = {b", 7, "'{' is not closed"),
        (C, "${}", 0, "bad attribute path ''"),
        (C, "${a..b} = {1}", 0, "bad attribute path 'a..b'"),
        (C, "${a[x]} = {1}", 0, "bad attribute path"),
        (C, "@{} = {1}", 0, "substitution has no name"),
        (C, "{\"abc} = ${a}", 1, "quoted text is not closed"),
        (C, "{\"abc\"x} = ${a}", 6, "expected '}' after the quoted text"),
        (C, "${a} = {1} AND", 14, "expected a value"),
        (C, "${a} = {1} ${b}", 11, "expected AND, OR or the end of the condition, found '${b}'"),
        (C, "(${a} = {1}", 11, "expected ')' to close the '('"),
        (C, "${a} = {1})", 10, "expected AND, OR or the end of the condition, found ')'"),
        (C, "${a}", 4, "expected a comparison (=, <>, <, <=, >, >=, BETWEEN or IN) after ${a}"),
        (C, "${a} = {1} = {2}", 11, "expected AND, OR or the end"),
        (C, "${a} BETWEEN {1} {2}", 17, "expected AND between the BETWEEN bounds"),
        (C, "AND ${a} = {1}", 0, "expected a condition, found 'AND'"),
        (C, "${a} = AND", 7, "expected a value (${name}, {value} or @{name}), found 'AND'"),
        (C, "@{...xs} = {1}", 0, "@{...xs} expands a list and is only valid inside IN (...)"),
        (C, "attribute_type(${a}, {X})", 21, "attribute_type needs a type name (S, N, B, BOOL"),
        (C, "attribute_type(${a}, {s})", 21, "got {s}"),
        (C, "attribute_exists({1})", 17, "expected an attribute ${name} as the first argument of attribute_exists"),
        (C, "attribute_exists ${a}", 17, "expected '(' after attribute_exists"),
        (C, "attribute_exists(${a}", 21, "expected ')' to close attribute_exists("),
        (C, "begins_with(${a})", 16, "expected ',' and a second argument to begins_with"),
        (C, "${a} = begins_with(${a}, {x})", 7, "begins_with() is a condition, not a value"),
        (C, "if_not_exists(${a}, {1}) = {1}", 0, "if_not_exists() is only valid in a set expression"),
        (C, "size ${a} = {1}", 5, "expected '(' after size"),
        (C, "size({1}) = {1}", 5, "first argument of size"),
        (C, "${a} = {123456789012345678901234567890123456789}", 7, "bad number"),
        (C, "${a} = {1e200}", 7, "out of range"),
        // Evaluation errors.
        (C, "${a} = @{x}", 7, "substitution @{x} is not given: add \"x\" to the substitutions"),
        (C, "${age} = {1} AND ${b} = @{nope}", 24, "substitution @{nope} is not given"),
        (C, "${age} = {30} OR ${b} = @{nope}", 24, "substitution @{nope} is not given"),
        (C, "${a} IN (@{...status})", 9, "substitution @{...status} must be a list to expand in IN (...), not S"),
        (C, "${a} IN (@{...nope})", 9, "substitution @{nope} is not given"),
        (C, "attribute_type(${a}, @{status})", 21, "attribute_type needs a type name"),
        // `set` expressions.
        (E, "", 0, "expected a value"),
        (E, "${a} +", 6, "expected a value"),
        (E, "${a} * {2}", 5, "unexpected character '*'"),
        (E, "${a} = {1}", 5, "expected '+', '-' or the end of the expression, found '='"),
        (E, "${a} {1}", 5, "expected '+', '-' or the end of the expression"),
        (E, "if_not_exists({1}, {2})", 14, "first argument of if_not_exists"),
        (E, "if_not_exists(${a} {2})", 19, "expected ',' and a default value in if_not_exists"),
        (E, "list_append(${a})", 16, "expected ',' and a second list in list_append"),
        (E, "list_append(${a}, ${b}", 22, "expected ')' to close list_append("),
        (E, "attribute_exists(${a})", 0, "attribute_exists() is a condition, not a value"),
        (E, "size(${a})", 0, "size() is only valid in a condition"),
        (E, "nope(${a})", 0, "unknown function 'nope'"),
        (E, "@{...x}", 0, "@{...x} expands a list and is only valid inside IN (...)"),
        (E, "(${a})", 0, "expected a value"),
        (E, "${name} + {1}", 0, "cannot add text to a number: ${name} is S"),
        (E, "{1} + ${name}", 6, "cannot add text to a number: ${name} is S"),
        (E, "{1} - ${flag}", 6, "cannot subtract a boolean from a number: ${flag} is BOOL"),
        (E, "${tags} - {1}", 0, "cannot subtract a number from a list: ${tags} is L"),
        (E, "${missing} + {1}", 0, "attribute ${missing} does not exist in the item: use if_not_exists(${missing}"),
        (E, "${missing}", 0, "attribute ${missing} does not exist"),
        (E, "list_append(${tags}, {x})", 21, "list_append needs two lists: {x} is S"),
        (E, "list_append(${name}, ${tags})", 12, "list_append needs two lists: ${name} is S"),
        (E, "${age} + @{x}", 9, "substitution @{x} is not given"),
    ];
    for (kind, text, position, message) in cases {
        check_error(kind, text, position, message);
    }
}

#[test]
fn arithmetic_out_of_range_is_an_error() {
    check_error(Kind::Expr, "{9e125} + {9e125}", 10, "out of range");
    check_error(Kind::Expr, "${big} + {0.1}", 9, "out of range");
    check_error(Kind::Expr, "{9e38} - {1}", 9, "out of range");
}

#[test]
fn substitution_numbers_out_of_range_are_errors() {
    let subs: Subs = serde_json::from_str(r#"{"huge": 1e400}"#).unwrap();
    let err = parse_condition("${a} = @{huge}")
        .unwrap()
        .eval(&Item::new(), &subs)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("substitution @{huge} is not a valid value"),
        "{err}"
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = |open: &str, inner: &str, close: &str, n: usize| {
        format!("{}{inner}{}", open.repeat(n), close.repeat(n))
    };
    let ok = deep("(", "${a} = {1}", ")", DEPTH_MAX);
    assert!(parse_condition(&ok).is_ok());
    for text in [
        deep("(", "${a} = {1}", ")", DEPTH_MAX + 1),
        deep("(", "", "", 100_000),
        deep("NOT ", "${a} = {1}", "", 100_000),
    ] {
        let err = parse_condition(&text).unwrap_err();
        assert!(
            err.to_string().contains("nested deeper than 64 levels"),
            "{err}"
        );
    }
    let lists = deep("list_append(", "@{more}", ", @{more})", 10_000);
    assert!(
        parse_expr(&lists)
            .unwrap_err()
            .to_string()
            .contains("nested deeper")
    );
}

#[test]
fn long_chains_are_flat() {
    let item = item(&json!({"a": 1}));
    let chain = vec!["${a} = {1}"; 50_000].join(" AND ");
    assert!(
        parse_condition(&chain)
            .unwrap()
            .eval(&item, &subs())
            .unwrap()
    );
    let chain = vec!["${a} = {2}"; 50_000].join(" or ");
    assert!(
        !parse_condition(&chain)
            .unwrap()
            .eval(&item, &subs())
            .unwrap()
    );
    let sum = vec!["${a}"; 50_000].join(" + ");
    assert_eq!(
        parse_expr(&sum).unwrap().eval(&item, &subs()).unwrap(),
        Value::int(50_000)
    );
}

#[test]
fn attributes_are_distinct_top_level_names() {
    let text = "${b.c} = {1} AND size(${c[0]}) > {1} OR attribute_exists(${b}) OR ${d} IN (${e}, {1}) \
                OR contains(${f}, ${g}) OR ${a} BETWEEN {1} AND ${h}";
    let names = parse_condition(text).unwrap().attributes();
    assert_eq!(names, ["a", "b", "c", "d", "e", "f", "g", "h"]);
    assert!(
        parse_condition("{1} = @{x}")
            .unwrap()
            .attributes()
            .is_empty()
    );
}

#[test]
fn rename_rewrites_the_first_segment() {
    let map = |name: &str| match name {
        "email" => Some("gs1pk".to_string()),
        "profile" => Some("p".to_string()),
        "count" => Some("c".to_string()),
        _ => None,
    };
    let mut cond =
        parse_condition("${email} = {x} AND ${profile.email} = {y} AND attribute_exists(${other})")
            .unwrap();
    cond.rename(&map);
    assert_eq!(cond.attributes(), ["gs1pk", "other", "p"]);
    let stored = json!({"gs1pk": "x", "p": {"email": "y"}, "other": 1});
    assert!(cond.eval(&item(&stored), &subs()).unwrap());
    let unmapped = json!({"email": "x", "profile": {"email": "y"}, "other": 1});
    assert!(!cond.eval(&item(&unmapped), &subs()).unwrap());

    let mut expr = parse_expr("if_not_exists(${count}, {0}) + {1}").unwrap();
    expr.rename(&map);
    assert_eq!(
        expr.eval(&item(&json!({"c": 5})), &subs()).unwrap(),
        Value::int(6)
    );
    assert_eq!(
        expr.eval(&item(&json!({"count": 5})), &subs()).unwrap(),
        Value::int(1)
    );
}

/// No input makes the parser or evaluator panic, and every error points inside the text.
#[test]
fn random_and_truncated_text_never_panics() {
    const PIECES: [&str; 40] = [
        "${a}",
        "${b.c}",
        "${t[0]}",
        "${",
        "{1}",
        "{-2.5}",
        "{\"x\"}",
        "{'",
        "{",
        "}",
        "@{s}",
        "@{...l}",
        "@{",
        "(",
        ")",
        ",",
        " AND ",
        " OR ",
        " NOT ",
        "=",
        "<>",
        "<",
        ">=",
        " BETWEEN ",
        " IN ",
        "size(",
        "contains(",
        "begins_with(",
        "attribute_type(",
        "attribute_exists(",
        "if_not_exists(",
        "list_append(",
        "+",
        "-",
        "é",
        " ",
        "\\",
        "\"",
        "$",
        "{S}",
    ];
    let item = item(&json!({"a": 1, "b": {"c": "x"}, "t": [1, 2]}));
    let subs: Subs = json!({"s": "x", "l": [1, "x"]})
        .as_object()
        .unwrap()
        .clone();
    let try_text = |text: &str| {
        let results = [
            parse_condition(text).and_then(|c| c.eval(&item, &subs).map(|_| ())),
            parse_expr(text).and_then(|e| e.eval(&item, &subs).map(|_| ())),
        ];
        for result in results {
            if let Err(Error::Expression { position, .. }) = result {
                assert!(
                    text.is_char_boundary(position),
                    "{text:?}: position {position}"
                );
            }
        }
    };
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..20_000 {
        let len = rng.usize(1..12);
        let text: String = (0..len)
            .map(|_| PIECES[rng.usize(..PIECES.len())])
            .collect();
        try_text(&text);
    }
    for _ in 0..2_000 {
        let text: String = (0..rng.usize(0..20)).map(|_| rng.char(..)).collect();
        try_text(&text);
    }
    let valid = "NOT (${a} = {1} OR size(${b.c}) IN ({1}, @{...l})) AND begins_with(${b.c}, {\"x\"}) \
                 AND ${t[1]} BETWEEN {-1} AND @{s} + list_append(if_not_exists(${a}, {'é'}), ${t})";
    for (end, _) in valid.char_indices() {
        try_text(&valid[..end]);
        try_text(&valid[end..]);
    }
}
