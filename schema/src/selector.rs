//! Kubernetes label selectors: the structured form (`matchLabels`, `matchExpressions`) and
//! the string form used on command lines (`env=prod,region in (eu,us),!legacy`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// Labels of an object, sorted for deterministic output.
pub type Labels = BTreeMap<String, String>;

/// A label selector. An empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements; all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

/// One set-based requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// How the label is tested.
    pub operator: Operator,
    /// Values for `In` and `NotIn`; must be empty for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Operator of a [`Requirement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Operator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent or its value is none of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// Why a selector is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The string form could not be parsed.
    #[error("invalid selector `{input}`: {reason}")]
    Syntax {
        /// The whole selector string.
        input: String,
        /// What is wrong.
        reason: String,
    },
    /// A key is not a valid label key.
    #[error("invalid label key `{0}`: {1}")]
    Key(String, &'static str),
    /// A value is not a valid label value.
    #[error("invalid label value `{0}` for key `{1}`: {2}")]
    Value(String, String, &'static str),
    /// `In`/`NotIn` without values, or `Exists`/`DoesNotExist` with values.
    #[error("operator {op:?} on key `{key}` {reason}")]
    Values {
        /// The key.
        key: String,
        /// The operator.
        op: Operator,
        /// What is wrong.
        reason: &'static str,
    },
}

impl LabelSelector {
    /// Whether `labels` satisfy every part of the selector.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// Whether the selector has no requirement (and so matches every object).
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Checks keys, values and operator arity.
    pub fn check(&self) -> Result<(), SelectorError> {
        for (k, v) in &self.match_labels {
            check_key(k)?;
            check_value(k, v)?;
        }
        for r in &self.match_expressions {
            check_key(&r.key)?;
            match r.operator {
                Operator::In | Operator::NotIn if r.values.is_empty() => {
                    return Err(SelectorError::Values {
                        key: r.key.clone(),
                        op: r.operator,
                        reason: "needs at least one value",
                    });
                }
                Operator::Exists | Operator::DoesNotExist if !r.values.is_empty() => {
                    return Err(SelectorError::Values {
                        key: r.key.clone(),
                        op: r.operator,
                        reason: "takes no values",
                    });
                }
                _ => {}
            }
            for v in &r.values {
                check_value(&r.key, v)?;
            }
        }
        Ok(())
    }
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a name of at most
/// 63 characters of `[A-Za-z0-9-_.]` starting and ending with an alphanumeric.
pub fn check_key(key: &str) -> Result<(), SelectorError> {
    let bad = |why| Err(SelectorError::Key(key.to_string(), why));
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 {
            return bad("prefix must be 1 to 253 characters");
        }
        let dns_ok = p.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
        if !dns_ok {
            return bad("prefix must be a lower-case DNS subdomain");
        }
    }
    if name.is_empty() {
        return bad("name part must not be empty");
    }
    check_name_chars(name).map_err(|why| SelectorError::Key(key.to_string(), why))
}

fn check_value(key: &str, value: &str) -> Result<(), SelectorError> {
    if value.is_empty() {
        return Ok(());
    }
    check_name_chars(value).map_err(|why| SelectorError::Value(value.into(), key.into(), why))
}

fn check_name_chars(s: &str) -> Result<(), &'static str> {
    if s.len() > 63 {
        return Err("must be at most 63 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("may contain only letters, digits, '-', '_' and '.'");
    }
    let alnum = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !alnum(s.bytes().next()) || !alnum(s.bytes().last()) {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    /// Parses the string form: comma-separated `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
    /// `k notin (a,b)`, `k` (exists) and `!k` (does not exist).
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let syntax = |reason: String| SelectorError::Syntax {
            input: input.to_string(),
            reason,
        };
        let mut sel = LabelSelector::default();
        for term in split_terms(input).map_err(|r| syntax(r.into()))? {
            let term = term.trim();
            if term.is_empty() {
                return Err(syntax("empty term".into()));
            }
            let req = parse_term(term).map_err(syntax)?;
            match req {
                Term::Equals(k, v) => {
                    if let Some(old) = sel.match_labels.insert(k.clone(), v.clone())
                        && old != v
                    {
                        return Err(syntax(format!(
                            "key `{k}` must equal both `{old}` and `{v}`"
                        )));
                    }
                }
                Term::Requirement(r) => sel.match_expressions.push(r),
            }
        }
        sel.check()?;
        Ok(sel)
    }
}

enum Term {
    Equals(String, String),
    Requirement(Requirement),
}

/// Splits on commas that are not inside parentheses.
fn split_terms(input: &str) -> Result<Vec<&str>, &'static str> {
    let mut terms = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (i, c) in input.char_indices() {
        match c {
            '(' if depth > 0 => return Err("nested parentheses"),
            '(' => depth += 1,
            ')' if depth == 0 => return Err("unbalanced `)`"),
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced `(`");
    }
    terms.push(&input[start..]);
    Ok(terms)
}

fn parse_term(term: &str) -> Result<Term, String> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Term::Requirement(Requirement {
            key: key.trim().to_string(),
            operator: Operator::DoesNotExist,
            values: vec![],
        }));
    }
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(Term::Requirement(Requirement {
            key: k.trim().to_string(),
            operator: Operator::NotIn,
            values: vec![v.trim().to_string()],
        }));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Term::Equals(k.trim().to_string(), v.trim().to_string()));
    }
    if let Some(open) = term.find('(') {
        let head: Vec<&str> = term[..open].split_whitespace().collect();
        let body = term[open + 1..]
            .strip_suffix(')')
            .ok_or_else(|| format!("`{term}`: expected `)` at the end"))?;
        let operator = match head.as_slice() {
            [_, "in"] => Operator::In,
            [_, "notin"] => Operator::NotIn,
            _ => {
                return Err(format!(
                    "`{term}`: expected `KEY in (...)` or `KEY notin (...)`"
                ));
            }
        };
        let values: BTreeSet<String> = body
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        return Ok(Term::Requirement(Requirement {
            key: head[0].to_string(),
            operator,
            values: values.into_iter().collect(),
        }));
    }
    if term.contains(char::is_whitespace) {
        return Err(format!("`{term}`: unexpected whitespace"));
    }
    Ok(Term::Requirement(Requirement {
        key: term.to_string(),
        operator: Operator::Exists,
        values: vec![],
    }))
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            parts.push(match r.operator {
                Operator::In => format!("{} in ({})", r.key, r.values.join(",")),
                Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            });
        }
        f.write_str(&parts.join(","))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StructuredSelector {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
    #[serde(default)]
    match_expressions: Vec<Requirement>,
}

impl<'de> Deserialize<'de> for LabelSelector {
    /// Accepts both the structured form and the string form, and checks keys and values.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LabelSelector;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a selector string such as `env=prod,region in (eu,us)` or a map with matchLabels/matchExpressions")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let s = StructuredSelector::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                let sel = LabelSelector {
                    match_labels: s.match_labels,
                    match_expressions: s.match_expressions,
                };
                sel.check().map_err(serde::de::Error::custom)?;
                Ok(sel)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_string_form() {
        let sel: LabelSelector = "env=prod,region in (eu,us),!legacy"
            .parse()
            .unwrap_or_default();
        assert_eq!(sel.match_labels, labels(&[("env", "prod")]));
        assert_eq!(sel.match_expressions.len(), 2);
        assert_eq!(sel.to_string(), "env=prod,region in (eu,us),!legacy");
    }

    #[test]
    fn matches_like_kubernetes() {
        let sel: LabelSelector = "env=prod,region in (eu,us),!legacy,tier,zone notin (a),team!=x"
            .parse()
            .unwrap_or_default();
        assert!(sel.matches(&labels(&[("env", "prod"), ("region", "eu"), ("tier", "1")])));
        assert!(!sel.matches(&labels(&[("env", "prod"), ("region", "ap"), ("tier", "1")])));
        assert!(!sel.matches(&labels(&[
            ("env", "prod"),
            ("region", "eu"),
            ("tier", "1"),
            ("legacy", "")
        ])));
        assert!(!sel.matches(&labels(&[("env", "prod"), ("region", "eu")])));
        assert!(!sel.matches(&labels(&[
            ("env", "prod"),
            ("region", "eu"),
            ("tier", "1"),
            ("zone", "a")
        ])));
        assert!(!sel.matches(&labels(&[
            ("env", "prod"),
            ("region", "eu"),
            ("tier", "1"),
            ("team", "x")
        ])));
        assert!(LabelSelector::default().matches(&labels(&[])));
    }

    #[test]
    fn refuses_malformed_strings() {
        for bad in [
            "",
            "env=prod,",
            "region in (eu",
            "region in eu)",
            "region within (eu)",
            "region in ()",
            "bad key=x",
            "-env=prod",
            "env=pr od",
            "Example.com/x=1",
            "env=a,env=b",
            "a/b/c=1",
        ] {
            assert!(
                bad.parse::<LabelSelector>().is_err(),
                "{bad:?} should not parse"
            );
        }
    }

    #[test]
    fn deserializes_both_forms() {
        let s: LabelSelector = serde_yaml::from_str("cluster=prod-eu-1").unwrap_or_default();
        assert_eq!(s.match_labels, labels(&[("cluster", "prod-eu-1")]));
        let s: LabelSelector = serde_yaml::from_str(
            "matchLabels: {env: prod}\nmatchExpressions: [{key: region, operator: In, values: [eu]}]",
        )
        .unwrap_or_default();
        assert!(s.matches(&labels(&[("env", "prod"), ("region", "eu")])));
        let bad: Result<LabelSelector, _> = serde_yaml::from_str(
            "matchExpressions: [{key: region, operator: Exists, values: [eu]}]",
        );
        assert!(bad.is_err());
    }
}
