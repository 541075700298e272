//! Templates in scenario files: Jinja2 through minijinja, strict about undefined names, with Python's
//! string and dict methods (`.startswith`, `.items()`) and the builtins the Python broker adds (`len`,
//! `int`, `sorted`, …). A template that is exactly `{{ expr }}` gives the value itself (a list stays a
//! list); any other gives text.

use minijinja::value::{Kwargs, Rest, Value as Jinja};
use minijinja::{Environment, Error as JinjaError, ErrorKind, State, UndefinedBehavior};
use serde_yaml::{Mapping, Value};

/// The template engine of one scenario run.
pub struct Templates {
    env: Environment<'static>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

/// A context ready for rendering (converted once, rendered many times).
pub struct Context(Jinja);

impl Context {
    /// The context of `names`.
    pub fn new(names: &Mapping) -> Context {
        Context(Jinja::from(minijinja::value::Serde(names)))
    }
}

impl Templates {
    /// The engine, with the builtins.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        add_builtins(&mut env);
        Templates { env }
    }

    /// Renders every string in `value` (mappings and lists recursively).
    ///
    /// # Errors
    /// What is wrong with the first template that fails: syntax, an undefined name, a bad call.
    pub fn render(&self, value: &Value, cx: &Context) -> Result<Value, String> {
        match value {
            Value::String(text) => self.render_text(text, cx),
            Value::Sequence(items) => items
                .iter()
                .map(|v| self.render(v, cx))
                .collect::<Result<_, _>>()
                .map(Value::Sequence),
            Value::Mapping(map) => {
                let mut out = Mapping::new();
                for (k, v) in map {
                    out.insert(k.clone(), self.render(v, cx)?);
                }
                Ok(Value::Mapping(out))
            }
            other => Ok(other.clone()),
        }
    }

    /// Renders one string: itself when it holds no template, the value of `expr` when it is exactly
    /// `{{ expr }}`, else the rendered text.
    ///
    /// # Errors
    /// As [`Templates::render`].
    pub fn render_text(&self, text: &str, cx: &Context) -> Result<Value, String> {
        if !text.contains("{{") && !text.contains("{%") {
            return Ok(Value::String(text.to_owned()));
        }
        if let Some(expr) = sole_expression(text) {
            return self.eval(expr, cx);
        }
        self.env
            .render_str(text, cx.0.clone())
            .map(Value::String)
            .map_err(|e| described(&e, text))
    }

    /// The value of an expression (no `{{ }}` around it).
    ///
    /// # Errors
    /// A syntax error, an undefined name, a failed call.
    pub fn eval(&self, expr: &str, cx: &Context) -> Result<Value, String> {
        let compiled = self
            .env
            .compile_expression(expr)
            .map_err(|e| described(&e, expr))?;
        let value = compiled
            .eval(cx.0.clone())
            .map_err(|e| described(&e, expr))?;
        if value.is_undefined() {
            return Err(format!("`{expr}` is undefined"));
        }
        serde_yaml::to_value(&value).map_err(|e| format!("`{expr}` gives no plain value: {e}"))
    }

    /// Whether a condition (`when`, `assert`) holds: an expression, with or without `{{ }}`; text
    /// results `true`/`yes`/`1` hold and `false`/`no`/`0`/`none`/empty do not, as in the Python broker.
    ///
    /// # Errors
    /// As [`Templates::eval`].
    pub fn condition(&self, expr: &str, cx: &Context) -> Result<bool, String> {
        let trimmed = expr.trim();
        let value = if trimmed.starts_with("{{") {
            self.render_text(trimmed, cx)?
        } else {
            self.eval(trimmed, cx)?
        };
        Ok(truthy(&value))
    }
}

/// `expr` when `text` is exactly one `{{ expr }}` (surrounding blanks aside).
fn sole_expression(text: &str) -> Option<&str> {
    let t = text.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}") && !t.contains("{%")).then(|| inner.trim())
}

/// Python's truth of a value, with the text forms the Python broker reads.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "" | "false" | "no" | "0" | "none"
        ),
        Value::Sequence(s) => !s.is_empty(),
        Value::Mapping(m) => !m.is_empty(),
        Value::Tagged(t) => truthy(&t.value),
    }
}

/// A template error as one line, naming the template.
fn described(error: &JinjaError, template: &str) -> String {
    let what = match error.kind() {
        ErrorKind::UndefinedError => "an undefined name or attribute",
        ErrorKind::SyntaxError => "a syntax error",
        _ => "an error",
    };
    match error.detail() {
        Some(detail) => format!("template `{template}` has {what}: {detail}"),
        None => format!("template `{template}` has {what}: {error}"),
    }
}

fn no_kwargs() -> Kwargs {
    Kwargs::from_iter(std::iter::empty::<(&str, Jinja)>())
}

/// The arguments of a Python builtin that takes one iterable or several values (`min(a, b)`).
fn one_or_many(args: Rest<Jinja>) -> Jinja {
    match <[Jinja; 1]>::try_from(args.0) {
        Ok([one]) => one,
        Err(many) => Jinja::from(many),
    }
}

fn items(state: &State, value: Jinja) -> Result<Vec<Jinja>, JinjaError> {
    let list = minijinja::filters::list(state, value)?;
    Ok(list.try_iter()?.collect())
}

/// Python's builtins the Python broker's templates may call.
fn add_builtins(env: &mut Environment<'static>) {
    use minijinja::filters;
    env.add_function("len", |v: Jinja| filters::length(&v));
    env.add_function("int", |s: &State, v: Jinja| {
        filters::int(s, &v, None, None, no_kwargs())
    });
    env.add_function("float", |s: &State, v: Jinja| {
        filters::float(s, &v, None, no_kwargs())
    });
    env.add_function("str", |s: &State, v: Jinja| filters::string(s, &v));
    env.add_function("bool", |s: &State, v: Jinja| filters::bool(s, &v));
    env.add_function("list", |s: &State, v: Jinja| filters::list(s, v));
    env.add_function("tuple", |s: &State, v: Jinja| filters::list(s, v));
    env.add_function("set", |s: &State, v: Jinja| {
        filters::unique(s, v, no_kwargs())
    });
    env.add_function("sum", |s: &State, v: Jinja| {
        filters::sum(s, v, None, None, no_kwargs())
    });
    env.add_function("min", |s: &State, a: Rest<Jinja>| {
        filters::min(s, one_or_many(a), no_kwargs())
    });
    env.add_function("max", |s: &State, a: Rest<Jinja>| {
        filters::max(s, one_or_many(a), no_kwargs())
    });
    env.add_function("abs", filters::abs);
    env.add_function("round", |v: Jinja, digits: Option<i32>| {
        filters::round(v, digits, None, no_kwargs())
    });
    env.add_function("sorted", |s: &State, v: Jinja| {
        filters::sort(s, v, no_kwargs())
    });
    env.add_function("reversed", |v: Jinja| filters::reverse(&v));
    env.add_function("zip", |s: &State, first: Jinja, rest: Rest<Jinja>| {
        filters::zip(s, first, rest)
    });
    env.add_function("enumerate", |s: &State, v: Jinja| {
        Ok::<_, JinjaError>(Jinja::from(
            items(s, v)?
                .into_iter()
                .enumerate()
                .map(|(i, item)| Jinja::from(vec![Jinja::from(i), item]))
                .collect::<Vec<_>>(),
        ))
    });
    env.add_function("any", |s: &State, v: Jinja| {
        Ok::<_, JinjaError>(items(s, v)?.iter().any(Jinja::is_true))
    });
    env.add_function("all", |s: &State, v: Jinja| {
        Ok::<_, JinjaError>(items(s, v)?.iter().all(Jinja::is_true))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(yaml: &str) -> Context {
        Context::new(&serde_yaml::from_str(yaml).unwrap())
    }

    fn render(text: &str, names: &str) -> Result<Value, String> {
        Templates::new().render_text(text, &cx(names))
    }

    #[test]
    fn a_sole_expression_keeps_its_type_and_other_templates_give_text() {
        let names = "{hosts: [{hostname: a}, {hostname: b}], n: 2, flag: true, d: {k: v}}";
        assert_eq!(
            render("{{ hosts }}", names).unwrap(),
            serde_yaml::from_str::<Value>("[{hostname: a}, {hostname: b}]").unwrap()
        );
        assert_eq!(render(" {{ n + 1 }} ", names).unwrap(), Value::from(3));
        assert_eq!(render("{{ flag }}", names).unwrap(), Value::Bool(true));
        assert_eq!(render("n={{ n }}", names).unwrap(), Value::from("n=2"));
        assert_eq!(render("{{ n }}{{ n }}", names).unwrap(), Value::from("22"));
        // Closing braces after the expression are text, not part of the expression.
        assert_eq!(render("{{ n }} }}", names).unwrap(), Value::from("2 }}"));
        assert_eq!(
            render("plain {x}", names).unwrap(),
            Value::from("plain {x}")
        );
        assert_eq!(
            render("{% if flag %}yes{% endif %}", names).unwrap(),
            Value::from("yes")
        );
    }

    #[test]
    fn undefined_names_fail_with_the_template_named() {
        for text in [
            "{{ missing }}",
            "x {{ missing }}",
            "{{ d.k.missing.deeper }}",
        ] {
            let e = render(text, "{d: {k: v}}").unwrap_err();
            assert!(
                e.contains("undefined") && e.contains("missing"),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn python_builtins_and_methods_work_as_in_the_python_broker() {
        let names = "{xs: [3, 1, 2], d: {a: 1, b: 2}, s: 'rhel-9', flags: [true, false]}";
        for (text, want) in [
            ("{{ len(xs) }}", "3"),
            ("{{ sorted(xs) }}", "[1, 2, 3]"),
            ("{{ sum(xs) }}", "6"),
            ("{{ min(xs) }}", "1"),
            ("{{ max(4, 9) }}", "9"),
            ("{{ int('7') + 1 }}", "8"),
            ("{{ float('1.5') }}", "1.5"),
            ("{{ str(7) }}", "'7'"),
            ("{{ abs(-4) }}", "4"),
            ("{{ round(2.567, 1) }}", "2.6"),
            ("{{ list(reversed(xs)) }}", "[2, 1, 3]"),
            ("{{ any(flags) }}", "true"),
            ("{{ all(flags) }}", "false"),
            ("{{ enumerate(['a']) }}", "[[0, a]]"),
            ("{{ s.startswith('rhel') }}", "true"),
            ("{{ s.upper() }}", "RHEL-9"),
            ("{{ d.items() | list }}", "[[a, 1], [b, 2]]"),
            ("{{ bool(0) }}", "false"),
            ("{{ set([1, 1, 2]) | length }}", "2"),
        ] {
            let want: Value = serde_yaml::from_str(want).unwrap();
            assert_eq!(render(text, names).unwrap(), want, "{text}");
        }
    }

    #[test]
    fn conditions_read_text_results_as_the_python_broker_does() {
        let t = Templates::new();
        let c = cx("{n: 1, s: 'no', e: ''}");
        assert!(t.condition("n == 1", &c).unwrap());
        assert!(t.condition("{{ n == 1 }}", &c).unwrap());
        assert!(!t.condition("s", &c).unwrap());
        assert!(!t.condition("e", &c).unwrap());
        assert!(t.condition("missing", &c).is_err());
    }
}
