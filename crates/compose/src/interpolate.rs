//! Variable interpolation (reference §3): docker/cli's template substitution applied
//! to every string value of a document (never keys), followed by the casts of the
//! typed paths. Quirks kept on purpose because docker has them: an unbraced `$A-x`
//! takes the rest of the string (up to `}`) as its default, defaults are not
//! re-scanned (so no nesting), and only the last `${…}` of a value decides whether
//! the value is an error.

use std::collections::BTreeMap;

use crate::error::LoadError;
use crate::tree::{Node, go_quote};

/// The outcome of substituting one template string.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TemplateError {
    /// docker's InvalidTemplateError: the template (or the required-variable text).
    Invalid(String),
}

fn is_name_start(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphabetic()
}

fn is_name_char(c: u8) -> bool {
    c == b'_' || c.is_ascii_alphanumeric()
}

/// Matches `[_a-z][_a-z0-9]*(?::?[-?][^}]*)?` at `b[i..]`; returns its end.
fn match_subst(b: &[u8], i: usize) -> Option<usize> {
    if i >= b.len() || !is_name_start(b[i]) {
        return None;
    }
    let mut j = i + 1;
    while j < b.len() && is_name_char(b[j]) {
        j += 1;
    }
    let mut k = j;
    if k < b.len() && b[k] == b':' {
        k += 1;
    }
    if k < b.len() && (b[k] == b'-' || b[k] == b'?') {
        k += 1;
        while k < b.len() && b[k] != b'}' {
            k += 1;
        }
        return Some(k);
    }
    Some(j)
}

/// Substitutes `$V`, `${V}`, `${V:-d}`, `${V-d}`, `${V:?m}`, `${V?m}` and `$$` in `template`.
pub(crate) fn substitute(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, TemplateError> {
    let b = template.as_bytes();
    let mut out = String::with_capacity(template.len());
    let mut err: Option<TemplateError> = None;
    let mut last = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        out.push_str(&template[last..i]);
        let (substitution, end) = if b.get(i + 1) == Some(&b'$') {
            out.push('$');
            i += 2;
            last = i;
            continue;
        } else if let Some(end) = match_subst(b, i + 1) {
            (&template[i + 1..end], end)
        } else if b.get(i + 1) == Some(&b'{') {
            match match_subst(b, i + 2) {
                Some(end) if b.get(end) == Some(&b'}') => (&template[i + 2..end], end + 1),
                _ => ("", i + 1),
            }
        } else {
            ("", i + 1)
        };
        i = end;
        last = end;
        if substitution.is_empty() {
            err = Some(TemplateError::Invalid(template.to_string()));
            continue;
        }
        out.push_str(&resolve(substitution, lookup, &mut err));
    }
    out.push_str(&template[last..]);
    match err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// docker's substitute functions, tried in order: `:-`, `-`, `:?`, `?`, plain. `err` is
/// overwritten by each function tried, as docker's closure does.
fn resolve(
    substitution: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    err: &mut Option<TemplateError>,
) -> String {
    if let Some((name, default)) = substitution.split_once(":-") {
        *err = None;
        return match lookup(name) {
            Some(v) if !v.is_empty() => v,
            _ => default.to_string(),
        };
    }
    *err = None;
    if let Some((name, default)) = substitution.split_once('-') {
        return lookup(name).unwrap_or_else(|| default.to_string());
    }
    for (sep, non_empty) in [(":?", true), ("?", false)] {
        *err = None;
        if let Some((name, msg)) = substitution.split_once(sep) {
            return match lookup(name) {
                Some(v) if !(non_empty && v.is_empty()) => v,
                _ => {
                    *err = Some(TemplateError::Invalid(format!(
                        "required variable {name} is missing a value: {msg}"
                    )));
                    String::new()
                }
            };
        }
    }
    lookup(substitution).unwrap_or_default()
}

#[derive(Clone, Copy)]
enum Cast {
    Int,
    Float,
    Bool,
}

/// The typed paths docker casts after substitution (`*` = any key, `[]` = list item).
const CASTS: &[(&str, Cast)] = &[
    ("services.*.configs.[].mode", Cast::Int),
    ("services.*.secrets.[].mode", Cast::Int),
    ("services.*.healthcheck.retries", Cast::Int),
    ("services.*.healthcheck.disable", Cast::Bool),
    ("services.*.deploy.replicas", Cast::Int),
    ("services.*.deploy.update_config.parallelism", Cast::Int),
    (
        "services.*.deploy.update_config.max_failure_ratio",
        Cast::Float,
    ),
    ("services.*.deploy.rollback_config.parallelism", Cast::Int),
    (
        "services.*.deploy.rollback_config.max_failure_ratio",
        Cast::Float,
    ),
    ("services.*.deploy.restart_policy.max_attempts", Cast::Int),
    (
        "services.*.deploy.placement.max_replicas_per_node",
        Cast::Int,
    ),
    ("services.*.ports.[].target", Cast::Int),
    ("services.*.ports.[].published", Cast::Int),
    ("services.*.ulimits.*", Cast::Int),
    ("services.*.ulimits.*.hard", Cast::Int),
    ("services.*.ulimits.*.soft", Cast::Int),
    ("services.*.privileged", Cast::Bool),
    ("services.*.oom_score_adj", Cast::Int),
    ("services.*.read_only", Cast::Bool),
    ("services.*.stdin_open", Cast::Bool),
    ("services.*.tty", Cast::Bool),
    ("services.*.volumes.[].read_only", Cast::Bool),
    ("services.*.volumes.[].volume.nocopy", Cast::Bool),
    ("networks.*.external", Cast::Bool),
    ("networks.*.internal", Cast::Bool),
    ("networks.*.attachable", Cast::Bool),
    ("volumes.*.external", Cast::Bool),
    ("secrets.*.external", Cast::Bool),
    ("configs.*.external", Cast::Bool),
];

fn cast_for(path: &[String]) -> Option<Cast> {
    CASTS.iter().find_map(|(pattern, cast)| {
        let parts: Vec<&str> = pattern.split('.').collect();
        let matches = parts.len() == path.len()
            && parts
                .iter()
                .zip(path)
                .all(|(p, s)| *p == "*" || *p == s.as_str());
        matches.then_some(*cast)
    })
}

/// Go's strconv.Atoi (64-bit), with its error text.
fn go_atoi(s: &str) -> Result<i64, String> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "strconv.Atoi: parsing {}: invalid syntax",
            go_quote(s)
        ));
    }
    s.parse::<i64>()
        .map_err(|_| format!("strconv.Atoi: parsing {}: value out of range", go_quote(s)))
}

fn apply_cast(cast: Cast, s: &str) -> Result<Node, String> {
    match cast {
        Cast::Int => go_atoi(s).map(Node::Int),
        Cast::Float => s.parse::<f64>().map(Node::Float).map_err(|_| {
            format!(
                "strconv.ParseFloat: parsing {}: invalid syntax",
                go_quote(s)
            )
        }),
        Cast::Bool => match s.to_ascii_lowercase().as_str() {
            "y" | "yes" | "true" | "on" => Ok(Node::Bool(true)),
            "n" | "no" | "false" | "off" => Ok(Node::Bool(false)),
            _ => Err(format!("invalid boolean: {s}")),
        },
    }
}

/// Interpolates every string value of a document with `env`.
pub(crate) fn interpolate_document(
    doc: &BTreeMap<String, Node>,
    env: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Node>, LoadError> {
    let lookup = |name: &str| env.get(name).cloned();
    let mut out = BTreeMap::new();
    for (k, v) in doc {
        let mut path = vec![k.clone()];
        out.insert(k.clone(), interpolate_node(v, &mut path, &lookup)?);
    }
    Ok(out)
}

fn interpolate_node(
    node: &Node,
    path: &mut Vec<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Node, LoadError> {
    match node {
        Node::Str(s) => {
            let substituted = substitute(s, lookup).map_err(|TemplateError::Invalid(t)| {
                LoadError::InvalidInterpolation {
                    path: path.join("."),
                    template: go_quote(&t),
                }
            })?;
            if substituted == *s {
                return Ok(node.clone());
            }
            match cast_for(path) {
                None => Ok(Node::Str(substituted)),
                Some(cast) => apply_cast(cast, &substituted).map_err(|reason| LoadError::Cast {
                    path: path.join("."),
                    reason,
                }),
            }
        }
        Node::Map(m) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                path.push(k.clone());
                let r = interpolate_node(v, path, lookup);
                path.pop();
                out.insert(k.clone(), r?);
            }
            Ok(Node::Map(out))
        }
        Node::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            for v in items {
                path.push("[]".into());
                let r = interpolate_node(v, path, lookup);
                path.pop();
                out.push(r?);
            }
            Ok(Node::Seq(out))
        }
        other => Ok(other.clone()),
    }
}

/// yaml.v3 reads a plain `0440` as YAML 1.1 octal; yaml_serde leaves it a string. At
/// the integer paths (where docker would otherwise have 288, and where a quoted
/// string is a schema error in docker anyway) such strings become octal integers.
pub(crate) fn resolve_yaml11_octals(doc: &mut BTreeMap<String, Node>) {
    fn walk(node: &mut Node, path: &mut Vec<String>) {
        match node {
            Node::Str(s) => {
                let digits = s.strip_prefix('0').unwrap_or("");
                if !digits.is_empty()
                    && digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
                    && matches!(cast_for(path), Some(Cast::Int))
                    && let Ok(v) = i64::from_str_radix(digits, 8)
                {
                    *node = Node::Int(v);
                }
            }
            Node::Map(m) => {
                for (k, v) in m.iter_mut() {
                    path.push(k.clone());
                    walk(v, path);
                    path.pop();
                }
            }
            Node::Seq(items) => {
                for v in items {
                    path.push("[]".into());
                    walk(v, path);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    for (k, v) in doc.iter_mut() {
        let mut path = vec![k.clone()];
        walk(v, &mut path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    #[test]
    fn the_reference_forms() {
        let e = env(&[("A", "a"), ("EMPTY", ""), ("lower", "l")]);
        assert_eq!(substitute("$A ${A}", &e), Ok("a a".into()));
        assert_eq!(substitute("${UNSET:-d} ${EMPTY:-d}", &e), Ok("d d".into()));
        assert_eq!(substitute("${UNSET-d}|${EMPTY-d}", &e), Ok("d|".into()));
        assert_eq!(substitute("$$A $${A}", &e), Ok("$A ${A}".into()));
        assert_eq!(substitute("${lower}", &e), Ok("l".into()));
        assert_eq!(substitute("x${UNSET}y", &e), Ok("xy".into()));
        assert_eq!(
            substitute("${UNSET:?boom}", &e),
            Err(TemplateError::Invalid(
                "required variable UNSET is missing a value: boom".into()
            ))
        );
        assert_eq!(
            substitute("${EMPTY:?boom}", &e),
            Err(TemplateError::Invalid(
                "required variable EMPTY is missing a value: boom".into()
            ))
        );
        assert_eq!(substitute("${EMPTY?boom}", &e), Ok("".into()));
        assert_eq!(
            substitute("busybox:${TAG", &e),
            Err(TemplateError::Invalid("busybox:${TAG".into()))
        );
        assert_eq!(
            substitute("cost $5", &e),
            Err(TemplateError::Invalid("cost $5".into()))
        );
    }

    #[test]
    fn no_nesting_and_no_rescan() {
        let e = env(&[("B", "b"), ("H", "$apr1$x$y")]);
        // The default text ends at the first `}`: the rest is literal.
        assert_eq!(substitute("${A:-${B}}", &e), Ok("${B}".into()));
        assert_eq!(substitute("${H}", &e), Ok("$apr1$x$y".into()));
    }

    #[test]
    fn casts_only_substituted_values_at_typed_paths() {
        let doc = crate::tree::parse_document(
            b"services:\n  web:\n    deploy:\n      replicas: \"${N:-3}\"\n    read_only: \"${RO}\"\n    image: \"${N:-3}\"\n",
        )
        .expect("parse");
        let envm: BTreeMap<String, String> = [("RO".to_string(), "yes".to_string())].into();
        let out = interpolate_document(&doc, &envm).expect("interpolate");
        let web = &out["services"].as_map().expect("m")["web"];
        let web = web.as_map().expect("m");
        assert_eq!(web["deploy"].as_map().expect("m")["replicas"], Node::Int(3));
        assert_eq!(web["read_only"], Node::Bool(true));
        assert_eq!(web["image"], Node::Str("3".into()));
    }

    #[test]
    fn cast_error_in_dockers_words() {
        let doc = crate::tree::parse_document(
            b"services:\n  web:\n    deploy:\n      replicas: \"${N}\"\n",
        )
        .expect("parse");
        let envm: BTreeMap<String, String> = [("N".to_string(), "x".to_string())].into();
        let err = interpolate_document(&doc, &envm).expect_err("cast");
        assert_eq!(
            err.to_string(),
            "error while interpolating services.web.deploy.replicas: failed to cast to expected type: strconv.Atoi: parsing \"x\": invalid syntax"
        );
    }

    #[test]
    fn path_of_list_items() {
        let doc = crate::tree::parse_document(
            b"services:\n  proxy:\n    deploy:\n      labels:\n        - \"x=${HASHED_PASSWORD:?Variable not set}\"\n",
        )
        .expect("parse");
        let err = interpolate_document(&doc, &BTreeMap::new()).expect_err("required");
        assert_eq!(
            err.to_string(),
            "invalid interpolation format for services.proxy.deploy.labels.[]: \"required variable HASHED_PASSWORD is missing a value: Variable not set\"; you may need to escape any $ with another $"
        );
    }
}
