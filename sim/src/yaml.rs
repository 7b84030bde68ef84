//! YAML request bodies read as the API server reads them: `sigs.k8s.io/yaml` over go-yaml v2,
//! that is YAML 1.1 — unquoted `0755` is the octal 493, `0o755` and `0x1F` are numbers,
//! `yes`/`no`/`on`/`off`/`y`/`n` are booleans, `~` is null, a date (`2024-01-02`) is the time
//! `2024-01-02T00:00:00Z` — and then converted to JSON (map keys become strings). Quoted
//! scalars and block scalars are strings. Anchors, aliases and `<<` merge keys work; a
//! stream with several documents yields the first.

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A YAML body the server cannot read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct YamlError(pub String);

/// How go-yaml v2 resolves a plain (unquoted) scalar.
pub(crate) fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Value::Bool(true);
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Value::Bool(false);
        }
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => {
            // JSON has no infinities: sigs.k8s.io/yaml fails on them; keep the text.
            return Value::String(s.to_string());
        }
        _ => {}
    }
    let first = s.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'.')) {
        return Value::String(s.to_string());
    }
    if let Some(date) = date(s) {
        return Value::String(date);
    }
    let plain = s.replace('_', "");
    if let Some(i) = go_parse_int(&plain) {
        return Value::Number(i);
    }
    if is_yaml_float(&plain)
        && let Ok(f) = plain.parse::<f64>()
        && let Some(n) = Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(s.to_string())
}

/// `YYYY-M-D`, the date-only timestamp go-yaml turns into a time (midnight UTC).
fn date(s: &str) -> Option<String> {
    let mut parts = s.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || y.len() != 4
        || !(1..=2).contains(&m.len())
        || !(1..=2).contains(&d.len())
        || !(y.chars().chain(m.chars()).chain(d.chars())).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let (m, d): (u32, u32) = (m.parse().ok()?, d.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(format!("{y}-{m:02}-{d:02}T00:00:00Z"))
}

/// Go's `strconv.ParseInt(s, 0, 64)`, then `ParseUint`: decimal, `0x`, `0o`, `0b` and a
/// leading `0` for octal, with an optional sign.
fn go_parse_int(s: &str) -> Option<Number> {
    let (neg, body) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if body.is_empty() {
        return None;
    }
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d.to_string())
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.to_string())
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.to_string())
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_string())
    } else {
        (10, lower)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u128::from_str_radix(&digits, radix).ok()?;
    if neg {
        let v = i128::try_from(magnitude).ok().map(|m| -m)?;
        i64::try_from(v).ok().map(Number::from)
    } else if let Ok(v) = i64::try_from(magnitude) {
        Some(Number::from(v))
    } else {
        u64::try_from(magnitude).ok().map(Number::from)
    }
}

/// go-yaml's `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && matches!(b[i], b'+' | b'-') {
        i += 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    } else {
        if digits(&mut i) == 0 {
            return false;
        }
        if i < b.len() && b[i] == b'.' {
            i += 1;
            digits(&mut i);
        }
    }
    if i < b.len() && matches!(b[i], b'e' | b'E') {
        i += 1;
        if i < b.len() && matches!(b[i], b'+' | b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// A scalar with its tag (`!!str`, `!!int`, ...) taken into account.
fn scalar(text: String, style: TScalarStyle, tag: Option<&Tag>) -> Value {
    if let Some(t) = tag
        && t.handle == "tag:yaml.org,2002:"
    {
        return match t.suffix.as_str() {
            "str" | "binary" | "timestamp" => Value::String(text),
            "null" => Value::Null,
            "bool" | "int" | "float" => resolve_plain(&text),
            _ => Value::String(text),
        };
    }
    match style {
        TScalarStyle::Plain => resolve_plain(&text),
        _ => Value::String(text),
    }
}

/// A JSON object key from a YAML key (non-string keys become their text).
fn key_string(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

enum Node {
    Map {
        map: Map<String, Value>,
        key: Option<String>,
        anchor: usize,
        /// Values of `<<` merge keys, applied at the end (keys of the map win).
        merges: Vec<Value>,
    },
    Seq {
        items: Vec<Value>,
        anchor: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Node>,
    anchors: std::collections::HashMap<usize, Value>,
    done: Option<Value>,
    documents: usize,
}

impl Builder {
    fn put(&mut self, v: Value) {
        match self.stack.last_mut() {
            None => {
                if self.done.is_none() && self.documents <= 1 {
                    self.done = Some(v);
                }
            }
            Some(Node::Seq { items, .. }) => items.push(v),
            Some(Node::Map {
                map, key, merges, ..
            }) => match key.take() {
                None => *key = Some(key_string(v)),
                Some(k) if k == "<<" => merges.push(v),
                Some(k) => {
                    map.insert(k, v);
                }
            },
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, _mark: Marker) {
        match ev {
            Event::DocumentStart => self.documents += 1,
            Event::Scalar(text, style, anchor, tag) => {
                let v = scalar(text, style, tag.as_ref());
                if anchor > 0 {
                    self.anchors.insert(anchor, v.clone());
                }
                self.put(v);
            }
            Event::Alias(id) => {
                let v = self.anchors.get(&id).cloned().unwrap_or(Value::Null);
                self.put(v);
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Node::Seq {
                items: Vec::new(),
                anchor,
            }),
            Event::MappingStart(anchor, _) => self.stack.push(Node::Map {
                map: Map::new(),
                key: None,
                anchor,
                merges: Vec::new(),
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                let (v, anchor) = match self.stack.pop() {
                    Some(Node::Seq { items, anchor }) => (Value::Array(items), anchor),
                    Some(Node::Map {
                        mut map,
                        anchor,
                        merges,
                        ..
                    }) => {
                        for m in merges {
                            let sources = match m {
                                Value::Array(a) => a,
                                other => vec![other],
                            };
                            for src in sources {
                                if let Value::Object(o) = src {
                                    for (k, v) in o {
                                        map.entry(k).or_insert(v);
                                    }
                                }
                            }
                        }
                        (Value::Object(map), anchor)
                    }
                    None => return,
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, v.clone());
                }
                self.put(v);
            }
            _ => {}
        }
    }
}

/// Reads a YAML (or JSON) body as the API server does.
pub(crate) fn parse(text: &str) -> Result<Value, YamlError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    parser
        .load(&mut builder, true)
        .map_err(|e| YamlError(format!("error converting YAML to JSON: yaml: {e}")))?;
    Ok(builder.done.unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What kubectl (sigs.k8s.io/yaml, go-yaml v2) reads for each plain scalar.
    #[test]
    fn plain_scalars_read_as_yaml_1_1() {
        for (text, want) in [
            ("0755", json!(493)),
            ("0o755", json!(493)),
            ("0x1F", json!(31)),
            ("0b101", json!(5)),
            ("493", json!(493)),
            ("-12", json!(-12)),
            ("+12", json!(12)),
            ("1_000", json!(1000)),
            ("1.0", json!(1.0)),
            ("1e3", json!(1000.0)),
            (".5", json!(0.5)),
            ("12345678901234567890", json!(12345678901234567890u64)),
            ("yes", json!(true)),
            ("On", json!(true)),
            ("y", json!(true)),
            ("no", json!(false)),
            ("OFF", json!(false)),
            ("true", json!(true)),
            ("~", json!(null)),
            ("null", json!(null)),
            ("2024-01-02", json!("2024-01-02T00:00:00Z")),
            ("0755x", json!("0755x")),
            ("09", json!(9.0)),
            ("1.2.3", json!("1.2.3")),
            ("v1", json!("v1")),
            (".inf", json!(".inf")),
            ("1Gi", json!("1Gi")),
            ("500m", json!("500m")),
        ] {
            assert_eq!(resolve_plain(text), want, "{text}");
        }
    }

    #[test]
    fn documents_quotes_anchors_and_merges() {
        let v = parse(
            "a: &x {b: 1, c: '0755'}\nd:\n  <<: *x\n  b: 2\ne: \"yes\"\nf: |\n  0755\ng: !!str 0755\n1: one\n",
        )
        .ok();
        assert_eq!(
            v,
            Some(
                json!({"a": {"b": 1, "c": "0755"}, "d": {"b": 2, "c": "0755"}, "e": "yes",
                "f": "0755\n", "g": "0755", "1": "one"})
            )
        );
        assert_eq!(parse("a: 1\n---\na: 2\n").ok(), Some(json!({"a": 1})));
        assert!(parse("a: [1, 2\n").is_err());
    }
}
