//! Label and field selectors: parsing the query-string forms (`a=b,c in (x,y),!d`) and the
//! `LabelSelector` object form (`matchLabels`/`matchExpressions`), and matching objects.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(String),
    Ne(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default)]
pub(crate) struct LabelSelector {
    reqs: Vec<(String, Op)>,
    /// A selector object that can never match (an unknown operator, like Kubernetes' `Nothing`).
    nothing: bool,
}

fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

fn values(list: &str) -> Result<Vec<String>, String> {
    let list = list.trim();
    let Some(open) = list.strip_prefix('(') else {
        return Err(format!("found '{list}', expected: '('"));
    };
    // Kubernetes' lexer reaches the end of the input looking for the list's end.
    let inner = open
        .strip_suffix(')')
        .ok_or_else(|| "found '', expected: ',' or ')'".to_string())?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

impl LabelSelector {
    /// Parses the string form used in `?labelSelector=`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let req = if let Some(k) = part.strip_prefix('!') {
                (k.trim().to_string(), Op::NotExists)
            } else if let Some((k, v)) = part.split_once("!=") {
                (k.trim().to_string(), Op::Ne(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once("==") {
                (k.trim().to_string(), Op::Eq(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once('=') {
                (k.trim().to_string(), Op::Eq(v.trim().to_string()))
            } else if let Some((k, v)) = part.split_once(" notin ") {
                (k.trim().to_string(), Op::NotIn(values(v)?))
            } else if let Some((k, v)) = part.split_once(" in ") {
                (k.trim().to_string(), Op::In(values(v)?))
            } else {
                (part.to_string(), Op::Exists)
            };
            if !valid_key(&req.0) {
                return Err(format!("invalid label key {:?}", req.0));
            }
            reqs.push(req);
        }
        Ok(LabelSelector {
            reqs,
            nothing: false,
        })
    }

    /// Builds a selector from a `LabelSelector` object (`matchLabels`, `matchExpressions`).
    /// A missing object selects nothing when `none_if_missing`, everything otherwise.
    pub fn from_object(v: Option<&Value>, none_if_missing: bool) -> Self {
        let Some(v) = v.filter(|v| v.is_object()) else {
            return LabelSelector {
                reqs: vec![],
                nothing: none_if_missing,
            };
        };
        let mut sel = LabelSelector::default();
        if let Some(m) = v.get("matchLabels").and_then(Value::as_object) {
            for (k, val) in m {
                sel.reqs.push((
                    k.clone(),
                    Op::Eq(val.as_str().unwrap_or_default().to_string()),
                ));
            }
        }
        for e in v
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e
                .get("key")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let vals: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let op = match e.get("operator").and_then(Value::as_str) {
                Some("In") => Op::In(vals),
                Some("NotIn") => Op::NotIn(vals),
                Some("Exists") => Op::Exists,
                Some("DoesNotExist") => Op::NotExists,
                _ => {
                    sel.nothing = true;
                    continue;
                }
            };
            sel.reqs.push((key, op));
        }
        sel
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty() && !self.nothing
    }

    /// Whether an object's labels (`metadata.labels`) satisfy the selector.
    pub fn matches(&self, obj: &Value) -> bool {
        self.matches_labels(obj.pointer("/metadata/labels"))
    }

    /// Whether a label map satisfies the selector.
    pub fn matches_labels(&self, labels: Option<&Value>) -> bool {
        if self.nothing {
            return false;
        }
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|(k, op)| match op {
            Op::Eq(v) => get(k) == Some(v.as_str()),
            Op::Ne(v) => get(k) != Some(v.as_str()),
            Op::In(vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Op::NotIn(vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Op::Exists => get(k).is_some(),
            Op::NotExists => get(k).is_none(),
        })
    }
}

/// A parsed field selector: `path=value`/`path!=value` terms on dotted paths such as
/// `metadata.name`, `metadata.namespace`, `spec.nodeName`, `status.phase`.
#[derive(Debug, Clone, Default)]
pub(crate) struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Refuses fields the resource cannot select on, with Kubernetes' messages; `extra` are
    /// the resource's own selectable fields besides `metadata.name`/`metadata.namespace`.
    pub fn check(&self, extra: &[&str]) -> Result<(), String> {
        for (field, _, _) in &self.reqs {
            if field == "metadata.name"
                || field == "metadata.namespace"
                || extra.contains(&field.as_str())
            {
                continue;
            }
            return Err(if extra.is_empty() {
                format!(
                    "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                )
            } else {
                format!("field label not supported: {field}")
            });
        }
        Ok(())
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, eq, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            reqs.push((k.trim().to_string(), eq, v.trim().to_string()));
        }
        Ok(FieldSelector { reqs })
    }

    /// Whether the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(path, eq, want)| {
            let mut cur = Some(obj);
            for seg in path.split('.') {
                cur = cur.and_then(|c| c.get(seg));
            }
            let got = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => String::new(),
            };
            (got == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_based_label_selectors() {
        let obj = json!({"metadata": {"labels": {"app": "web", "tier": "fe"}}});
        for (sel, want) in [
            ("app=web", true),
            ("app==web,tier!=be", true),
            ("app in (web, api),tier", true),
            ("app notin (web)", false),
            ("!missing", true),
            ("missing", false),
            ("", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).map(|s| s.matches(&obj)),
                Ok(want),
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("a in x").is_err());
    }

    #[test]
    fn field_selectors() {
        let obj = json!({"metadata": {"name": "a", "namespace": "ns"}, "spec": {"nodeName": "n1"}});
        let sel = FieldSelector::parse("metadata.name=a,spec.nodeName!=n2");
        assert!(sel.is_ok_and(|s| s.matches(&obj)));
    }
}
