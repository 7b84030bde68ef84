//! Values: the layers of Helm values a component declares, parsed and merged exactly as
//! `helm template -f a.yaml -f b.yaml` would merge them, and a canonical JSON encoding of the
//! result for the input digest.
//!
//! This module owns only the *user-supplied* layers. Coalescing the merged layers with the
//! chart's own `values.yaml` (where a `null` deletes a chart default) is Helm's job: tidemark
//! hands the merged map to `helm template` and never imitates that step.
//!
//! Values files are read as helm reads them (sigs.k8s.io/yaml: YAML 1.1 scalars, see
//! [`kube_yaml`]): `enabled: no` is `false` and `mode: 0755` is 493 for helm, so they must be
//! for tidemark too, which hands helm the merged values as JSON. A YAML 1.2 reading would
//! turn `no` into the string `"no"`, which a template's `if` takes as true.
//!
//! It is pure: text in, values out. Reading the files is the caller's business.

use serde_json::{Map, Value};

use super::kube_yaml::{self, DuplicateKeys};

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
/// - Scalars resolve as helm reads them ([`kube_yaml`]: `yes`/`no`, `0755`, `1e3`, ...).
/// - An empty file, or one holding only comments or `~`, is an empty map (Helm reads it so).
/// - Only the first YAML document counts, as in Helm.
/// - A top level that is not a mapping is an error naming the file.
/// - YAML merge keys (`<<: *anchor`) are applied, as Helm's YAML library does.
/// - Non-string mapping keys (`1: x`, `true: y`) become strings, as in Helm's YAML-to-JSON step.
/// - A key written twice in one mapping is an error (Helm lets the last win; a duplicate in a
///   values file is a mistake worth a clear message, and `tidemark validate` reports it).
///
/// `path_for_errors` only appears in error messages, e.g. `values/x.yaml:3:5: ...`.
pub fn parse_values_file(path_for_errors: &str, text: &str) -> Result<Values, ValuesError> {
    let json = kube_yaml::first_document(text, DuplicateKeys::Refuse).map_err(|e| match e {
        kube_yaml::Error::Syntax {
            line,
            column,
            message,
        } => ValuesError::Syntax {
            file: path_for_errors.to_owned(),
            line,
            column,
            message,
        },
        kube_yaml::Error::Value { path, problem } => ValuesError::Unrepresentable {
            file: path_for_errors.to_owned(),
            path,
            problem,
        },
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
        assert_eq!((line, column), (4, 3));
        assert!(!message.contains("line 4 column 3"), "{message}");
        let shown = ValuesError::Syntax {
            file,
            line,
            column,
            message,
        }
        .to_string();
        assert!(shown.starts_with("values/x.yaml:4:3: "), "{shown}");
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
        let v = parse("1: one\ntrue: two\nnested:\n  2.5: x\n");
        assert_eq!(
            Value::Object(v),
            json!({"1": "one", "true": "two", "nested": {"2.5": "x"}})
        );
    }

    #[test]
    fn scalars_are_read_as_helm_reads_them() {
        // helm v4.1.4 and v3.17.2 read this file (`toJson .Values`) as
        // {"a":493,"b":false,"c":1000,"d":8,"e":true,"f":1.1,"false":"x","q":"no"}.
        let v = parse("a: 0755\nb: no\nc: 1e3\nd: 08\ne: on\nf: 1.10\nn: x\nq: 'no'\n");
        assert_eq!(
            Value::Object(v),
            json!({"a": 493, "b": false, "c": 1000, "d": 8, "e": true, "f": 1.1,
                   "false": "x", "q": "no"})
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
    fn tags_resolve_as_in_helm() {
        // A tag helm does not know keeps the text; `!!int` resolves even a quoted scalar.
        let v = parse("a: !custom 5\nb: !!str 7\nc: !!int '0755'\n");
        assert_eq!(v.get("a"), Some(&json!("5")));
        assert_eq!(v.get("b"), Some(&json!("7")));
        assert_eq!(v.get("c"), Some(&json!(493)));
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
