//! Properties of the filter language: printing and parsing agree, no input makes the parser or the
//! evaluator panic, nesting is limited exactly where documented.

use proptest::prelude::*;
use serde_yaml::Value;

use super::*;

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_][a-z0-9_]{0,6}",
        Just("and".to_owned()),
        Just("not".to_owned()),
        // Not a word: written `["…"]`.
        any::<String>(),
    ]
}

fn literal() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<String>().prop_map(Value::String),
        (-i64::MAX..=i64::MAX).prop_map(Value::from),
        any::<f64>()
            .prop_filter("a finite number", |f| f.is_finite())
            .prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ]
}

fn path() -> impl Strategy<Value = Expr> {
    prop::collection::vec(
        prop_oneof![
            field_name().prop_map(Segment::Field),
            (-i64::MAX..=i64::MAX).prop_map(Segment::Index),
        ],
        0..4,
    )
    .prop_map(Expr::Path)
}

fn compare_op() -> impl Strategy<Value = CompareOp> {
    prop::sample::select(vec![
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Lt,
        CompareOp::Le,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::In,
        CompareOp::NotIn,
        CompareOp::Is,
        CompareOp::IsNot,
    ])
}

/// Syntax trees the parser can produce (and-/or-chains of two terms or more, one argument per
/// call, only known methods).
fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![literal().prop_map(Expr::Literal), path()];
    leaf.prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Expr::List),
            (
                inner.clone(),
                prop::sample::select(vec!["startswith", "endswith", "lower", "upper", "strip"]),
                prop::collection::vec(inner.clone(), 0..3),
            )
                .prop_map(|(target, name, args)| Expr::Method {
                    target: Box::new(target),
                    name: name.to_owned(),
                    args,
                }),
            (
                prop::sample::select(vec!["len", "str", "int"]),
                inner.clone()
            )
                .prop_map(|(name, arg)| Expr::Call {
                    name: name.to_owned(),
                    arg: Box::new(arg),
                }),
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
            (compare_op(), inner.clone(), inner).prop_map(|(op, left, right)| Expr::Compare {
                op,
                left: Box::new(left),
                right: Box::new(right),
            }),
        ]
    })
}

fn bound() -> impl Strategy<Value = Option<i64>> {
    prop::option::of(prop_oneof![-5i64..5, -i64::MAX..=i64::MAX])
}

fn stage() -> impl Strategy<Value = Stage> {
    prop_oneof![
        3 => expr()
            .prop_filter("a stage mentions the item", mentions_root)
            .prop_map(Stage::Predicate),
        1 => prop_oneof![-5i64..5, -i64::MAX..=i64::MAX].prop_map(Stage::Index),
        1 => (
            bound(),
            bound(),
            bound().prop_filter("a step is never zero", |s| *s != Some(0))
        )
            .prop_map(|(start, stop, step)| Stage::Slice(start, stop, step)),
    ]
}

fn filter() -> impl Strategy<Value = Filter> {
    prop::collection::vec(stage(), 1..4).prop_map(|stages| Filter {
        key: "inv".to_owned(),
        stages,
    })
}

/// Fragments that make text which parses now and then and fails in every way otherwise.
fn token_soup() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "@inv",
        "@res",
        "@",
        ".",
        "name",
        "_broker_args",
        "(",
        ")",
        "[",
        "]",
        "==",
        "!=",
        "<",
        ">=",
        "=",
        "not",
        "in",
        "is",
        "None",
        "True",
        "and",
        "or",
        "'rhel'",
        "\"a\\\"b\"",
        "'",
        "1",
        "-",
        "-1",
        "1.5",
        "99999999999999999999",
        ":",
        "|",
        ",",
        "len",
        "str",
        "lower",
        "startswith",
        " ",
        "\t",
        "é",
        "\u{0}",
    ]);
    prop::collection::vec(token, 0..24).prop_map(|tokens| tokens.join(""))
}

/// Python's slice of `0..len`, computed in wide integers.
fn python_slice(len: usize, start: Option<i64>, stop: Option<i64>, step: i64) -> Vec<usize> {
    let len = len as i128;
    let norm = |v: i64| {
        let v = v as i128;
        if v < 0 { v + len } else { v }
    };
    let mut out = Vec::new();
    if step > 0 {
        let mut i = start.map(norm).unwrap_or(0).clamp(0, len);
        let stop = stop.map(norm).unwrap_or(len).clamp(0, len);
        while i < stop {
            out.push(i as usize);
            i += step as i128;
        }
    } else {
        let mut i = start.map(norm).unwrap_or(len - 1).clamp(-1, len - 1);
        let stop = stop.map(norm).unwrap_or(-1).clamp(-1, len - 1);
        while i > stop {
            out.push(i as usize);
            i += step as i128;
        }
    }
    out
}

fn items(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            serde_yaml::from_str(&format!(
                "{{name: host-{i}, n: {i}, tags: [a, '{i}'], _broker_args: {{v: '{i}.0'}}}}"
            ))
            .expect("a valid item")
        })
        .collect()
}

proptest! {
    #![proptest_config(crate::proptest_config(256))]

    #[test]
    fn a_printed_filter_parses_back_to_itself(filter in filter()) {
        let text = filter.to_string();
        let parsed = Filter::parse(&text, "inv");
        prop_assert_eq!(parsed.as_ref(), Ok(&filter), "printed as {}", text);
    }

    #[test]
    fn evaluation_never_panics_and_selects_only_given_items(filter in filter(), n in 0usize..6) {
        let items = items(n);
        let selected = filter.select(&items);
        prop_assert!(selected.iter().all(|i| *i < n), "{selected:?} of {n}");
    }

    #[test]
    fn list_stages_follow_python_slices(
        n in 0usize..8,
        start in bound(),
        stop in bound(),
        step in prop_oneof![-4i64..5, -i64::MAX..=i64::MAX, Just(i64::MAX), Just(-i64::MAX)]
            .prop_filter("a step is never zero", |s| *s != 0),
    ) {
        let filter = Filter {
            key: "inv".to_owned(),
            stages: vec![Stage::Slice(start, stop, Some(step))],
        };
        prop_assert_eq!(filter.select(&items(n)), python_slice(n, start, stop, step));
    }

    #[test]
    fn any_text_parses_or_fails_at_a_column_inside_it(text in prop_oneof![token_soup(), any::<String>()]) {
        match Filter::parse(&text, "inv") {
            Ok(filter) => {
                // What parses prints as text that parses to the same filter.
                let printed = filter.to_string();
                prop_assert_eq!(Filter::parse(&printed, "inv"), Ok(filter), "printed as {}", printed);
            }
            Err(e) => {
                let end = text.chars().count() + 1;
                prop_assert!((1..=end).contains(&e.column()), "column {} of {:?}: {}", e.column(), text, e);
                prop_assert!(!e.message().is_empty());
            }
        }
    }

    #[test]
    fn nesting_is_refused_exactly_past_the_limit_at_the_opening_that_exceeds_it(
        openers in prop::collection::vec(
            prop::sample::select(vec![("(", ")"), ("[", "]"), ("not ", ""), ("len(", ")"), ("str(", ")")]),
            1..2 * MAX_NESTING,
        ),
    ) {
        let mut text = String::new();
        let mut columns = Vec::new();
        for (open, _) in &openers {
            columns.push(text.chars().count() + 1);
            text.push_str(open);
        }
        text.push_str("@inv.name");
        for (_, close) in openers.iter().rev() {
            text.push_str(close);
        }
        match Filter::parse(&text, "inv") {
            Ok(_) => prop_assert!(openers.len() <= MAX_NESTING, "{} levels parsed", openers.len()),
            Err(e) => {
                prop_assert!(openers.len() > MAX_NESTING, "{}: {}", text, e);
                prop_assert_eq!(e.column(), columns[MAX_NESTING]);
                prop_assert!(e.message().contains("nests too deeply"), "{}", e.message());
            }
        }
    }
}
