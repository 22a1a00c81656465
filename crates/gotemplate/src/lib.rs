//! docker's `--format` templates: the part of Go's `text/template` that `inspect -f`
//! and `ls --format` are used with, over the same data docker's templates see (the
//! inspect JSON as a generic value, so `{{json .IPAM}}` prints keys sorted and a
//! missing field prints `<no value>`).
//!
//! Supported: text, `{{.A.B}}`, `{{$}}`, variables from `{{$x := …}}` and
//! `{{range $i, $e := …}}`, pipelines (`{{.Name | upper}}`), parenthesised
//! arguments, `if`/`else`/`else if`/`with`/`range`/`end`, `{{- -}}` trimming,
//! comments, and the functions docker adds (`json`, `join`, `split`, `lower`,
//! `upper`, `title`, `pad`, `truncate`, `println`) plus Go's `index`, `len`, `print`,
//! `printf` (`%s %v %d %q %%`), `not`, `and`, `or`, `eq`, `ne`.
//!
//! Callers add functions of their own for one execution with [`Template::execute_with`]
//! and a [`Funcs`] (a closure will do): the worker's payload templates get `secret`,
//! `config` and `env` that way, bound to one task (Swarm's `template/` package does the
//! same with a Go `FuncMap`). A caller's function takes precedence over a built-in of the
//! same name, as a Go `FuncMap` entry does.
//!
//! # Why it is hand-written
//! No maintained Rust crate does what docker's templates need. `gtmpl` (the best known
//! one) had its last release, 0.7.1, in August 2021, says of itself "It's not perfect,
//! yet", leaves `printf` "not yet fully stable" and works on its own `Value` type;
//! `go-template` is a 2022 fork of it with three releases. `gotmpl` (a young port by a
//! single author) follows Go's syntax and built-ins but has none of docker's functions
//! (`json` with Go's sorted keys, `join`, `split`, `title`, `pad`, `truncate`) and its
//! own value type, so docker's semantics over decoded JSON would be a layer on top that
//! is most of this file's execution part anyway. This engine is small,
//! covers exactly what docker's `--format` and Swarm's templates use, and is tested
//! against the outputs docker prints.

use serde_json::{Map, Value};

/// Functions a caller adds to one execution ([`Template::execute_with`]).
pub trait Funcs {
    /// `Some(result)` for a function this set has (its arguments evaluated, a piped
    /// value last); None to fall through to the built-ins.
    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, TemplateError>>;
}

impl<F> Funcs for F
where
    F: Fn(&str, &[Value]) -> Option<Result<Value, TemplateError>>,
{
    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, TemplateError>> {
        self(name, args)
    }
}

/// No functions besides the built-ins.
struct NoFuncs;

impl Funcs for NoFuncs {
    fn call(&self, _: &str, _: &[Value]) -> Option<Result<Value, TemplateError>> {
        None
    }
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipe),
    If {
        pipe: Pipe,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        pipe: Pipe,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Range {
        pipe: Pipe,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Debug, Clone)]
struct Pipe {
    /// Variables declared by `$x :=` (range: `$i, $e :=`).
    decl: Vec<String>,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
enum Arg {
    /// `.A.B`; empty for `.`.
    Field(Vec<String>),
    /// `$x.A.B`; `$` is the root.
    Var(String, Vec<String>),
    Str(String),
    Num(f64),
    Bool(bool),
    Nil,
    Func(String),
    Sub(Box<Pipe>, Vec<String>),
}

/// A value while a template runs: Go's "no value" (a missing map key) is not `null`.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    NoValue,
    Json(Value),
}

impl Val {
    fn truthy(&self) -> bool {
        match self {
            Val::NoValue => false,
            Val::Json(v) => match v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.is_empty(),
            },
        }
    }

    fn json(&self) -> Value {
        match self {
            Val::NoValue => Value::Null,
            Val::Json(v) => v.clone(),
        }
    }
}

/// A template that could not be parsed or run, in Go's words as far as they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

fn err<T>(msg: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(msg.into()))
}

// ---------------------------------------------------------------------------
// Lexing
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Str(String),
    Num(f64),
    LParen,
    /// `)` and the fields that follow it (`(index .X 0).Name`).
    RParen(Vec<String>),
    Pipe,
    Declare,
    Comma,
}

/// The pieces of a template: text and the inside of each `{{ }}` (trim markers
/// applied to the neighbouring text).
fn split_actions(src: &str) -> Result<Vec<(bool, String)>, TemplateError> {
    let mut parts: Vec<(bool, String)> = Vec::new();
    let mut rest = src;
    while let Some(open) = rest.find("{{") {
        let mut text = rest[..open].to_string();
        let mut inner_start = open + 2;
        if rest[inner_start..].starts_with("- ") {
            text = text.trim_end().to_string();
            inner_start += 1;
        }
        parts.push((false, text));
        // Find the closing braces outside quotes.
        let bytes = rest.as_bytes();
        let mut i = inner_start;
        let mut quote: Option<u8> = None;
        let close = loop {
            if i + 1 >= bytes.len() {
                return err("template: unclosed action");
            }
            let c = bytes[i];
            match quote {
                Some(q) => {
                    if c == b'\\' && q == b'"' {
                        i += 1;
                    } else if c == q {
                        quote = None;
                    }
                }
                None => {
                    if c == b'"' || c == b'`' || c == b'\'' {
                        quote = Some(c);
                    } else if c == b'}' && bytes[i + 1] == b'}' {
                        break i;
                    }
                }
            }
            i += 1;
        };
        let mut inner = &rest[inner_start..close];
        let mut trim_after = false;
        if inner.ends_with(" -") {
            inner = &inner[..inner.len() - 2];
            trim_after = true;
        }
        parts.push((true, inner.to_string()));
        rest = &rest[close + 2..];
        if trim_after {
            rest = rest.trim_start();
        }
    }
    parts.push((false, rest.to_string()));
    Ok(parts)
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn lex(action: &str) -> Result<Vec<Tok>, TemplateError> {
    let chars: Vec<char> = action.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    let fields = |i: &mut usize| -> Vec<String> {
        let mut out = Vec::new();
        while *i < chars.len()
            && chars[*i] == '.'
            && chars.get(*i + 1).is_some_and(|c| is_ident_char(*c))
        {
            *i += 1;
            let start = *i;
            while *i < chars.len() && is_ident_char(chars[*i]) {
                *i += 1;
            }
            out.push(chars[start..*i].iter().collect());
        }
        out
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '.' => {
                let f = fields(&mut i);
                if f.is_empty() {
                    i += 1;
                }
                toks.push(Tok::Field(f));
            }
            '$' => {
                let start = i;
                i += 1;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                let name: String = chars[start..i].iter().collect();
                toks.push(Tok::Var(name, fields(&mut i)));
            }
            '(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                i += 1;
                toks.push(Tok::RParen(fields(&mut i)));
            }
            '|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            ',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                toks.push(Tok::Declare);
                i += 2;
            }
            '=' => {
                return err("template: assignment to existing variables is not supported");
            }
            '"' => {
                i += 1;
                let mut s = String::new();
                loop {
                    match chars.get(i) {
                        None => return err("template: unterminated quoted string"),
                        Some('"') => break,
                        Some('\\') => {
                            i += 1;
                            match chars.get(i) {
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some('r') => s.push('\r'),
                                Some(other) => s.push(*other),
                                None => return err("template: unterminated quoted string"),
                            }
                        }
                        Some(other) => s.push(*other),
                    }
                    i += 1;
                }
                i += 1;
                toks.push(Tok::Str(s));
            }
            '`' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '`' {
                    i += 1;
                }
                if i >= chars.len() {
                    return err("template: unterminated raw quoted string");
                }
                toks.push(Tok::Str(chars[start..i].iter().collect()));
                i += 1;
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let n = text
                    .parse::<f64>()
                    .map_err(|_| TemplateError(format!("template: bad number syntax: {text:?}")))?;
                toks.push(Tok::Num(n));
            }
            c if is_ident_char(c) => {
                let start = i;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
                toks.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return err(format!("template: unexpected {other:?} in command")),
        }
    }
    Ok(toks)
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

fn parse_pipe(toks: &[Tok]) -> Result<Pipe, TemplateError> {
    let mut pos = 0;
    let mut decl = Vec::new();
    // `$x :=` or `$i, $e :=`
    let declares = toks.contains(&Tok::Declare);
    if declares {
        loop {
            match toks.get(pos) {
                Some(Tok::Var(name, f)) if f.is_empty() => decl.push(name.clone()),
                _ => return err("template: bad variable declaration"),
            }
            pos += 1;
            match toks.get(pos) {
                Some(Tok::Comma) => pos += 1,
                Some(Tok::Declare) => {
                    pos += 1;
                    break;
                }
                _ => return err("template: bad variable declaration"),
            }
        }
    }
    let (pipe, end) = parse_cmds(toks, pos)?;
    if end != toks.len() {
        return err("template: unexpected \")\" in operand");
    }
    Ok(Pipe {
        decl,
        cmds: pipe.cmds,
    })
}

/// Commands from `pos` up to the end or an unmatched `)`.
fn parse_cmds(toks: &[Tok], mut pos: usize) -> Result<(Pipe, usize), TemplateError> {
    let mut cmds: Vec<Vec<Arg>> = vec![Vec::new()];
    while pos < toks.len() {
        let arg = match &toks[pos] {
            Tok::RParen(_) => break,
            Tok::Pipe => {
                if cmds.last().is_some_and(Vec::is_empty) {
                    return err("template: missing command");
                }
                cmds.push(Vec::new());
                pos += 1;
                continue;
            }
            Tok::Field(f) => Arg::Field(f.clone()),
            Tok::Var(n, f) => Arg::Var(n.clone(), f.clone()),
            Tok::Str(s) => Arg::Str(s.clone()),
            Tok::Num(n) => Arg::Num(*n),
            Tok::Ident(id) => match id.as_str() {
                "true" => Arg::Bool(true),
                "false" => Arg::Bool(false),
                "nil" => Arg::Nil,
                _ => Arg::Func(id.clone()),
            },
            Tok::LParen => {
                let (inner, end) = parse_cmds(toks, pos + 1)?;
                let Some(Tok::RParen(fields)) = toks.get(end) else {
                    return err("template: unclosed left paren");
                };
                pos = end;
                Arg::Sub(Box::new(inner), fields.clone())
            }
            Tok::Declare | Tok::Comma => return err("template: unexpected declaration"),
        };
        if let Some(last) = cmds.last_mut() {
            last.push(arg);
        }
        pos += 1;
    }
    if cmds.last().is_some_and(Vec::is_empty) {
        return err("template: missing value for command");
    }
    Ok((
        Pipe {
            decl: Vec::new(),
            cmds,
        },
        pos,
    ))
}

/// What ended a list of nodes.
enum Closer {
    Eof,
    End,
    Else(Option<Pipe>),
}

fn parse_nodes(
    parts: &mut std::iter::Peekable<std::vec::IntoIter<(bool, String)>>,
) -> Result<(Vec<Node>, Closer), TemplateError> {
    let mut nodes = Vec::new();
    while let Some((is_action, text)) = parts.next() {
        if !is_action {
            if !text.is_empty() {
                nodes.push(Node::Text(text));
            }
            continue;
        }
        let body = text.trim();
        if body.starts_with("/*") {
            continue;
        }
        let (keyword, rest) = match body.split_once(char::is_whitespace) {
            Some((k, r)) => (k, r.trim()),
            None => (body, ""),
        };
        match keyword {
            "end" => return Ok((nodes, Closer::End)),
            "else" => {
                if let Some(cond) = rest.strip_prefix("if ") {
                    return Ok((nodes, Closer::Else(Some(parse_pipe(&lex(cond)?)?))));
                }
                return Ok((nodes, Closer::Else(None)));
            }
            "if" | "with" | "range" => {
                let pipe = parse_pipe(&lex(rest)?)?;
                let node = parse_block(keyword, pipe, parts)?;
                nodes.push(node);
            }
            _ => nodes.push(Node::Action(parse_pipe(&lex(body)?)?)),
        }
    }
    Ok((nodes, Closer::Eof))
}

fn parse_block(
    keyword: &str,
    pipe: Pipe,
    parts: &mut std::iter::Peekable<std::vec::IntoIter<(bool, String)>>,
) -> Result<Node, TemplateError> {
    let (then, end) = parse_nodes(parts)?;
    let otherwise = match end {
        Closer::Eof => return err(format!("template: unexpected EOF in {keyword}")),
        Closer::End => Vec::new(),
        Closer::Else(None) => match parse_nodes(parts)? {
            (nodes, Closer::End) => nodes,
            _ => return err(format!("template: expected end after else in {keyword}")),
        },
        // `else if` chains: the rest is one nested `if` that shares this `end`.
        Closer::Else(Some(cond)) => vec![parse_block("if", cond, parts)?],
    };
    Ok(match keyword {
        "if" => Node::If {
            pipe,
            then,
            otherwise,
        },
        "with" => Node::With {
            pipe,
            then,
            otherwise,
        },
        _ => Node::Range {
            pipe,
            body: then,
            otherwise,
        },
    })
}

impl Template {
    /// Parses `src`; a bad template is docker's "template parsing error".
    pub fn parse(src: &str) -> Result<Self, TemplateError> {
        let wrap = |e: TemplateError| TemplateError(format!("template parsing error: {}", e.0));
        let parts = split_actions(src).map_err(wrap)?;
        let mut iter = parts.into_iter().peekable();
        let (nodes, end) = parse_nodes(&mut iter).map_err(wrap)?;
        match end {
            Closer::Eof => Ok(Self { nodes }),
            Closer::End => Err(wrap(TemplateError("template: unexpected {{end}}".into()))),
            Closer::Else(_) => Err(wrap(TemplateError("template: unexpected {{else}}".into()))),
        }
    }

    /// Runs the template with `data` as `.` and `$`.
    pub fn execute(&self, data: &Value) -> Result<String, TemplateError> {
        self.execute_with(data, &NoFuncs)
    }

    /// Runs the template with `data` as `.` and `$` and the caller's `funcs` besides
    /// the built-ins.
    pub fn execute_with(&self, data: &Value, funcs: &dyn Funcs) -> Result<String, TemplateError> {
        let mut out = String::new();
        let mut scope = Scope {
            vars: vec![("$".into(), Val::Json(data.clone()))],
            funcs,
        };
        exec_nodes(&self.nodes, &Val::Json(data.clone()), &mut scope, &mut out)?;
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Execution
// ---------------------------------------------------------------------------

struct Scope<'f> {
    vars: Vec<(String, Val)>,
    funcs: &'f dyn Funcs,
}

impl Scope<'_> {
    fn get(&self, name: &str) -> Result<Val, TemplateError> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| TemplateError(format!("template: undefined variable: {name}")))
    }
}

fn exec_nodes(
    nodes: &[Node],
    dot: &Val,
    scope: &mut Scope,
    out: &mut String,
) -> Result<(), TemplateError> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Action(pipe) => {
                let v = eval_pipe(pipe, dot, scope)?;
                if pipe.decl.is_empty() {
                    out.push_str(&go_string(&v));
                } else {
                    for name in &pipe.decl {
                        scope.vars.push((name.clone(), v.clone()));
                    }
                }
            }
            Node::If {
                pipe,
                then,
                otherwise,
            } => {
                let mark = scope.vars.len();
                let v = eval_pipe(pipe, dot, scope)?;
                let branch = if v.truthy() { then } else { otherwise };
                exec_nodes(branch, dot, scope, out)?;
                scope.vars.truncate(mark);
            }
            Node::With {
                pipe,
                then,
                otherwise,
            } => {
                let mark = scope.vars.len();
                let v = eval_pipe(pipe, dot, scope)?;
                if v.truthy() {
                    for name in &pipe.decl {
                        scope.vars.push((name.clone(), v.clone()));
                    }
                    exec_nodes(then, &v, scope, out)?;
                } else {
                    exec_nodes(otherwise, dot, scope, out)?;
                }
                scope.vars.truncate(mark);
            }
            Node::Range {
                pipe,
                body,
                otherwise,
            } => {
                let mark = scope.vars.len();
                let v = eval_pipe(pipe, dot, scope)?;
                let items: Vec<(Value, Value)> = match v.json() {
                    Value::Array(a) => a
                        .into_iter()
                        .enumerate()
                        .map(|(i, e)| (Value::from(i), e))
                        .collect(),
                    Value::Object(o) => {
                        let mut entries: Vec<(String, Value)> = o.into_iter().collect();
                        entries.sort_by(|a, b| a.0.cmp(&b.0));
                        entries
                            .into_iter()
                            .map(|(k, e)| (Value::String(k), e))
                            .collect()
                    }
                    Value::Null => Vec::new(),
                    other => {
                        return err(format!(
                            "template: range can't iterate over {}",
                            go_string(&Val::Json(other))
                        ));
                    }
                };
                if items.is_empty() {
                    exec_nodes(otherwise, dot, scope, out)?;
                }
                for (key, elem) in items {
                    let inner = scope.vars.len();
                    match pipe.decl.as_slice() {
                        [] => {}
                        [e] => scope.vars.push((e.clone(), Val::Json(elem.clone()))),
                        [k, e, ..] => {
                            scope.vars.push((k.clone(), Val::Json(key)));
                            scope.vars.push((e.clone(), Val::Json(elem.clone())));
                        }
                    }
                    exec_nodes(body, &Val::Json(elem), scope, out)?;
                    scope.vars.truncate(inner);
                }
                scope.vars.truncate(mark);
            }
        }
    }
    Ok(())
}

fn field(v: Val, name: &str, path: &str) -> Result<Val, TemplateError> {
    match v {
        Val::Json(Value::Object(map)) => Ok(map
            .get(name)
            .cloned()
            .map(Val::Json)
            .unwrap_or(Val::NoValue)),
        Val::NoValue | Val::Json(Value::Null) => err(format!(
            "template: executing \"\" at <{path}>: nil pointer evaluating interface {{}}.{name}"
        )),
        Val::Json(other) => err(format!(
            "template: executing \"\" at <{path}>: can't evaluate field {name} in type {}",
            go_type(&other)
        )),
    }
}

fn fields(mut v: Val, names: &[String], prefix: &str) -> Result<Val, TemplateError> {
    let path = format!("{prefix}.{}", names.join("."));
    for name in names {
        v = field(v, name, &path)?;
    }
    Ok(v)
}

fn eval_arg(arg: &Arg, dot: &Val, scope: &Scope) -> Result<Val, TemplateError> {
    match arg {
        Arg::Field(f) => fields(dot.clone(), f, ""),
        Arg::Var(name, f) => fields(scope.get(name)?, f, name),
        Arg::Str(s) => Ok(Val::Json(Value::String(s.clone()))),
        Arg::Num(n) => Ok(Val::Json(number(*n))),
        Arg::Bool(b) => Ok(Val::Json(Value::Bool(*b))),
        Arg::Nil => Ok(Val::Json(Value::Null)),
        Arg::Func(name) => call(name, Vec::new(), scope),
        Arg::Sub(pipe, f) => fields(eval_pipe(pipe, dot, scope)?, f, ""),
    }
}

fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

fn eval_pipe(pipe: &Pipe, dot: &Val, scope: &Scope) -> Result<Val, TemplateError> {
    let mut piped: Option<Val> = None;
    for cmd in &pipe.cmds {
        let value = match cmd.first() {
            Some(Arg::Func(name)) => {
                let mut args = cmd[1..]
                    .iter()
                    .map(|a| eval_arg(a, dot, scope))
                    .collect::<Result<Vec<_>, _>>()?;
                args.extend(piped.take());
                call(name, args, scope)?
            }
            Some(first) => {
                if cmd.len() > 1 || piped.is_some() {
                    return err("template: can't give argument to non-function");
                }
                eval_arg(first, dot, scope)?
            }
            None => return err("template: empty command"),
        };
        piped = Some(value);
    }
    piped.ok_or_else(|| TemplateError("template: empty pipeline".into()))
}

fn str_arg(v: &Val, func: &str) -> Result<String, TemplateError> {
    match v {
        Val::Json(Value::String(s)) => Ok(s.clone()),
        other => err(format!(
            "template: wrong type for value; expected string; got {} in {func}",
            go_type(&other.json())
        )),
    }
}

fn int_arg(v: &Val, func: &str) -> Result<i64, TemplateError> {
    match v {
        Val::Json(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or_else(|| TemplateError(format!("template: bad number in {func}"))),
        other => err(format!(
            "template: wrong type for value; expected int; got {} in {func}",
            go_type(&other.json())
        )),
    }
}

fn arity(name: &str, args: &[Val], n: usize) -> Result<(), TemplateError> {
    if args.len() != n {
        return err(format!(
            "template: wrong number of args for {name}: want {n} got {}",
            args.len()
        ));
    }
    Ok(())
}

fn call(name: &str, args: Vec<Val>, scope: &Scope) -> Result<Val, TemplateError> {
    let plain: Vec<Value> = args.iter().map(Val::json).collect();
    if let Some(result) = scope.funcs.call(name, &plain) {
        return result.map(Val::Json);
    }
    builtin(name, args)
}

fn builtin(name: &str, args: Vec<Val>) -> Result<Val, TemplateError> {
    let s = |v: String| Ok(Val::Json(Value::String(v)));
    match name {
        "json" => {
            arity(name, &args, 1)?;
            s(go_json(&args[0].json()))
        }
        "join" => {
            arity(name, &args, 2)?;
            let sep = str_arg(&args[1], name)?;
            match args[0].json() {
                Value::Array(items) => s(items
                    .iter()
                    .map(|i| go_string(&Val::Json(i.clone())))
                    .collect::<Vec<_>>()
                    .join(&sep)),
                Value::Null => s(String::new()),
                other => err(format!(
                    "template: wrong type for value; expected []string; got {} in join",
                    go_type(&other)
                )),
            }
        }
        "split" => {
            arity(name, &args, 2)?;
            let text = str_arg(&args[0], name)?;
            let sep = str_arg(&args[1], name)?;
            let parts: Vec<Value> = if sep.is_empty() {
                text.chars().map(|c| Value::String(c.to_string())).collect()
            } else {
                text.split(sep.as_str())
                    .map(|p| Value::String(p.into()))
                    .collect()
            };
            Ok(Val::Json(Value::Array(parts)))
        }
        "lower" => {
            arity(name, &args, 1)?;
            s(str_arg(&args[0], name)?.to_lowercase())
        }
        "upper" => {
            arity(name, &args, 1)?;
            s(str_arg(&args[0], name)?.to_uppercase())
        }
        "title" => {
            arity(name, &args, 1)?;
            let text = str_arg(&args[0], name)?;
            let mut out = String::new();
            let mut start = true;
            for c in text.chars() {
                if start {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                start = !c.is_alphanumeric();
            }
            s(out)
        }
        "pad" => {
            arity(name, &args, 3)?;
            let text = str_arg(&args[0], name)?;
            let before = usize::try_from(int_arg(&args[1], name)?).unwrap_or(0);
            let after = usize::try_from(int_arg(&args[2], name)?).unwrap_or(0);
            s(format!("{}{text}{}", " ".repeat(before), " ".repeat(after)))
        }
        "truncate" => {
            arity(name, &args, 2)?;
            let text = str_arg(&args[0], name)?;
            let n = usize::try_from(int_arg(&args[1], name)?).unwrap_or(0);
            if text.chars().count() <= n {
                s(text)
            } else {
                s(text.chars().take(n).collect())
            }
        }
        "print" | "println" => {
            let parts: Vec<String> = args.iter().map(go_string).collect();
            let mut text = if name == "println" {
                parts.join(" ")
            } else {
                // Go's Sprint: spaces only between operands that are not strings.
                let mut t = String::new();
                for (i, a) in args.iter().enumerate() {
                    let is_str = |v: &Val| matches!(v, Val::Json(Value::String(_)));
                    if i > 0 && !is_str(a) && !is_str(&args[i - 1]) {
                        t.push(' ');
                    }
                    t.push_str(&parts[i]);
                }
                t
            };
            if name == "println" {
                text.push('\n');
            }
            s(text)
        }
        "printf" => {
            let Some((fmt, rest)) = args.split_first() else {
                return err("template: wrong number of args for printf: want at least 1 got 0");
            };
            s(printf(&str_arg(fmt, name)?, rest))
        }
        "index" => {
            let Some((first, keys)) = args.split_first() else {
                return err("template: wrong number of args for index: want at least 1 got 0");
            };
            let mut v = first.clone();
            for key in keys {
                v = match (v.json(), key.json()) {
                    (Value::Object(map), Value::String(k)) => {
                        map.get(&k).cloned().map(Val::Json).unwrap_or(Val::NoValue)
                    }
                    (Value::Array(items), Value::Number(n)) => {
                        let i = n.as_u64().and_then(|i| usize::try_from(i).ok());
                        match i.and_then(|i| items.get(i)) {
                            Some(e) => Val::Json(e.clone()),
                            None => {
                                return err(format!(
                                    "template: error calling index: index out of range: {n}"
                                ));
                            }
                        }
                    }
                    (Value::Null, _) => {
                        return err("template: error calling index: index of untyped nil");
                    }
                    (other, _) => {
                        return err(format!(
                            "template: error calling index: can't index item of type {}",
                            go_type(&other)
                        ));
                    }
                };
            }
            Ok(v)
        }
        "len" => {
            arity(name, &args, 1)?;
            let n = match args[0].json() {
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                Value::String(t) => t.len(),
                other => {
                    return err(format!(
                        "template: error calling len: len of type {}",
                        go_type(&other)
                    ));
                }
            };
            Ok(Val::Json(Value::from(n)))
        }
        "not" => {
            arity(name, &args, 1)?;
            Ok(Val::Json(Value::Bool(!args[0].truthy())))
        }
        "and" => Ok(args
            .iter()
            .find(|a| !a.truthy())
            .or(args.last())
            .cloned()
            .unwrap_or(Val::NoValue)),
        "or" => Ok(args
            .iter()
            .find(|a| a.truthy())
            .or(args.last())
            .cloned()
            .unwrap_or(Val::NoValue)),
        "eq" | "ne" => {
            let Some((first, rest)) = args.split_first() else {
                return err(format!("template: missing argument for {name}"));
            };
            let equal = |a: &Val, b: &Val| match (a.json(), b.json()) {
                (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
                (x, y) => x == y,
            };
            let any = rest.iter().any(|r| equal(first, r));
            Ok(Val::Json(Value::Bool(if name == "eq" {
                any
            } else {
                !any
            })))
        }
        other => err(format!("template: function \"{other}\" not defined")),
    }
}

/// Go's `fmt.Sprintf` for the verbs templates use.
fn printf(fmt: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(verb @ ('s' | 'v' | 'd' | 'q')) => match args.next() {
                Some(a) if verb == 'q' => {
                    out.push_str(&serde_json::to_string(&go_string(a)).unwrap_or_default())
                }
                Some(a) => out.push_str(&go_string(a)),
                None => out.push_str(&format!("%!{verb}(MISSING)")),
            },
            Some(other) => out.push_str(&format!("%!{other}(unsupported)")),
            None => out.push_str("%!(NOVERB)"),
        }
    }
    out
}

fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "<nil>",
        Value::Bool(_) => "bool",
        Value::Number(_) => "float64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// How Go's `fmt` prints a decoded JSON value (`%v`): `map[a:1 b:x]`, `[a b]`, `<nil>`.
fn go_string(v: &Val) -> String {
    match v {
        Val::NoValue => "<no value>".into(),
        Val::Json(v) => go_value(v),
    }
}

fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_float(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(go_value).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            format!(
                "map[{}]",
                entries
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", go_value(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    }
}

/// Go's `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`): the shortest
/// digits, in exponent form when the exponent is below -4 or at least 6, so a JSON
/// 1000000 prints as 1e+06 in docker's templates too.
fn go_float(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
    }
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN".into()
        } else if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    // Shortest round-trip digits and the decimal exponent.
    let sci = format!("{:e}", f); // e.g. "1.234567e6", "-5e-7"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    format!("{f}")
}

/// `json` as docker's template function prints it: compact, object keys sorted (the
/// data is a decoded map), no HTML escaping.
pub fn go_json(v: &Value) -> String {
    serde_json::to_string(&sorted(v)).unwrap_or_else(|_| "null".into())
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), sorted(&map[k]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(src: &str, data: &Value) -> String {
        Template::parse(src).unwrap().execute(data).unwrap()
    }

    fn network() -> Value {
        json!({
            "Name": "mynet",
            "Id": "abc",
            "Internal": false,
            "IPAM": {"Driver": "default", "Options": null,
                     "Config": [{"Subnet": "10.0.1.0/24", "Gateway": "10.0.1.1"}]},
            "Labels": {"b": "2", "a": "1"},
            "Count": 1000000,
        })
    }

    #[test]
    fn caller_functions_come_first_and_get_their_arguments() {
        let funcs = |name: &str, args: &[Value]| match name {
            "secret" => Some(match args {
                [Value::String(t)] if t == "pw" => Ok(Value::String("s3cret".into())),
                [Value::String(t)] => Err(TemplateError(format!("secret target {t} not found"))),
                _ => Err(TemplateError("secret takes one target".into())),
            }),
            "upper" => Some(Ok(Value::String("mine".into()))),
            _ => None,
        };
        let t = Template::parse(r#"{{secret "pw"}} {{"pw" | secret}} {{upper "a"}} {{lower "B"}}"#)
            .unwrap();
        assert_eq!(
            t.execute_with(&json!({}), &funcs).unwrap(),
            "s3cret s3cret mine b"
        );
        let e = Template::parse(r#"{{secret "x"}}"#)
            .unwrap()
            .execute_with(&json!({}), &funcs)
            .unwrap_err();
        assert_eq!(e.0, "secret target x not found");
        let e = Template::parse(r#"{{secret "x"}}"#)
            .unwrap()
            .execute(&json!({}))
            .unwrap_err();
        assert!(e.0.contains("function \"secret\" not defined"), "{e}");
    }

    #[test]
    fn fields_and_text() {
        let n = network();
        assert_eq!(run("{{.Name}} {{.Id}}", &n), "mynet abc");
        assert_eq!(run("{{.IPAM.Driver}}", &n), "default");
        assert_eq!(run("{{.Nope}}", &n), "<no value>");
        assert_eq!(run("{{.IPAM.Options}}", &n), "<nil>");
        assert_eq!(run("{{.Internal}}", &n), "false");
        assert_eq!(run("{{.Labels}}", &n), "map[a:1 b:2]");
        assert_eq!(
            run("{{.IPAM.Config}}", &n),
            "[map[Gateway:10.0.1.1 Subnet:10.0.1.0/24]]"
        );
        assert_eq!(run("{{.Count}}", &n), "1e+06");
        assert_eq!(run("{{$.Name}}", &n), "mynet");
    }

    #[test]
    fn functions_and_pipelines() {
        let n = network();
        assert_eq!(
            run("{{json .IPAM}}", &n),
            r#"{"Config":[{"Gateway":"10.0.1.1","Subnet":"10.0.1.0/24"}],"Driver":"default","Options":null}"#
        );
        assert_eq!(run("{{.Name | upper}}", &n), "MYNET");
        assert_eq!(run("{{index .Labels \"b\"}}", &n), "2");
        assert_eq!(run("{{(index .IPAM.Config 0).Subnet}}", &n), "10.0.1.0/24");
        assert_eq!(run("{{len .Labels}}", &n), "2");
        assert_eq!(run("{{join (split \"a,b\" \",\") \"-\"}}", &n), "a-b");
        assert_eq!(run("{{printf \"%s/%d\" .Name 3}}", &n), "mynet/3");
        assert_eq!(run("{{if eq .Name \"mynet\"}}yes{{end}}", &n), "yes");
        assert_eq!(run("{{title \"hello world\"}}", &n), "Hello World");
    }

    #[test]
    fn blocks() {
        let n = network();
        assert_eq!(
            run(
                "{{range .IPAM.Config}}{{.Subnet}} via {{.Gateway}}{{end}}",
                &n
            ),
            "10.0.1.0/24 via 10.0.1.1"
        );
        assert_eq!(
            run("{{range $k, $v := .Labels}}{{$k}}={{$v}};{{end}}", &n),
            "a=1;b=2;"
        );
        assert_eq!(
            run(
                "{{if .Internal}}int{{else if .Labels}}lab{{else}}none{{end}}",
                &n
            ),
            "lab"
        );
        assert_eq!(run("{{with .IPAM}}{{.Driver}}{{end}}", &n), "default");
        assert_eq!(
            run(
                "{{range .Missing}}x{{else}}empty{{end}}",
                &json!({"Missing": []})
            ),
            "empty"
        );
        assert_eq!(run("a  {{- .Name -}}  b", &n), "amynetb");
        assert_eq!(run("{{/* a comment */}}x", &n), "x");
    }

    #[test]
    fn errors_read_like_go() {
        assert!(
            Template::parse("{{.Name")
                .unwrap_err()
                .0
                .starts_with("template parsing error:")
        );
        assert!(Template::parse("{{if .X}}").is_err());
        assert!(Template::parse("{{end}}").is_err());
        let e = Template::parse("{{.Name.X}}")
            .unwrap()
            .execute(&network())
            .unwrap_err();
        assert!(e.0.contains("can't evaluate field X in type string"), "{e}");
        let e = Template::parse("{{nope .Name}}")
            .unwrap()
            .execute(&network())
            .unwrap_err();
        assert!(e.0.contains("function \"nope\" not defined"), "{e}");
    }

    #[test]
    fn go_floats() {
        assert_eq!(go_float(4097.0), "4097");
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(0.00001), "1e-05");
    }
}
