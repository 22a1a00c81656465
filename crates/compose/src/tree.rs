//! The untyped document tree the loader works on between parsing and the typed
//! model, shaped like what gopkg.in/yaml.v3 gives docker (`map[string]any`): string
//! keys, integers and floats apart. Also Go's value formatting (`fmt.Sprint`, `%#v`),
//! which docker's messages and string conversions use.

use std::collections::BTreeMap;

use crate::error::LoadError;

/// One node of a compose document.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(BTreeMap<String, Node>),
}

impl Node {
    pub(crate) fn as_map(&self) -> Option<&BTreeMap<String, Node>> {
        match self {
            Node::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Go's `fmt.Sprint` of the value docker decoded.
    pub(crate) fn go_sprint(&self) -> String {
        match self {
            Node::Null => "<nil>".to_string(),
            Node::Bool(b) => b.to_string(),
            Node::Int(i) => i.to_string(),
            Node::Float(f) => go_float(*f),
            Node::Str(s) => s.clone(),
            Node::Seq(items) => {
                let parts: Vec<String> = items.iter().map(Node::go_sprint).collect();
                format!("[{}]", parts.join(" "))
            }
            Node::Map(m) => {
                let parts: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", v.go_sprint()))
                    .collect();
                format!("map[{}]", parts.join(" "))
            }
        }
    }
}

/// Parses one compose document into a tree (anchors, aliases and `<<` merge keys
/// resolved by yaml_serde).
pub(crate) fn parse_document(bytes: &[u8]) -> Result<BTreeMap<String, Node>, LoadError> {
    let text = String::from_utf8_lossy(bytes);
    let mut value: yaml_serde::Value =
        yaml_serde::from_str(&text).map_err(|e| LoadError::Yaml(e.to_string()))?;
    value
        .apply_merge()
        .map_err(|e| LoadError::Yaml(e.to_string()))?;
    let value = untag(value);
    let yaml_serde::Value::Mapping(top) = value else {
        return Err(LoadError::TopLevelNotMapping);
    };
    let mut out = BTreeMap::new();
    for (k, v) in top {
        // docker 28's yaml.v3 decoding yields a map[any]any for the whole document when
        // a top-level key is not a string, which its ParseYAML rejects as not a mapping.
        let yaml_serde::Value::String(k) = k else {
            return Err(LoadError::TopLevelNotMapping);
        };
        out.insert(k, convert(v)?);
    }
    Ok(out)
}

fn untag(v: yaml_serde::Value) -> yaml_serde::Value {
    match v {
        yaml_serde::Value::Tagged(t) => untag(t.value),
        other => other,
    }
}

fn convert(v: yaml_serde::Value) -> Result<Node, LoadError> {
    use yaml_serde::Value as Y;
    Ok(match untag(v) {
        Y::Null => Node::Null,
        Y::Bool(b) => Node::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Node::Int(i)
            } else {
                Node::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Y::String(s) => Node::Str(s),
        Y::Sequence(items) => Node::Seq(items.into_iter().map(convert).collect::<Result<_, _>>()?),
        Y::Mapping(m) => {
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let Y::String(k) = untag(k) else {
                    // What docker 28 reports for a nested non-string key (its JSON schema
                    // step cannot encode a map[any]any).
                    return Err(LoadError::NonStringKey);
                };
                out.insert(k, convert(v)?);
            }
            Node::Map(out)
        }
        Y::Tagged(_) => Node::Null,
    })
}

/// Go's `%v` of a float64: shortest digits, exponent form below 1e-4 or from 1e21.
pub(crate) fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return "0".into();
    }
    let exp = f.abs().log10().floor() as i32;
    if (-4..21).contains(&exp) {
        return format!("{f}");
    }
    let s = format!("{f:e}");
    match s.split_once('e') {
        Some((mant, e)) => {
            let (sign, digits) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            format!("{mant}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// Go's `%#v` of a string (a Go double-quoted literal).
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_float_formats_like_go() {
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(1000.0), "1000");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(0.5), "0.5");
    }

    #[test]
    fn go_quote_escapes() {
        assert_eq!(go_quote("a\"b\n"), "\"a\\\"b\\n\"");
    }
}
