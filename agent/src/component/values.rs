//! Values: the layers of Helm values a component declares, parsed and merged exactly as
//! `helm template -f a.yaml -f b.yaml` would merge them, and a canonical JSON encoding of the
//! result for the input digest.
//!
//! This module owns only the *user-supplied* layers. Coalescing the merged layers with the
//! chart's own `values.yaml` (where a `null` deletes a chart default) is Helm's job: tidemark
//! hands the merged map to `helm template` and never imitates that step.
//!
//! It is pure: text in, values out. Reading the files is the caller's business.

use serde::Deserialize as _;
use serde_json::{Map, Value};
use serde_yaml::Value as Yaml;

/// A JSON object: one layer of values, or the merge of several.
pub type Values = Map<String, Value>;

/// Why a values file could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValuesError {
    /// The text is not YAML.
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        /// The file, as the caller named it.
        file: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the YAML parser said, without its own location.
        message: String,
    },
    /// The YAML parsed, but its top level is not a mapping (Helm refuses these too).
    #[error("{file}: the top level must be a mapping, found {found}")]
    NotMapping {
        /// The file, as the caller named it.
        file: String,
        /// What was found instead, with its article: "a sequence", "a string".
        found: &'static str,
    },
    /// The YAML parsed, but holds something JSON cannot represent.
    #[error("{file}: {path}: {problem}")]
    Unrepresentable {
        /// The file, as the caller named it.
        file: String,
        /// Where in the document, as a dotted path (`a.b[2]`).
        path: String,
        /// What is wrong there.
        problem: String,
    },
}

/// Merges values layers; later layers win.
///
/// This is Helm's `mergeMaps` (pkg/cli/values), which `helm template -f a -f b` applies to its
/// `-f` files in order:
/// - when both sides of a key hold objects, they are merged recursively;
/// - anything else replaces the earlier value: scalars, arrays (never concatenated) and `null`.
///
/// `null` is kept in the result on purpose: Helm's later coalescing with the chart defaults reads
/// a `null` as "delete this default", so dropping it here would change the render.
pub fn merge(layers: impl IntoIterator<Item = Values>) -> Values {
    layers.into_iter().fold(Values::new(), merge_into)
}

/// Merges `top` over `base`, consuming both (no clones of the values themselves).
fn merge_into(mut base: Values, top: Values) -> Values {
    for (key, value) in top {
        let merged = match (base.remove(&key), value) {
            (Some(Value::Object(below)), Value::Object(above)) => {
                Value::Object(merge_into(below, above))
            }
            (_, above) => above,
        };
        base.insert(key, merged);
    }
    base
}

/// Parses one values file.
///
/// - An empty file, or one holding only comments or `~`, is an empty map (Helm reads it so).
/// - Only the first YAML document counts, as in Helm.
/// - A top level that is not a mapping is an error naming the file.
/// - YAML merge keys (`<<: *anchor`) are applied, as Helm's YAML library does.
/// - Non-string mapping keys (`1: x`, `true: y`) become strings, as in Helm's YAML-to-JSON step.
///
/// `path_for_errors` only appears in error messages, e.g. `values/x.yaml:3:5: ...`.
pub fn parse_values_file(path_for_errors: &str, text: &str) -> Result<Values, ValuesError> {
    // Helm's YAML library reads only the first document of a values file; a stray `---` at
    // the end (or a second document) must not turn a working file into an error.
    let mut yaml = match serde_yaml::Deserializer::from_str(text).next() {
        None => Yaml::Null,
        Some(document) => Yaml::deserialize(document).map_err(|e| {
            let (line, column, message) = describe_yaml_error(&e);
            ValuesError::Syntax {
                file: path_for_errors.to_owned(),
                line,
                column,
                message,
            }
        })?,
    };
    yaml.apply_merge()
        .map_err(|e| ValuesError::Unrepresentable {
            file: path_for_errors.to_owned(),
            path: "<<".to_owned(),
            problem: describe_yaml_error(&e).2,
        })?;
    let json = yaml_to_json(yaml).map_err(|e| ValuesError::Unrepresentable {
        file: path_for_errors.to_owned(),
        path: e.path,
        problem: e.problem,
    })?;
    match json {
        Value::Null => Ok(Values::new()),
        Value::Object(map) => Ok(map),
        other => Err(ValuesError::NotMapping {
            file: path_for_errors.to_owned(),
            found: json_kind(&other),
        }),
    }
}

/// A deterministic JSON encoding of `v`: object keys sorted (by bytes) at every level, no
/// whitespace. Used for digests, so it must not depend on whether `serde_json` was built with
/// `preserve_order` (another crate in the graph may switch that feature on).
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                // A string's Display is its JSON encoding, escapes included.
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// A failed YAML-to-JSON conversion: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConvertError {
    /// Dotted path of the offending value (`a.b[2]`), or `.` for the top level.
    pub path: String,
    /// What is wrong there.
    pub problem: String,
}

/// Converts parsed YAML into JSON the way Helm and kubectl do (sigs.k8s.io/yaml):
/// scalar keys become strings, tags are dropped, NaN and infinities are refused.
pub(crate) fn yaml_to_json(yaml: Yaml) -> Result<Value, ConvertError> {
    convert(yaml, &mut Vec::new())
}

fn convert(yaml: Yaml, path: &mut Vec<String>) -> Result<Value, ConvertError> {
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                match serde_json::Number::from_f64(f) {
                    Some(n) => Value::Number(n),
                    None => {
                        return Err(ConvertError {
                            path: render_path(path),
                            problem: format!("{n} cannot be represented in JSON"),
                        });
                    }
                }
            }
        }
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                path.push(format!("[{i}]"));
                out.push(convert(item, path)?);
                path.pop();
            }
            Value::Array(out)
        }
        Yaml::Mapping(mapping) => {
            let mut out = Map::new();
            for (key, value) in mapping {
                let key = match key {
                    Yaml::String(s) => s,
                    Yaml::Bool(b) => b.to_string(),
                    Yaml::Number(n) => n.to_string(),
                    // sigs.k8s.io/yaml turns a null key into "null"; do the same.
                    Yaml::Null => "null".to_owned(),
                    Yaml::Tagged(t) => match t.value {
                        Yaml::String(s) => s,
                        _ => {
                            return Err(ConvertError {
                                path: render_path(path),
                                problem: "a mapping key must be a scalar".to_owned(),
                            });
                        }
                    },
                    Yaml::Sequence(_) | Yaml::Mapping(_) => {
                        return Err(ConvertError {
                            path: render_path(path),
                            problem: "a mapping key must be a scalar".to_owned(),
                        });
                    }
                };
                path.push(format!(".{key}"));
                let value = convert(value, path)?;
                path.pop();
                out.insert(key, value);
            }
            Value::Object(out)
        }
        // Custom tags (`!!binary`, `!foo`) carry no meaning in Kubernetes YAML; keep the value.
        Yaml::Tagged(tagged) => convert(tagged.value, path)?,
    })
}

fn render_path(path: &[String]) -> String {
    let joined: String = path.concat();
    match joined.strip_prefix('.') {
        Some(rest) => rest.to_owned(),
        None if joined.is_empty() => ".".to_owned(),
        None => joined,
    }
}

/// Splits a serde_yaml error into (line, column, message without the location), so that
/// callers can print the location once, in their own `file:line:col` form.
pub(crate) fn describe_yaml_error(e: &serde_yaml::Error) -> (usize, usize, String) {
    let text = e.to_string();
    match e.location() {
        Some(loc) => {
            let at = format!(" at line {} column {}", loc.line(), loc.column());
            (loc.line(), loc.column(), text.replacen(&at, "", 1))
        }
        None => (1, 1, text),
    }
}

/// "a sequence", "a string", ...: what a JSON value is, for error messages.
pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Values {
        match v {
            Value::Object(m) => m,
            other => panic!("test fixture is not an object: {other}"),
        }
    }

    fn parse(text: &str) -> Values {
        parse_values_file("values/x.yaml", text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn later_layers_win_and_objects_merge_recursively() {
        let a = obj(json!({
            "replicas": 1,
            "image": {"repository": "r", "tag": "1.0"},
            "keep": "a",
        }));
        let b = obj(json!({
            "replicas": 2,
            "image": {"tag": "2.0"},
            "added": true,
        }));
        let merged = merge([a, b]);
        assert_eq!(
            Value::Object(merged),
            json!({
                "replicas": 2,
                "image": {"repository": "r", "tag": "2.0"},
                "keep": "a",
                "added": true,
            })
        );
    }

    #[test]
    fn arrays_are_replaced_not_concatenated() {
        let a = obj(json!({"args": ["--a", "--b"], "tolerations": [{"key": "x"}]}));
        let b = obj(json!({"args": ["--c"]}));
        assert_eq!(
            Value::Object(merge([a, b])),
            json!({"args": ["--c"], "tolerations": [{"key": "x"}]})
        );
    }

    #[test]
    fn null_replaces_and_is_kept() {
        // Helm's chart coalescing reads this null as "delete the chart default".
        let a = obj(json!({"resources": {"limits": {"cpu": "1"}}, "x": 1}));
        let b = obj(json!({"resources": {"limits": null}, "x": null}));
        assert_eq!(
            Value::Object(merge([a, b])),
            json!({"resources": {"limits": null}, "x": null})
        );
    }

    #[test]
    fn scalar_and_object_replace_each_other() {
        let a = obj(json!({"s": "text", "o": {"k": 1}}));
        let b = obj(json!({"s": {"now": "object"}, "o": "now text"}));
        assert_eq!(
            Value::Object(merge([a, b])),
            json!({"s": {"now": "object"}, "o": "now text"})
        );
    }

    #[test]
    fn null_below_an_object_is_replaced_by_the_object() {
        let a = obj(json!({"o": null}));
        let b = obj(json!({"o": {"k": 1}}));
        assert_eq!(Value::Object(merge([a, b])), json!({"o": {"k": 1}}));
    }

    #[test]
    fn merging_nothing_or_one_layer() {
        assert!(merge(Vec::new()).is_empty());
        let a = obj(json!({"a": {"b": [1, 2]}}));
        assert_eq!(merge([a.clone()]), a);
    }

    #[test]
    fn three_layers_in_order() {
        let layers = [
            obj(json!({"a": 1, "n": {"x": 1, "y": 1}})),
            obj(json!({"a": 2, "n": {"y": 2, "z": 2}})),
            obj(json!({"a": 3, "n": {"z": 3}})),
        ];
        assert_eq!(
            Value::Object(merge(layers)),
            json!({"a": 3, "n": {"x": 1, "y": 2, "z": 3}})
        );
    }

    #[test]
    fn parses_a_values_file() {
        let v = parse("replicas: 2\nimage:\n  tag: \"1.2\"\nlist: [a, b]\nempty: ~\n");
        assert_eq!(
            Value::Object(v),
            json!({"replicas": 2, "image": {"tag": "1.2"}, "list": ["a", "b"], "empty": null})
        );
    }

    #[test]
    fn empty_and_comment_only_files_are_empty_maps() {
        for text in [
            "",
            "\n\n",
            "# only a comment\n",
            "~\n",
            "---\n",
            "# c\n---\n# d\n",
        ] {
            assert!(parse(text).is_empty(), "{text:?}");
        }
    }

    #[test]
    fn a_top_level_that_is_not_a_mapping_is_an_error() {
        let cases = [
            ("- a\n- b\n", "a sequence"),
            ("just text\n", "a string"),
            ("42\n", "a number"),
            ("true\n", "a boolean"),
        ];
        for (text, found) in cases {
            let err = parse_values_file("values/x.yaml", text).err();
            assert_eq!(
                err.map(|e| e.to_string()),
                Some(format!(
                    "values/x.yaml: the top level must be a mapping, found {found}"
                )),
                "{text:?}"
            );
        }
    }

    #[test]
    fn a_syntax_error_names_file_line_and_column() {
        let text = "a: 1\nb:\n  c: 2\n d: 3\n";
        let err = parse_values_file("values/x.yaml", text).err();
        let Some(ValuesError::Syntax {
            file,
            line,
            column,
            message,
        }) = err
        else {
            panic!("expected a syntax error, got {err:?}");
        };
        assert_eq!(file, "values/x.yaml");
        assert_eq!((line, column), (4, 2));
        assert!(!message.contains("line 4 column 2"), "{message}");
        let shown = ValuesError::Syntax {
            file,
            line,
            column,
            message,
        }
        .to_string();
        assert!(shown.starts_with("values/x.yaml:4:2: "), "{shown}");
    }

    #[test]
    fn an_unclosed_flow_sequence_is_a_syntax_error() {
        let err = parse_values_file("v.yaml", "a: [1, 2\n").err();
        assert!(
            matches!(err, Some(ValuesError::Syntax { ref file, .. }) if file == "v.yaml"),
            "{err:?}"
        );
    }

    #[test]
    fn only_the_first_document_counts() {
        assert_eq!(Value::Object(parse("a: 1\n---\n")), json!({"a": 1}));
        assert_eq!(
            Value::Object(parse("---\na: 1\n---\nb: 2\n")),
            json!({"a": 1})
        );
    }

    #[test]
    fn duplicate_keys_and_unknown_anchors_are_errors() {
        for text in ["a: 1\na: 2\n", "a: &x 1\nb: *y\n"] {
            let err = parse_values_file("v.yaml", text).err();
            assert!(
                matches!(err, Some(ValuesError::Syntax { .. })),
                "{text:?}: {err:?}"
            );
        }
    }

    #[test]
    fn non_string_keys_become_strings() {
        let v = parse("1: one\ntrue: yes\nnested:\n  2.5: x\n");
        assert_eq!(
            Value::Object(v),
            json!({"1": "one", "true": "yes", "nested": {"2.5": "x"}})
        );
    }

    #[test]
    fn merge_keys_are_applied() {
        let text = "base: &b\n  a: 1\n  b: 2\nderived:\n  <<: *b\n  b: 3\n";
        assert_eq!(
            Value::Object(parse(text)),
            json!({"base": {"a": 1, "b": 2}, "derived": {"a": 1, "b": 3}})
        );
    }

    #[test]
    fn tags_are_dropped() {
        let v = parse("a: !custom 5\nb: !!str 7\n");
        assert_eq!(v.get("a"), Some(&json!(5)));
        assert_eq!(v.get("b"), Some(&json!("7")));
    }

    #[test]
    fn nan_is_refused_with_its_path() {
        let err = parse_values_file("v.yaml", "a:\n  b: [1, .nan]\n").err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some("v.yaml: a.b[1]: .nan cannot be represented in JSON".to_owned())
        );
    }

    #[test]
    fn a_mapping_as_key_is_refused() {
        let err = parse_values_file("v.yaml", "? {a: 1}\n: x\n").err();
        assert!(
            matches!(err, Some(ValuesError::Unrepresentable { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let mut inner = Map::new();
        inner.insert("z".into(), json!(1));
        inner.insert("a".into(), json!([{"y": 1, "b": 2}]));
        let mut outer = Map::new();
        outer.insert("m".into(), Value::Object(inner));
        outer.insert("b".into(), json!("s\"q"));
        outer.insert("n".into(), Value::Null);
        assert_eq!(
            canonical_json(&Value::Object(outer)),
            r#"{"b":"s\"q","m":{"a":[{"b":2,"y":1}],"z":1},"n":null}"#
        );
    }

    #[test]
    fn canonical_json_is_independent_of_insertion_order() {
        let mut one = Map::new();
        let mut two = Map::new();
        for k in ["c", "a", "b"] {
            one.insert(k.into(), json!(k));
        }
        for k in ["b", "c", "a"] {
            two.insert(k.into(), json!(k));
        }
        assert_eq!(
            canonical_json(&Value::Object(one)),
            canonical_json(&Value::Object(two))
        );
    }

    #[test]
    fn canonical_json_of_scalars_and_arrays() {
        assert_eq!(canonical_json(&json!(null)), "null");
        assert_eq!(canonical_json(&json!(1.5)), "1.5");
        assert_eq!(canonical_json(&json!([3, "x", true])), r#"[3,"x",true]"#);
        assert_eq!(canonical_json(&json!({})), "{}");
        assert_eq!(canonical_json(&json!("é\n")), "\"é\\n\"");
    }
}
