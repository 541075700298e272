//! The `--filter` language: the Python broker's syntax, parsed and evaluated, never `eval`ed.
//!
//! A filter is a pipeline of stages joined by `|`, applied left to right:
//! - a **predicate** keeps the items for which it is true:
//!   `@inv.hostname`, `'rhel' in @inv.name`, `@inv._broker_args.deploy_rhel_version == "9.4"`,
//!   `@inv.name.startswith("sat")`, combined with `and`, `or`, `not` and parentheses;
//! - a **list stage** picks by position: `@inv[-1]`, `@inv[1:3]`, `@inv[:]`, `@inv[::2]`.
//!
//! `@inv` stands for the item (the key is `@res` for provider results). A field an item lacks is
//! *missing*: it compares unequal to everything and is false. Comparing a number with a string compares
//! their text, so `@inv._broker_args.version == "9.4"` matches `version: 9.4` too.
//!
//! Supported operators: `==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `not in`, `is None`, `is not None`;
//! methods `startswith`, `endswith` (a string or a list of strings), `lower`, `upper`, `strip`; functions
//! `len`, `str`, `int`. Literals: strings in single or double quotes, integers, floats, `True`, `False`,
//! `None`, and lists `[a, b]`.
//!
//! ```
//! use broker_core::filter::Filter;
//!
//! let filter = Filter::parse(r#"'rhel' in @inv.name | @inv[-1]"#, "inv").unwrap();
//! let hosts: Vec<serde_yaml::Value> = serde_yaml::from_str(
//!     "[{name: rhel-9}, {name: fedora}, {name: rhel-8}]",
//! ).unwrap();
//! assert_eq!(filter.select(&hosts), vec![2]);
//! ```

use std::borrow::Cow;
use std::fmt;

use serde_yaml::{Mapping, Value};

/// Defined with the other errors (the error module depends on nothing above it); it lives on here.
pub use crate::error::FilterError;

/// Something a filter can look into: an inventory record or a provider result.
pub trait FilterTarget {
    /// The item's field `key` (none when the item is not a mapping).
    fn field(&self, key: &str) -> Option<&Value>;
    /// The item itself as a value (used when the filter tests `@inv` itself).
    fn as_value(&self) -> Option<Cow<'_, Value>>;
}

impl FilterTarget for Value {
    fn field(&self, key: &str) -> Option<&Value> {
        field_of(self, key)
    }
    fn as_value(&self) -> Option<Cow<'_, Value>> {
        Some(Cow::Borrowed(self))
    }
}

impl FilterTarget for Mapping {
    fn field(&self, key: &str) -> Option<&Value> {
        self.get(key)
    }
    fn as_value(&self) -> Option<Cow<'_, Value>> {
        Some(Cow::Owned(Value::Mapping(self.clone())))
    }
}

impl<T: FilterTarget> FilterTarget for &T {
    fn field(&self, key: &str) -> Option<&Value> {
        (*self).field(key)
    }
    fn as_value(&self) -> Option<Cow<'_, Value>> {
        (*self).as_value()
    }
}

fn field_of<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    match value {
        Value::Mapping(m) => m.get(key),
        Value::Tagged(t) => field_of(&t.value, key),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Root(String),
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Dot,
    LBracket,
    RBracket,
    LParen,
    RParen,
    Colon,
    Comma,
    Pipe,
    Op(&'static str),
    Minus,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    col: usize,
}

fn lex(text: &str, err: &dyn Fn(usize, String) -> FilterError) -> Result<Vec<Token>, FilterError> {
    let mut lexer = Lexer {
        chars: text.chars().collect(),
        pos: 0,
        err,
    };
    let mut tokens = Vec::new();
    while let Some(&c) = lexer.chars.get(lexer.pos) {
        let col = lexer.pos + 1;
        let tok = match c {
            ' ' | '\t' | '\n' | '\r' => {
                lexer.pos += 1;
                continue;
            }
            '@' => lexer.root(col)?,
            '\'' | '"' => lexer.string(c, col)?,
            '0'..='9' => lexer.number(col)?,
            c if c.is_alphabetic() || c == '_' => Tok::Ident(lexer.word()),
            _ => lexer.punctuation(c, col)?,
        };
        tokens.push(Token { tok, col });
    }
    Ok(tokens)
}

/// The lexer's place in the filter text: each method reads one token starting at `pos` and moves
/// `pos` past it.
struct Lexer<'e> {
    chars: Vec<char>,
    pos: usize,
    err: &'e dyn Fn(usize, String) -> FilterError,
}

impl Lexer<'_> {
    fn error(&self, col: usize, message: impl Into<String>) -> FilterError {
        (self.err)(col, message.into())
    }

    /// Letters, digits and `_` from `pos` on (possibly none).
    fn word(&mut self) -> String {
        let start = self.pos;
        while self
            .chars
            .get(self.pos)
            .is_some_and(|c| c.is_alphanumeric() || *c == '_')
        {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// `@inv`: the item's name after the `@`.
    fn root(&mut self, col: usize) -> Result<Tok, FilterError> {
        self.pos += 1;
        let name = self.word();
        if name.is_empty() {
            return Err(self.error(col, "`@` must be followed by a name such as `@inv`"));
        }
        Ok(Tok::Root(name))
    }

    /// A string in `quote`s, with `\n`, `\t` and `\`-escaped characters.
    fn string(&mut self, quote: char, col: usize) -> Result<Tok, FilterError> {
        let mut s = String::new();
        self.pos += 1;
        loop {
            match self.chars.get(self.pos) {
                None => return Err(self.error(col, "this string is never closed")),
                Some('\\') => {
                    match self.chars.get(self.pos + 1) {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some(other) => s.push(*other),
                        None => return Err(self.error(col, "this string is never closed")),
                    }
                    self.pos += 2;
                }
                Some(ch) if *ch == quote => {
                    self.pos += 1;
                    return Ok(Tok::Str(s));
                }
                Some(ch) => {
                    s.push(*ch);
                    self.pos += 1;
                }
            }
        }
    }

    /// An integer (`1_000`) or a float (`9.4`).
    fn number(&mut self, col: usize) -> Result<Tok, FilterError> {
        let chars = &self.chars;
        let start = self.pos;
        let mut i = self.pos;
        while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '_') {
            i += 1;
        }
        let mut is_float = false;
        if i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit() {
            is_float = true;
            i += 1;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
        }
        self.pos = i;
        let text: String = chars[start..i].iter().filter(|c| **c != '_').collect();
        if is_float {
            Ok(Tok::Float(
                text.parse().map_err(|_| self.error(col, "bad number"))?,
            ))
        } else {
            Ok(Tok::Int(
                text.parse()
                    .map_err(|_| self.error(col, "number too large"))?,
            ))
        }
    }

    /// An operator or a punctuation mark.
    fn punctuation(&mut self, c: char, col: usize) -> Result<Tok, FilterError> {
        let i = self.pos;
        let two: String = self.chars[i..(i + 2).min(self.chars.len())]
            .iter()
            .collect();
        let (tok, len) = match (c, two.as_str()) {
            (_, "==") => (Tok::Op("=="), 2),
            (_, "!=") => (Tok::Op("!="), 2),
            (_, "<=") => (Tok::Op("<="), 2),
            (_, ">=") => (Tok::Op(">="), 2),
            ('<', _) => (Tok::Op("<"), 1),
            ('>', _) => (Tok::Op(">"), 1),
            ('=', _) => {
                return Err(self.error(col, "`=` is not a comparison; write `==`"));
            }
            ('.', _) => (Tok::Dot, 1),
            ('[', _) => (Tok::LBracket, 1),
            (']', _) => (Tok::RBracket, 1),
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            (':', _) => (Tok::Colon, 1),
            (',', _) => (Tok::Comma, 1),
            ('|', _) => (Tok::Pipe, 1),
            ('-', _) => (Tok::Minus, 1),
            _ => return Err(self.error(col, format!("unexpected character `{c}`"))),
        };
        self.pos += len;
        Ok(tok)
    }
}

// ---------------------------------------------------------------------------------------------------
// Syntax tree

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Literal(Value),
    List(Vec<Expr>),
    /// `@inv.a.b[0]`: the item, then fields and indexes.
    Path(Vec<Segment>),
    Method {
        target: Box<Expr>,
        name: String,
        args: Vec<Expr>,
    },
    Call {
        name: String,
        arg: Box<Expr>,
    },
    Not(Box<Expr>),
    /// `a and b and c`: a flat list, so that a long chain is no deep tree.
    And(Vec<Expr>),
    /// `a or b or c`.
    Or(Vec<Expr>),
    Compare {
        op: CompareOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Field(String),
    Index(i64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Is,
    IsNot,
}

#[derive(Debug, Clone, PartialEq)]
enum Stage {
    Predicate(Expr),
    Index(i64),
    Slice(Option<i64>, Option<i64>, Option<i64>),
}

/// A parsed filter.
///
/// It displays as filter text that parses back to the same filter (`Filter::parse(&f.to_string(),
/// key)` equals `f`), with as few parentheses as that needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The item name without `@` (`inv`, `res`).
    key: String,
    stages: Vec<Stage>,
}

/// How deeply parentheses, lists, calls, `not`s and method chains may nest. Python refuses about
/// 200 levels of parentheses; a filter needs a handful. The parser and the evaluator recurse once
/// per level, so the limit is what keeps `((((…` from overflowing the stack.
pub const MAX_NESTING: usize = 100;

struct Parser<'t> {
    tokens: &'t [Token],
    pos: usize,
    key: &'t str,
    end_col: usize,
    filter: &'t str,
    /// Levels of nesting open at `pos`.
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, col: usize, message: impl Into<String>) -> FilterError {
        FilterError {
            filter: self.filter.to_owned(),
            column: col,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.tok)
    }

    fn col(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map(|t| t.col)
            .unwrap_or(self.end_col)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.tokens.get(self.pos).map(|t| t.tok.clone());
        self.pos += 1;
        t
    }

    fn expect(&mut self, want: &Tok, what: &str) -> Result<(), FilterError> {
        if self.peek() == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(self.col(), format!("expected {what}")))
        }
    }

    fn is_ident(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w == word)
    }

    /// Opens `levels` more levels of nesting at column `col`; an error past [`MAX_NESTING`].
    fn nest(&mut self, col: usize, levels: usize) -> Result<(), FilterError> {
        self.depth += levels;
        if self.depth > MAX_NESTING {
            return Err(self.err(
                col,
                format!(
                    "the filter nests too deeply here (more than {MAX_NESTING} levels of \
                     parentheses, lists, calls, methods or `not`); write it flatter"
                ),
            ));
        }
        Ok(())
    }

    fn stage(&mut self) -> Result<Stage, FilterError> {
        let start_col = self.col();
        if let (
            Some(Tok::Root(_)),
            Some(Tok::LBracket),
            Some(Tok::Int(_) | Tok::Minus | Tok::Colon),
        ) = (
            self.tokens.get(self.pos).map(|t| &t.tok),
            self.tokens.get(self.pos + 1).map(|t| &t.tok),
            self.tokens.get(self.pos + 2).map(|t| &t.tok),
        ) {
            self.root()?;
            self.pos += 1;
            let stage = self.list_selector()?;
            self.expect(&Tok::RBracket, "`]`")?;
            if self.pos < self.tokens.len() {
                return Err(self.err(
                    self.col(),
                    format!(
                        "a list stage ends at `]`; to test a field write `@{}.field …` in its own stage",
                        self.key
                    ),
                ));
            }
            return Ok(stage);
        }
        let expr = self.or()?;
        if self.pos < self.tokens.len() {
            return Err(self.err(self.col(), "unexpected text after the expression"));
        }
        if !mentions_root(&expr) {
            return Err(self.err(
                start_col,
                format!(
                    "this stage never mentions `@{}`, so it would select nothing useful",
                    self.key
                ),
            ));
        }
        Ok(Stage::Predicate(expr))
    }

    fn signed_int(&mut self) -> Result<Option<i64>, FilterError> {
        let negative = if self.peek() == Some(&Tok::Minus) {
            self.pos += 1;
            true
        } else {
            false
        };
        match self.peek() {
            Some(Tok::Int(n)) => {
                let n = *n;
                self.pos += 1;
                Ok(Some(if negative { -n } else { n }))
            }
            _ if negative => Err(self.err(self.col(), "expected a number after `-`")),
            _ => Ok(None),
        }
    }

    fn list_selector(&mut self) -> Result<Stage, FilterError> {
        let col = self.col();
        let start = self.signed_int()?;
        if self.peek() != Some(&Tok::Colon) {
            return start.map(Stage::Index).ok_or_else(|| {
                self.err(
                    col,
                    "expected an index such as `-1` or a slice such as `1:3`",
                )
            });
        }
        self.pos += 1;
        let stop = self.signed_int()?;
        let mut step = None;
        if self.peek() == Some(&Tok::Colon) {
            self.pos += 1;
            let step_col = self.col();
            step = self.signed_int()?;
            if step == Some(0) {
                return Err(self.err(step_col, "a slice step cannot be zero"));
            }
        }
        Ok(Stage::Slice(start, stop, step))
    }

    fn root(&mut self) -> Result<(), FilterError> {
        let col = self.col();
        match self.next() {
            Some(Tok::Root(name)) if name == self.key => Ok(()),
            Some(Tok::Root(name)) => Err(self.err(
                col,
                format!(
                    "unknown name `@{name}`; this filter is over `@{}`",
                    self.key
                ),
            )),
            _ => Err(self.err(col, format!("expected `@{}`", self.key))),
        }
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let first = self.and()?;
        if !self.is_ident("or") {
            return Ok(first);
        }
        let mut terms = vec![first];
        while self.is_ident("or") {
            self.pos += 1;
            terms.push(self.and()?);
        }
        Ok(Expr::Or(terms))
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let first = self.not()?;
        if !self.is_ident("and") {
            return Ok(first);
        }
        let mut terms = vec![first];
        while self.is_ident("and") {
            self.pos += 1;
            terms.push(self.not()?);
        }
        Ok(Expr::And(terms))
    }

    fn not(&mut self) -> Result<Expr, FilterError> {
        if self.is_ident("not") {
            let col = self.col();
            self.nest(col, 1)?;
            self.pos += 1;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let left = self.postfix()?;
        let op = match self.peek() {
            Some(Tok::Op(op)) => {
                let op = match *op {
                    "==" => CompareOp::Eq,
                    "!=" => CompareOp::Ne,
                    "<" => CompareOp::Lt,
                    "<=" => CompareOp::Le,
                    ">" => CompareOp::Gt,
                    _ => CompareOp::Ge,
                };
                self.pos += 1;
                op
            }
            Some(Tok::Ident(w)) if w == "in" => {
                self.pos += 1;
                CompareOp::In
            }
            Some(Tok::Ident(w)) if w == "not" => {
                if matches!(self.tokens.get(self.pos + 1).map(|t| &t.tok), Some(Tok::Ident(w)) if w == "in")
                {
                    self.pos += 2;
                    CompareOp::NotIn
                } else {
                    return Ok(left);
                }
            }
            Some(Tok::Ident(w)) if w == "is" => {
                self.pos += 1;
                if self.is_ident("not") {
                    self.pos += 1;
                    CompareOp::IsNot
                } else {
                    CompareOp::Is
                }
            }
            _ => return Ok(left),
        };
        let right = self.postfix()?;
        Ok(Expr::Compare {
            op,
            left: Box::new(left),
            right: Box::new(right),
        })
    }

    fn postfix(&mut self) -> Result<Expr, FilterError> {
        let mut expr = self.primary()?;
        // Each method call wraps what it is called on: a chain is as deep as it is long.
        let mut chained = 0;
        let result = loop {
            match self.peek() {
                Some(Tok::Dot) => {
                    self.pos += 1;
                    let col = self.col();
                    let name = match self.next() {
                        Some(Tok::Ident(name)) => name,
                        _ => return Err(self.err(col, "expected a field or method name after `.`")),
                    };
                    if self.peek() == Some(&Tok::LParen) {
                        self.nest(col, 1)?;
                        chained += 1;
                        self.pos += 1;
                        if !matches!(
                            name.as_str(),
                            "startswith" | "endswith" | "lower" | "upper" | "strip"
                        ) {
                            return Err(self.err(
                                col,
                                format!(
                                    "unknown method `{name}`; use startswith, endswith, lower, upper or strip"
                                ),
                            ));
                        }
                        let args = self.arguments()?;
                        expr = Expr::Method {
                            target: Box::new(expr),
                            name,
                            args,
                        };
                    } else {
                        match &mut expr {
                            Expr::Path(segments) => segments.push(Segment::Field(name)),
                            _ => {
                                return Err(self
                                    .err(col, format!("fields can only follow `@{}`", self.key)));
                            }
                        }
                    }
                }
                Some(Tok::LBracket) => {
                    self.pos += 1;
                    let col = self.col();
                    let segment = match self.peek().cloned() {
                        Some(Tok::Str(s)) => {
                            self.pos += 1;
                            Segment::Field(s)
                        }
                        _ => match self.signed_int()? {
                            Some(n) => Segment::Index(n),
                            None => return Err(self.err(col, "expected an index or a quoted key")),
                        },
                    };
                    self.expect(&Tok::RBracket, "`]`")?;
                    match &mut expr {
                        Expr::Path(segments) => segments.push(segment),
                        _ => {
                            return Err(
                                self.err(col, format!("indexes can only follow `@{}`", self.key))
                            );
                        }
                    }
                }
                _ => break Ok(expr),
            }
        };
        self.depth -= chained;
        result
    }

    fn arguments(&mut self) -> Result<Vec<Expr>, FilterError> {
        let mut args = Vec::new();
        if self.peek() == Some(&Tok::RParen) {
            self.pos += 1;
            return Ok(args);
        }
        loop {
            args.push(self.or()?);
            match self.peek() {
                Some(Tok::Comma) => self.pos += 1,
                Some(Tok::RParen) => {
                    self.pos += 1;
                    return Ok(args);
                }
                _ => return Err(self.err(self.col(), "expected `,` or `)`")),
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, FilterError> {
        let col = self.col();
        match self.peek().cloned() {
            Some(Tok::Root(_)) => {
                self.root()?;
                Ok(Expr::Path(Vec::new()))
            }
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Expr::Literal(Value::String(s)))
            }
            Some(Tok::Int(_)) | Some(Tok::Minus) => self.number(col),
            Some(Tok::Float(f)) => {
                self.pos += 1;
                Ok(Expr::Literal(Value::from(f)))
            }
            Some(Tok::Ident(word)) => {
                self.pos += 1;
                self.word(word, col)
            }
            Some(Tok::LParen) => {
                self.nest(col, 1)?;
                self.pos += 1;
                let inner = self.or()?;
                self.expect(&Tok::RParen, "`)`")?;
                self.depth -= 1;
                Ok(inner)
            }
            Some(Tok::LBracket) => self.list(col),
            None => Err(self.err(col, "the expression ends too early")),
            Some(_) => Err(self.err(col, "expected a value, `@…` or `(`")),
        }
    }

    /// A number, negative after a `-`.
    fn number(&mut self, col: usize) -> Result<Expr, FilterError> {
        let negative = self.peek() == Some(&Tok::Minus);
        if negative {
            self.pos += 1;
        }
        match self.next() {
            Some(Tok::Int(n)) => Ok(Expr::Literal(Value::from(if negative { -n } else { n }))),
            Some(Tok::Float(f)) => Ok(Expr::Literal(Value::from(if negative { -f } else { f }))),
            _ => Err(self.err(col, "expected a number")),
        }
    }

    /// A word standing for a value: `True`, `False`, `None` (and their YAML spellings), or a call of
    /// `len`, `str` or `int`.
    fn word(&mut self, word: String, col: usize) -> Result<Expr, FilterError> {
        match word.as_str() {
            "True" | "true" => Ok(Expr::Literal(Value::Bool(true))),
            "False" | "false" => Ok(Expr::Literal(Value::Bool(false))),
            "None" | "null" => Ok(Expr::Literal(Value::Null)),
            "len" | "str" | "int" => {
                self.expect(&Tok::LParen, "`(`")?;
                self.nest(col, 1)?;
                let mut args = self.arguments()?;
                self.depth -= 1;
                if args.len() != 1 {
                    return Err(self.err(col, format!("`{word}` takes exactly one argument")));
                }
                Ok(Expr::Call {
                    name: word,
                    arg: Box::new(args.remove(0)),
                })
            }
            _ => Err(self.err(
                col,
                format!(
                    "unexpected word `{word}`; fields are written `@{}.{word}` and text in quotes",
                    self.key
                ),
            )),
        }
    }

    /// A list literal, `[a, b]`.
    fn list(&mut self, col: usize) -> Result<Expr, FilterError> {
        self.nest(col, 1)?;
        self.pos += 1;
        let mut items = Vec::new();
        if self.peek() != Some(&Tok::RBracket) {
            loop {
                items.push(self.or()?);
                match self.peek() {
                    Some(Tok::Comma) => self.pos += 1,
                    Some(Tok::RBracket) => break,
                    _ => return Err(self.err(self.col(), "expected `,` or `]`")),
                }
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Ok(Expr::List(items))
    }
}

fn mentions_root(expr: &Expr) -> bool {
    match expr {
        Expr::Path(_) => true,
        Expr::Literal(_) => false,
        Expr::List(items) => items.iter().any(mentions_root),
        Expr::Method { target, args, .. } => {
            mentions_root(target) || args.iter().any(mentions_root)
        }
        Expr::Call { arg, .. } => mentions_root(arg),
        Expr::Not(e) => mentions_root(e),
        Expr::And(terms) | Expr::Or(terms) => terms.iter().any(mentions_root),
        Expr::Compare { left, right, .. } => mentions_root(left) || mentions_root(right),
    }
}

impl Filter {
    /// Parses `text` with `@key` as the item name (`inv` for the inventory, `res` for provider results).
    ///
    /// # Errors
    /// A [`FilterError`] pointing at the column where the filter goes wrong.
    pub fn parse(text: &str, key: &str) -> Result<Filter, FilterError> {
        let err = |column: usize, message: String| FilterError {
            filter: text.to_owned(),
            column,
            message,
        };
        let tokens = lex(text, &err)?;
        let end_col = text.chars().count() + 1;
        let pipes: Vec<usize> = tokens
            .iter()
            .filter(|t| t.tok == Tok::Pipe)
            .map(|t| t.col)
            .collect();
        let mut stages = Vec::new();
        for (n, chunk) in tokens.split(|t| t.tok == Tok::Pipe).enumerate() {
            if chunk.is_empty() {
                let col = tokens
                    .iter()
                    .find(|t| t.tok == Tok::Pipe)
                    .map(|t| t.col)
                    .unwrap_or(1);
                return Err(err(
                    col,
                    "empty stage: write an expression on both sides of `|`".into(),
                ));
            }
            let mut parser = Parser {
                tokens: chunk,
                pos: 0,
                key,
                end_col: pipes.get(n).copied().unwrap_or(end_col),
                filter: text,
                depth: 0,
            };
            stages.push(parser.stage()?);
        }
        if stages.is_empty() {
            return Err(err(1, "the filter is empty".into()));
        }
        Ok(Filter {
            key: key.to_owned(),
            stages,
        })
    }

    /// The positions (into `items`) of the items the filter selects, in pipeline order.
    pub fn select<T: FilterTarget>(&self, items: &[T]) -> Vec<usize> {
        let mut current: Vec<usize> = (0..items.len()).collect();
        for stage in &self.stages {
            current = match stage {
                Stage::Predicate(expr) => current
                    .into_iter()
                    .filter(|i| truthy(&eval(expr, &items[*i])))
                    .collect(),
                Stage::Index(n) => resolve_index(*n, current.len())
                    .map(|i| vec![current[i]])
                    .unwrap_or_default(),
                Stage::Slice(start, stop, step) => {
                    slice(&current, *start, *stop, step.unwrap_or(1))
                }
            };
        }
        current
    }

    /// The items the filter selects.
    pub fn apply<'a, T: FilterTarget>(&self, items: &'a [T]) -> Vec<&'a T> {
        self.select(items).into_iter().map(|i| &items[i]).collect()
    }
}

fn resolve_index(n: i64, len: usize) -> Option<usize> {
    let len = len as i64;
    let i = if n < 0 { len + n } else { n };
    (0..len).contains(&i).then_some(i as usize)
}

/// Python slice semantics.
fn slice(items: &[usize], start: Option<i64>, stop: Option<i64>, step: i64) -> Vec<usize> {
    let len = items.len() as i64;
    let clamp = |v: i64, lo: i64, hi: i64| v.max(lo).min(hi);
    let norm = |v: i64| if v < 0 { v + len } else { v };
    let mut out = Vec::new();
    // Never 0: the parser refuses a zero step.
    if step.is_positive() {
        let s = clamp(start.map(norm).unwrap_or(0), 0, len);
        let e = clamp(stop.map(norm).unwrap_or(len), 0, len);
        let mut i = s;
        while i < e {
            out.push(items[i as usize]);
            // A step past `i64::MAX` is past the end of any list.
            let Some(next) = i.checked_add(step) else {
                break;
            };
            i = next;
        }
    } else {
        let last = len - 1;
        let s = clamp(start.map(norm).unwrap_or(last), -1, last);
        let e = clamp(stop.map(norm).unwrap_or(-1), -1, last);
        let mut i = s;
        while i > e {
            out.push(items[i as usize]);
            let Some(next) = i.checked_add(step) else {
                break;
            };
            i = next;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Printing

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, stage) in self.stages.iter().enumerate() {
            if n > 0 {
                f.write_str(" | ")?;
            }
            let key = self.key.as_str();
            match stage {
                Stage::Index(i) => write!(f, "@{key}[{i}]")?,
                Stage::Slice(start, stop, step) => {
                    let part = |v: &Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
                    write!(f, "@{key}[{}:{}", part(start), part(stop))?;
                    if let Some(step) = step {
                        write!(f, ":{step}")?;
                    }
                    f.write_str("]")?;
                }
                Stage::Predicate(expr) => {
                    let mut text = String::new();
                    write_expr(&mut text, expr, key, Level::Or)?;
                    // `@inv[0] …` would read as a list stage: parentheses keep it a predicate.
                    let list_like = text
                        .strip_prefix('@')
                        .and_then(|t| t.strip_prefix(key))
                        .and_then(|t| t.strip_prefix('['))
                        .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_digit() || c == '-'));
                    if list_like {
                        write!(f, "({text})")?;
                    } else {
                        f.write_str(&text)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// How tightly an expression binds, loosest first: what a position in the grammar accepts without
/// parentheses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Or,
    And,
    Not,
    Compare,
    Postfix,
}

fn level_of(expr: &Expr) -> Level {
    match expr {
        Expr::Or(_) => Level::Or,
        Expr::And(_) => Level::And,
        Expr::Not(_) => Level::Not,
        Expr::Compare { .. } => Level::Compare,
        _ => Level::Postfix,
    }
}

/// Writes `expr` where the grammar expects `at`, in parentheses when it binds more loosely (so an
/// `or` among the terms of another `or` stays one term).
fn write_expr(out: &mut String, expr: &Expr, key: &str, at: Level) -> fmt::Result {
    use fmt::Write;
    if level_of(expr) < at {
        out.push('(');
        write_expr(out, expr, key, Level::Or)?;
        out.push(')');
        return Ok(());
    }
    let join = |out: &mut String, items: &[Expr], sep: &str, at: Level| -> fmt::Result {
        for (n, item) in items.iter().enumerate() {
            if n > 0 {
                out.push_str(sep);
            }
            write_expr(out, item, key, at)?;
        }
        Ok(())
    };
    match expr {
        Expr::Or(terms) => join(out, terms, " or ", Level::And),
        Expr::And(terms) => join(out, terms, " and ", Level::Not),
        Expr::Not(inner) => {
            out.push_str("not ");
            write_expr(out, inner, key, Level::Not)
        }
        Expr::Compare { op, left, right } => {
            write_expr(out, left, key, Level::Postfix)?;
            let op = match op {
                CompareOp::Eq => "==",
                CompareOp::Ne => "!=",
                CompareOp::Lt => "<",
                CompareOp::Le => "<=",
                CompareOp::Gt => ">",
                CompareOp::Ge => ">=",
                CompareOp::In => "in",
                CompareOp::NotIn => "not in",
                CompareOp::Is => "is",
                CompareOp::IsNot => "is not",
            };
            write!(out, " {op} ")?;
            write_expr(out, right, key, Level::Postfix)
        }
        Expr::Literal(value) => write_literal(out, value),
        Expr::List(items) => {
            out.push('[');
            join(out, items, ", ", Level::Or)?;
            out.push(']');
            Ok(())
        }
        Expr::Path(segments) => {
            write!(out, "@{key}")?;
            for segment in segments {
                match segment {
                    Segment::Field(name) if is_identifier(name) => write!(out, ".{name}")?,
                    Segment::Field(name) => {
                        out.push('[');
                        write_string(out, name);
                        out.push(']');
                    }
                    Segment::Index(i) => write!(out, "[{i}]")?,
                }
            }
            Ok(())
        }
        Expr::Method { target, name, args } => {
            write_expr(out, target, key, Level::Postfix)?;
            write!(out, ".{name}(")?;
            join(out, args, ", ", Level::Or)?;
            out.push(')');
            Ok(())
        }
        Expr::Call { name, arg } => {
            write!(out, "{name}(")?;
            write_expr(out, arg, key, Level::Or)?;
            out.push(')');
            Ok(())
        }
    }
}

/// Whether the lexer reads `name` as one word (so `.name` can be written for the field).
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_')
}

fn write_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_literal(out: &mut String, value: &Value) -> fmt::Result {
    use fmt::Write;
    match value {
        Value::Null => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::String(s) => write_string(out, s),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => write!(out, "{i}")?,
            (None, Some(u), _) => write!(out, "{u}")?,
            (None, None, Some(x)) if x.is_finite() => {
                // `{}` never uses an exponent; the lexer needs digits on both sides of the point.
                let text = format!("{x}");
                out.push_str(&text);
                if !text.contains('.') {
                    out.push_str(".0");
                }
            }
            (None, None, Some(x)) => {
                // Only a literal too large for a float is infinite: write one that is again.
                if x < 0.0 {
                    out.push('-');
                }
                out.push('1');
                out.push_str(&"0".repeat(400));
                out.push_str(".0");
            }
            (None, None, None) => out.push_str("None"),
        },
        // The parser makes no other literals; lists are `Expr::List`.
        other => {
            let text = serde_yaml::to_string(other).unwrap_or_default();
            write_string(out, text.trim_end());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Evaluation

/// A value during evaluation; `Missing` is a field the item lacks.
#[derive(Debug, Clone)]
enum Val {
    Missing,
    V(Value),
}

fn eval<T: FilterTarget>(expr: &Expr, item: &T) -> Val {
    match expr {
        Expr::Literal(v) => Val::V(v.clone()),
        Expr::List(items) => Val::V(Value::Sequence(
            items
                .iter()
                .filter_map(|e| match eval(e, item) {
                    Val::V(v) => Some(v),
                    Val::Missing => None,
                })
                .collect(),
        )),
        Expr::Path(segments) => walk(item, segments),
        Expr::Not(e) => Val::V(Value::Bool(!truthy(&eval(e, item)))),
        // Python's: the first falsy (and) or truthy (or) term, else the last.
        Expr::And(terms) | Expr::Or(terms) => {
            let want = matches!(expr, Expr::Or(_));
            let mut last = Val::Missing;
            for term in terms {
                last = eval(term, item);
                if truthy(&last) == want {
                    break;
                }
            }
            last
        }
        Expr::Compare { op, left, right } => Val::V(Value::Bool(compare(
            *op,
            &eval(left, item),
            &eval(right, item),
        ))),
        Expr::Method { target, name, args } => {
            let Val::V(Value::String(s)) = eval(target, item) else {
                return Val::Missing;
            };
            method(&s, name, args, item)
        }
        Expr::Call { name, arg } => call(name, eval(arg, item)),
    }
}

/// A string method (`lower`, `upper`, `strip`, `startswith`, `endswith`) called on `s`.
fn method<T: FilterTarget>(s: &str, name: &str, args: &[Expr], item: &T) -> Val {
    match name {
        "lower" => Val::V(Value::String(s.to_lowercase())),
        "upper" => Val::V(Value::String(s.to_uppercase())),
        "strip" => Val::V(Value::String(s.trim().to_owned())),
        _ => {
            let wanted: Vec<String> = args
                .iter()
                .flat_map(|a| match eval(a, item) {
                    Val::V(Value::String(p)) => vec![p],
                    Val::V(Value::Sequence(ps)) => ps
                        .into_iter()
                        .filter_map(|p| p.as_str().map(str::to_owned))
                        .collect(),
                    _ => vec![],
                })
                .collect();
            let hit = if name == "startswith" {
                wanted.iter().any(|p| s.starts_with(p.as_str()))
            } else {
                wanted.iter().any(|p| s.ends_with(p.as_str()))
            };
            Val::V(Value::Bool(hit))
        }
    }
}

/// A function (`len`, `str`, `int`) applied to a value.
fn call(name: &str, v: Val) -> Val {
    match (name, v) {
        (_, Val::Missing) => Val::Missing,
        ("len", Val::V(v)) => match v {
            Value::String(s) => Val::V(Value::from(s.chars().count() as u64)),
            Value::Sequence(s) => Val::V(Value::from(s.len() as u64)),
            Value::Mapping(m) => Val::V(Value::from(m.len() as u64)),
            _ => Val::Missing,
        },
        ("str", Val::V(v)) => text_of(&v)
            .map(|s| Val::V(Value::String(s)))
            .unwrap_or(Val::Missing),
        (_, Val::V(v)) => text_of(&v)
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map(|n| Val::V(Value::from(n)))
            .unwrap_or(Val::Missing),
    }
}

fn walk<T: FilterTarget>(item: &T, segments: &[Segment]) -> Val {
    let Some((first, rest)) = segments.split_first() else {
        return match item.as_value() {
            Some(v) => Val::V(v.into_owned()),
            None => Val::Missing,
        };
    };
    let whole;
    let mut current = match first {
        Segment::Field(name) => item.field(name),
        Segment::Index(n) => {
            whole = item.as_value();
            match whole.as_deref() {
                Some(Value::Sequence(s)) => resolve_index(*n, s.len()).and_then(|i| s.get(i)),
                _ => None,
            }
        }
    };
    for seg in rest {
        current = current.and_then(|v| match (seg, v) {
            (Segment::Field(name), v) => field_of(v, name),
            (Segment::Index(n), Value::Sequence(s)) => {
                resolve_index(*n, s.len()).and_then(|i| s.get(i))
            }
            _ => None,
        });
    }
    match current {
        Some(v) => Val::V(v.clone()),
        None => Val::Missing,
    }
}

fn truthy(v: &Val) -> bool {
    match v {
        Val::Missing => false,
        Val::V(v) => match v {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
            Value::String(s) => !s.is_empty(),
            Value::Sequence(s) => !s.is_empty(),
            Value::Mapping(m) => !m.is_empty(),
            Value::Tagged(_) => true,
        },
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        // Python's `str(True)`: filters are written against the Python broker.
        Value::Bool(b) => Some(if *b { "True".into() } else { "False".into() }),
        other => crate::value::scalar_text(other),
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Number(_), Value::String(s)) | (Value::String(s), Value::Number(_)) => {
            let n = if let Value::Number(n) = a {
                n
            } else if let Value::Number(n) = b {
                n
            } else {
                return false;
            };
            n.to_string() == *s || s.trim().parse::<f64>().ok() == n.as_f64()
        }
        (Value::Sequence(x), Value::Sequence(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        (Value::Tagged(t), other) | (other, Value::Tagged(t)) => equal(&t.value, other),
        _ => a == b,
    }
}

fn order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Number(x), Value::String(y)) => {
            x.as_f64()?.partial_cmp(&y.trim().parse::<f64>().ok()?)
        }
        (Value::String(x), Value::Number(y)) => {
            x.trim().parse::<f64>().ok()?.partial_cmp(&y.as_f64()?)
        }
        _ => None,
    }
}

fn contains(needle: &Value, haystack: &Value) -> bool {
    match haystack {
        Value::String(h) => text_of(needle).is_some_and(|n| h.contains(n.as_str())),
        Value::Sequence(items) => items.iter().any(|i| equal(needle, i)),
        Value::Mapping(m) => m.keys().any(|k| equal(needle, k)),
        Value::Tagged(t) => contains(needle, &t.value),
        _ => false,
    }
}

fn compare(op: CompareOp, left: &Val, right: &Val) -> bool {
    use std::cmp::Ordering::*;
    match (op, left, right) {
        (CompareOp::Ne, Val::Missing, _) | (CompareOp::Ne, _, Val::Missing) => true,
        (CompareOp::Is, Val::Missing, Val::V(Value::Null)) => true,
        (CompareOp::IsNot, Val::Missing, Val::V(Value::Null)) => false,
        (_, Val::Missing, _) | (_, _, Val::Missing) => op == CompareOp::NotIn,
        (op, Val::V(a), Val::V(b)) => match op {
            CompareOp::Eq | CompareOp::Is => equal(a, b),
            CompareOp::Ne | CompareOp::IsNot => !equal(a, b),
            CompareOp::In => contains(a, b),
            CompareOp::NotIn => !contains(a, b),
            CompareOp::Lt => order(a, b) == Some(Less),
            CompareOp::Le => matches!(order(a, b), Some(Less | Equal)),
            CompareOp::Gt => order(a, b) == Some(Greater),
            CompareOp::Ge => matches!(order(a, b), Some(Greater | Equal)),
        },
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::HostRecord;

    fn inventory() -> Vec<Value> {
        serde_yaml::from_str(
            r#"
- {name: rhel-8.7-a, hostname: a.example.com, _broker_provider: AnsibleTower,
   _broker_args: {deploy_rhel_version: '8.7', template: deploy-sat-6.16}}
- {name: fedora-b, hostname: b.example.com, _broker_provider: Container,
   _broker_args: {container_host: 'fedora:40'}}
- {name: rhel-9.4-c, hostname: c.example.com, _broker_provider: AnsibleTower,
   _broker_args: {deploy_rhel_version: 9.4}, nics: [eth0, eth1]}
- {name: no-host}
"#,
        )
        .unwrap()
    }

    fn sel(filter: &str) -> Vec<usize> {
        Filter::parse(filter, "inv").unwrap().select(&inventory())
    }

    #[test]
    fn upstream_examples_select_the_right_hosts() {
        assert_eq!(sel("@inv.hostname"), vec![0, 1, 2]);
        assert_eq!(sel("'rhel' in @inv.name"), vec![0, 2]);
        assert_eq!(
            sel(r#"@inv._broker_args.deploy_rhel_version == "9.4""#),
            vec![2]
        );
        assert_eq!(
            sel(r#"@inv._broker_args.template.startswith("deploy-sat")"#),
            vec![0]
        );
        assert_eq!(
            sel(r#"@inv._broker_provider == "AnsibleTower""#),
            vec![0, 2]
        );
        assert_eq!(sel("@inv[-1]"), vec![3]);
        assert_eq!(sel("@inv[1:3]"), vec![1, 2]);
        assert_eq!(sel("@inv[:]"), vec![0, 1, 2, 3]);
        assert_eq!(sel("@inv[::-1]"), vec![3, 2, 1, 0]);
        assert_eq!(
            sel(r#""rhel" in @inv.hostname | @inv._broker_provider == "AnsibleTower""#),
            Vec::<usize>::new()
        );
        assert_eq!(sel(r#"'rhel' in @inv.name | @inv[-1]"#), vec![2]);
    }

    #[test]
    fn boolean_operators_and_missing_fields() {
        assert_eq!(sel(r#"not 'rhel' in @inv.name"#), vec![1, 3]);
        assert_eq!(sel(r#"'rhel' in @inv.name and @inv.nics"#), vec![2]);
        assert_eq!(
            sel(r#"@inv.name == 'fedora-b' or @inv.name == 'no-host'"#),
            vec![1, 3]
        );
        assert_eq!(sel(r#"@inv.hostname is None"#), vec![3]);
        assert_eq!(sel(r#"@inv.missing != 'x'"#), vec![0, 1, 2, 3]);
        assert_eq!(sel(r#"'eth1' in @inv.nics"#), vec![2]);
        assert_eq!(sel(r#"'rhel' not in @inv.name"#), vec![1, 3]);
        assert_eq!(sel(r#"'eth1' not in @inv.nics"#), vec![0, 1, 3]);
        assert_eq!(sel(r#"@inv.nics[0] == 'eth0'"#), vec![2]);
        assert_eq!(sel(r#"len(@inv.nics) > 1"#), vec![2]);
        assert_eq!(
            sel(r#"@inv.name.upper().startswith(['FED', 'NO'])"#),
            vec![1, 3]
        );
        assert_eq!(sel(r#"@inv['name'] == 'no-host'"#), vec![3]);
        let records: Vec<HostRecord> = serde_yaml::from_str("[{name: a}, {}]").unwrap();
        assert_eq!(
            Filter::parse("@inv", "inv").unwrap().select(&records),
            vec![0]
        );
        assert_eq!(
            Filter::parse("'name' in @inv", "inv")
                .unwrap()
                .select(&records),
            vec![0]
        );
    }

    /// Lists are equal when they hold equal items in the same order, no more and no fewer.
    /// The orders compare numbers as numbers and text as text; a value of another type, or a
    /// field an item lacks, is in no order with them.
    #[test]
    fn orders_compare_like_with_like() {
        let items: Vec<Value> =
            serde_yaml::from_str("[{n: 1}, {n: 2}, {n: 3}, {n: x}, {}, {n: b}]").unwrap();
        let picked = |filter: &str| Filter::parse(filter, "inv").unwrap().select(&items);
        assert_eq!(picked("@inv.n < 2"), vec![0]);
        assert_eq!(picked("@inv.n <= 2"), vec![0, 1]);
        assert_eq!(picked("@inv.n > 2"), vec![2]);
        assert_eq!(picked("@inv.n >= 2"), vec![1, 2]);
        assert_eq!(picked("@inv.n < 'c'"), vec![5]);
        assert_eq!(picked("@inv.n >= 'c'"), vec![3]);
    }

    /// A field an item lacks is in nothing, so `not in` holds; it is no order nor member of
    /// anything, so every other comparison fails — except `!=` and `is not`/`is None` rules.
    #[test]
    fn a_missing_field_is_not_in_anything_and_compares_to_nothing() {
        let all: Vec<usize> = (0..inventory().len()).collect();
        assert_eq!(sel("@inv.missing not in ['a', 'b']"), all);
        assert_eq!(sel("@inv.missing != 'a'"), all);
        for filter in [
            "@inv.missing in ['a', 'b']",
            "@inv.missing < 3",
            "@inv.missing >= 3",
            "@inv.missing == 'a'",
        ] {
            assert_eq!(sel(filter), Vec::<usize>::new(), "{filter}");
        }
    }

    #[test]
    fn lists_are_equal_item_for_item() {
        assert_eq!(sel("@inv.nics == ['eth0', 'eth1']"), vec![2]);
        assert_eq!(sel("@inv.nics == ['eth0', 'eth2']"), Vec::<usize>::new());
        assert_eq!(sel("@inv.nics == ['eth0']"), Vec::<usize>::new());
        assert_eq!(sel("@inv.nics != ['eth1', 'eth0']"), vec![0, 1, 2, 3]);
    }

    /// The nesting limit counts depth, not how many calls, lists, parentheses, `not`s and methods
    /// stand side by side.
    #[test]
    fn nesting_counts_depth_not_how_many_sit_side_by_side() {
        let term = "len(@inv.name) > 0 and str(@inv.name) != 'x' and 'a' not in ['b'] \
                    and (not @inv.missing) and @inv.name.lower() != 'y'";
        let filter = vec![term; MAX_NESTING + 1].join(" and ");
        let f = Filter::parse(&filter, "inv").unwrap();
        assert_eq!(f.select(&inventory()), vec![0, 1, 2, 3]);
    }

    /// Numbers and signs that end too early are errors at their column, never a panic.
    #[test]
    fn a_number_or_sign_cut_short_is_an_error_at_its_column() {
        for (filter, column, message) in [
            ("@inv[-]", 7, "expected a number after `-`"),
            ("@inv[-:2]", 7, "expected a number after `-`"),
            ("@inv[1:-]", 9, "expected a number after `-`"),
        ] {
            let err = Filter::parse(filter, "inv").unwrap_err();
            assert_eq!((err.column(), err.message()), (column, message), "{filter}");
        }
        for filter in ["@inv.n == 1.", "@inv.n == 1_.", "@inv.n == -1."] {
            let err = Filter::parse(filter, "inv").unwrap_err();
            assert!(err.column() >= 11, "{filter}: {}", err.message());
        }
        assert_eq!(sel("@inv[-1]"), vec![3]);
        assert_eq!(sel("@inv[-2:]"), vec![2, 3]);
    }

    /// A stage that never looks at the item would keep all of them or none: refused, at the column
    /// where the stage starts; a mention anywhere in it (a list, a method, a call, a negation)
    /// counts.
    #[test]
    fn a_stage_that_never_mentions_the_item_is_refused_where_it_starts() {
        for (filter, column) in [("'a' == 'a'", 1), ("@inv.name | 1 == 1", 13), ("not 0", 1)] {
            let err = Filter::parse(filter, "inv").unwrap_err();
            assert_eq!(
                (err.column(), err.message()),
                (
                    column,
                    "this stage never mentions `@inv`, so it would select nothing useful"
                ),
                "{filter}"
            );
        }
        for filter in [
            "'fedora-b' in [@inv.name, 'x']",
            "'a'.startswith(@inv.name)",
            "len(@inv.nics) == 2",
            "not @inv.nics",
        ] {
            assert!(Filter::parse(filter, "inv").is_ok(), "{filter}");
        }
    }

    /// A filter reads the fields of plain mappings too (what a provider's listing gives).
    #[test]
    fn mappings_are_filtered_by_their_fields() {
        let items: Vec<Mapping> = serde_yaml::from_str("[{name: a}, {name: b}, {}]").unwrap();
        let f = Filter::parse("@res.name == 'b'", "res").unwrap();
        assert_eq!(f.select(&items), vec![1]);
        let f = Filter::parse("'name' in @res", "res").unwrap();
        assert_eq!(f.select(&items), vec![0, 1]);
        // Borrowed items filter as the items they borrow.
        let borrowed: Vec<&Mapping> = items.iter().collect();
        let f = Filter::parse("@res.name == 'b'", "res").unwrap();
        assert_eq!(f.select(&borrowed), vec![1]);
        let f = Filter::parse("'name' in @res", "res").unwrap();
        assert_eq!(f.select(&borrowed), vec![0, 1]);
    }

    #[test]
    fn pipe_inside_a_string_is_text() {
        let items: Vec<Value> = serde_yaml::from_str("[{name: 'a|b'}, {name: c}]").unwrap();
        let f = Filter::parse("'a|b' == @inv.name", "inv").unwrap();
        assert_eq!(f.select(&items), vec![0]);
    }

    #[test]
    fn results_filter_over_plain_strings() {
        let items: Vec<Value> = serde_yaml::from_str("[rhel-9, rhel-8, fedora]").unwrap();
        let f = Filter::parse(r#""rhel-9" in @res"#, "res").unwrap();
        assert_eq!(f.select(&items), vec![0]);
    }

    #[test]
    fn errors_point_at_the_column() {
        let cases = [
            ("@inv.name = 'x'", 11),
            ("@inv.name == 'x", 14),
            ("'rhel' in @inv.name |", 21),
            ("@inv.name.frobnicate()", 11),
            ("_broker_provider<Container", 1),
            ("@inv[1:3].name", 10),
            ("@host.name", 1),
            ("@inv.name == 'a' and", 21),
            ("@inv[::0]", 8),
            ("@inv.name == 'a' 'b'", 18),
        ];
        for (filter, column) in cases {
            let err = Filter::parse(filter, "inv").unwrap_err();
            assert_eq!(err.column(), column, "{filter}: {err}");
            let shown = err.to_string();
            assert!(shown.contains(filter), "{shown}");
        }
        // What follows a whole expression, or a list stage's `]`, is refused, saying why.
        for (filter, message) in [
            (
                "@inv.name == 'a' 'b'",
                "unexpected text after the expression",
            ),
            ("@inv.n > 1 @inv.n", "unexpected text after the expression"),
            (
                "@inv[0] x",
                "a list stage ends at `]`; to test a field write `@inv.field …` in its own stage",
            ),
        ] {
            let err = Filter::parse(filter, "inv").unwrap_err();
            assert_eq!(err.message(), message, "{filter}");
        }
    }

    #[test]
    fn a_slice_step_past_the_list_ends_the_slice() {
        let max = i64::MAX;
        assert_eq!(sel(&format!("@inv[-1::{max}]")), vec![3]);
        assert_eq!(sel(&format!("@inv[1::{max}]")), vec![1]);
        assert_eq!(sel(&format!("@inv[::-{max}]")), vec![3]);
        assert_eq!(sel(&format!("@inv[{max}::-{max}]")), vec![3]);
        assert_eq!(sel(&format!("@inv[-{max}:{max}:2]")), vec![0, 2]);
    }

    #[test]
    fn garbage_never_panics() {
        for filter in [
            "",
            "|",
            "@",
            "((",
            "@inv[",
            "@inv[-]",
            "'",
            "@inv.",
            "not",
            "[1,",
            "@inv in in",
            "-",
        ] {
            assert!(
                Filter::parse(filter, "inv").is_err(),
                "{filter:?} should not parse"
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_at_its_column_not_a_stack_overflow() {
        let deep = 10_000;
        let nested = |open: &str, close: &str| {
            format!("{}@inv.name{}", open.repeat(deep), close.repeat(deep))
        };
        for (filter, column) in [
            (nested("(", ")"), MAX_NESTING + 1),
            (
                format!("{}@inv.name", "not ".repeat(deep)),
                4 * MAX_NESTING + 1,
            ),
            (nested("[", "]") + " == 1", MAX_NESTING + 1),
            (nested("len(", ")"), 4 * MAX_NESTING + 1),
            (nested("(not ", ")"), 5 * (MAX_NESTING / 2) + 1),
            (
                format!("@inv.name{}", ".lower()".repeat(deep)),
                9 + 8 * MAX_NESTING + 2,
            ),
        ] {
            let err = Filter::parse(&filter, "inv").unwrap_err();
            assert_eq!(
                err.column(),
                column,
                "{}…: {}",
                &filter[..40],
                err.message()
            );
            assert!(
                err.message().contains("nests too deeply"),
                "{}",
                err.message()
            );
        }
        // As deep as allowed still works.
        let f = Filter::parse(
            &format!(
                "{}@inv.name{}",
                "(".repeat(MAX_NESTING),
                ")".repeat(MAX_NESTING)
            ),
            "inv",
        )
        .unwrap();
        assert_eq!(f.select(&inventory()).len(), 4);
    }

    #[test]
    fn method_chains_side_by_side_do_not_add_up_to_nesting() {
        // Each `.lower()` nests within its own comparison only.
        let n = 3 * MAX_NESTING;
        let filter = vec!["@inv.name.lower().strip() == 'nobody'"; n].join(" or ")
            + " or @inv.name.lower() == 'fedora-b'";
        let selected = Filter::parse(&filter, "inv").unwrap().select(&inventory());
        assert_eq!(selected, vec![1]);
    }

    /// Numbers print so that they read back the same: a fraction with its point, and one too large
    /// for a float (infinite) as a literal that is again.
    #[test]
    fn numbers_print_as_literals_that_read_back_the_same() {
        let huge = format!("{}.5", "9".repeat(400));
        let written_huge = format!("1{}.0", "0".repeat(400));
        for (filter, shown) in [
            ("@inv.n < 2.5".to_owned(), "@inv.n < 2.5".to_owned()),
            ("@inv.n < 3.0".to_owned(), "@inv.n < 3.0".to_owned()),
            (
                format!("@inv.n < {huge}"),
                format!("@inv.n < {written_huge}"),
            ),
            (
                format!("@inv.n > -{huge}"),
                format!("@inv.n > -{written_huge}"),
            ),
        ] {
            let printed = Filter::parse(&filter, "inv").unwrap().to_string();
            assert_eq!(printed, shown, "{filter}");
            let again = Filter::parse(&printed, "inv").unwrap().to_string();
            assert_eq!(again, printed, "{filter}");
        }
    }

    #[test]
    fn fields_print_with_a_dot_unless_their_name_needs_quotes() {
        let f = Filter::parse(
            "@inv._broker_args.template == 'x' and @inv['a b'] | @inv[0]",
            "inv",
        )
        .unwrap();
        assert_eq!(
            f.to_string(),
            r#"@inv._broker_args.template == "x" and @inv["a b"] | @inv[0]"#
        );
    }

    #[test]
    fn tagged_values_compare_as_the_value_they_tag() {
        let items: Vec<Value> =
            serde_yaml::from_str("[{n: !custom 5}, {n: 6}, {n: !custom six}]").unwrap();
        let sel = |filter: &str| Filter::parse(filter, "inv").unwrap().select(&items);
        assert_eq!(sel("@inv.n == 5"), vec![0]);
        assert_eq!(sel("5 == @inv.n"), vec![0]);
        assert_eq!(sel("@inv.n == 'six'"), vec![2]);
    }

    #[test]
    fn long_and_or_chains_are_no_deep_trees() {
        let n = 20_000;
        let or = vec!["@inv.name == 'nobody'"; n].join(" or ") + " or @inv.name == 'fedora-b'";
        let selected = Filter::parse(&or, "inv").unwrap().select(&inventory());
        assert_eq!(selected.len(), 1);
        let and = vec!["@inv.name"; n].join(" and ");
        assert_eq!(
            Filter::parse(&and, "inv")
                .unwrap()
                .select(&inventory())
                .len(),
            4
        );
    }
}
