//! Validation: what a real API server rejects with 422 `Invalid` beyond the generic request
//! checks in `store` (kind, namespace): object names, workload selectors and pod templates,
//! restart policies, and fields that are immutable once created. Messages are Kubernetes'
//! (`spec.selector: Required value`); values in them are rendered as JSON where Kubernetes
//! prints Go structs. Status writes are not validated.

use serde_json::Value;

use crate::api::status::ApiError;
use crate::registry::ResourceDef;
use crate::selector::LabelSelector;

const SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// One invalid field: the field path and what Kubernetes says about it.
type FieldError = (String, String);

fn lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_label(name: &str) -> bool {
    name.chars().all(|c| lower_alnum(c) || c == '-')
        && name.starts_with(lower_alnum)
        && name.ends_with(lower_alnum)
}

/// Why `name` is not a valid name for `def`, in Kubernetes' words (the part after the field);
/// `None` when it is valid. RBAC names are path segments (`system:controller:x` is fine),
/// namespaces RFC 1123 labels, services DNS-1035 labels, everything else RFC 1123 subdomains.
pub(crate) fn name_error(def: &ResourceDef, name: &str) -> Option<String> {
    let invalid = |why: &str| Some(format!("Invalid value: {}: {why}", json_str(name)));
    if def.group == "rbac.authorization.k8s.io" {
        return match name {
            "." | ".." => invalid(&format!("may not be '{name}'")),
            _ if name.contains('/') => invalid("may not contain '/'"),
            _ if name.contains('%') => invalid("may not contain '%'"),
            _ => None,
        };
    }
    let (max, rule) = match (def.group.as_str(), def.plural.as_str()) {
        ("", "namespaces") => (63, LABEL),
        ("", "services") => (63, DNS1035),
        _ => (253, SUBDOMAIN),
    };
    if name.len() > max {
        return invalid(&format!("must be no more than {max} characters"));
    }
    let valid = match rule {
        LABEL => is_label(name),
        DNS1035 => is_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase()),
        _ => name
            .split('.')
            .all(|part| !part.is_empty() && is_label(part)),
    };
    if valid { None } else { invalid(rule) }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// `map[string]string{"app":"web"}`, as Kubernetes prints label maps.
fn go_map(labels: Option<&Value>) -> String {
    let Some(m) = labels.and_then(Value::as_object) else {
        return "map[string]string(nil)".into();
    };
    let pairs: Vec<String> = m
        .iter()
        .map(|(k, v)| {
            format!(
                "{}:{}",
                json_str(k),
                json_str(v.as_str().unwrap_or_default())
            )
        })
        .collect();
    format!("map[string]string{{{}}}", pairs.join(", "))
}

fn compact(v: Option<&Value>) -> String {
    v.map_or_else(|| "null".into(), Value::to_string)
}

/// Containers: at least one, each with a unique `name` and an `image`.
fn pod_spec(spec: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty());
    let Some(containers) = containers else {
        errs.push((format!("{path}.containers"), "Required value".into()));
        return;
    };
    let mut seen = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let at = format!("{path}.containers[{i}]");
        match c
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            None => errs.push((format!("{at}.name"), "Required value".into())),
            Some(n) if seen.contains(&n) => errs.push((
                format!("{at}.name"),
                format!("Duplicate value: {}", json_str(n)),
            )),
            Some(n) => seen.push(n),
        }
        if c.get("image")
            .and_then(Value::as_str)
            .is_none_or(|i| i.trim().is_empty())
        {
            errs.push((format!("{at}.image"), "Required value".into()));
        }
    }
}

fn restart_policy(spec: Option<&Value>, path: &str, allowed: &[&str], errs: &mut Vec<FieldError>) {
    let policy = spec
        .and_then(|s| s.get("restartPolicy"))
        .and_then(Value::as_str)
        .unwrap_or("Always");
    if !allowed.contains(&policy) {
        let supported: Vec<String> = allowed.iter().map(|a| json_str(a)).collect();
        errs.push((
            format!("{path}.restartPolicy"),
            format!(
                "Unsupported value: {}: supported values: {}",
                json_str(policy),
                supported.join(", ")
            ),
        ));
    }
}

/// An apps/v1 workload's selector: present, not empty, matching the template's labels.
fn selector(obj: &Value, kind: &str, errs: &mut Vec<FieldError>) {
    let sel = obj.pointer("/spec/selector").filter(|s| s.is_object());
    let labels = obj.pointer("/spec/template/metadata/labels");
    let mismatch = || {
        (
            "spec.template.metadata.labels".to_string(),
            format!(
                "Invalid value: {}: `selector` does not match template `labels`",
                go_map(labels)
            ),
        )
    };
    let Some(sel) = sel else {
        errs.push(("spec.selector".into(), "Required value".into()));
        errs.push(mismatch());
        return;
    };
    let count = |k: &str| sel.get(k).and_then(Value::as_array).map_or(0, Vec::len);
    let match_labels = sel.get("matchLabels").and_then(Value::as_object);
    if match_labels.map_or(0, serde_json::Map::len) + count("matchExpressions") == 0 {
        errs.push((
            "spec.selector".into(),
            format!(
                "Invalid value: {}: empty selector is invalid for {}",
                compact(Some(sel)),
                kind.to_lowercase()
            ),
        ));
        return;
    }
    if !LabelSelector::from_object(Some(sel), true).matches_labels(labels) {
        errs.push(mismatch());
    }
}

fn immutable(old: &Value, new: &Value, ptr: &str, field: &str, errs: &mut Vec<FieldError>) {
    if old.pointer(ptr) != new.pointer(ptr) {
        errs.push((
            field.to_string(),
            format!(
                "Invalid value: {}: field is immutable",
                compact(new.pointer(ptr))
            ),
        ));
    }
}

/// Checks a written object (`old`: the stored one, on update) like the API server's validation
/// of its kind. Names are checked on create by `name_error`.
pub(crate) fn validate(
    def: &ResourceDef,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    validate_with(def, obj, old, Vec::new())
}

/// [`validate`], adding to errors found before (the name's).
pub(crate) fn validate_with(
    def: &ResourceDef,
    obj: &Value,
    old: Option<&Value>,
    mut errs: Vec<FieldError>,
) -> Result<(), ApiError> {
    metadata(obj, &mut errs);
    let template = obj.pointer("/spec/template/spec");
    match (def.group.as_str(), def.kind.as_str()) {
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            selector(obj, &def.kind, &mut errs);
            pod_spec(template, "spec.template.spec", &mut errs);
            restart_policy(template, "spec.template.spec", &["Always"], &mut errs);
            if let Some(old) = old {
                immutable(old, obj, "/spec/selector", "spec.selector", &mut errs);
            }
        }
        ("batch", "Job") => {
            pod_spec(template, "spec.template.spec", &mut errs);
            restart_policy(
                template,
                "spec.template.spec",
                &["OnFailure", "Never"],
                &mut errs,
            );
            if let Some(old) = old {
                immutable(old, obj, "/spec/selector", "spec.selector", &mut errs);
                immutable(old, obj, "/spec/template", "spec.template", &mut errs);
            }
        }
        ("batch", "CronJob") => {
            let spec = obj.pointer("/spec/jobTemplate/spec/template/spec");
            let path = "spec.jobTemplate.spec.template.spec";
            pod_spec(spec, path, &mut errs);
            restart_policy(spec, path, &["OnFailure", "Never"], &mut errs);
        }
        ("", "Pod") if old.is_none() => pod_spec(obj.get("spec"), "spec", &mut errs),
        ("" | "events.k8s.io", "Event") => {
            let core = crate::events::to_storage(def, obj.clone());
            errs.extend(crate::events::validate(
                &core,
                crate::events::is_events_api(def),
            ));
        }
        ("", "ConfigMap" | "Secret") => {
            for field in ["data", "binaryData", "stringData"] {
                for k in obj
                    .get(field)
                    .and_then(Value::as_object)
                    .into_iter()
                    .flat_map(|m| m.keys())
                {
                    if let Some(why) = config_key_error(k) {
                        errs.push((format!("{field}[{k}]"), why));
                    }
                }
            }
        }
        _ => {}
    }
    if errs.is_empty() {
        return Ok(());
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    // Event errors are reported as core Events' (the internal type), whichever API.
    if def.kind == "Event" && def.group == "events.k8s.io" {
        let mut core = def.clone();
        core.group = String::new();
        return Err(ApiError::invalid_fields(&core, name, &errs));
    }
    Err(ApiError::invalid_fields(def, name, &errs))
}

const QUALIFIED: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

fn alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_part(s: &str) -> bool {
    !s.is_empty()
        && s.starts_with(alnum)
        && s.ends_with(alnum)
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// Why `key` is not a qualified name (`prefix/name`), if it is not.
fn qualified_name_error(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let invalid = |why: &str| Some(format!("Invalid value: {}: {why}", json_str(key)));
    if let Some(p) = prefix {
        if p.is_empty() {
            return invalid("prefix part must be non-empty");
        }
        let ok = p.len() <= 253 && p.split('.').all(|part| !part.is_empty() && is_label(part));
        if !ok {
            return invalid(&format!("prefix part {SUBDOMAIN}"));
        }
    }
    if name.is_empty() {
        return invalid("name part must be non-empty");
    }
    if name.len() > 63 {
        return invalid("name part must be no more than 63 characters");
    }
    if !is_qualified_part(name) {
        return invalid(QUALIFIED);
    }
    None
}

fn config_key_error(key: &str) -> Option<String> {
    let ok = !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && key != "."
        && key != "..";
    (!ok).then(|| format!("Invalid value: {}: {CONFIG_KEY}", json_str(key)))
}

/// Labels and annotations: keys are qualified names, label values short names, and all
/// annotations together at most 256 KiB.
fn metadata(obj: &Value, errs: &mut Vec<FieldError>) {
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(why) = qualified_name_error(k) {
                errs.push(("metadata.labels".into(), why));
            }
            let v = v.as_str().unwrap_or_default();
            if v.len() > 63 {
                errs.push((
                    "metadata.labels".into(),
                    format!(
                        "Invalid value: {}: must be no more than 63 characters",
                        json_str(v)
                    ),
                ));
            } else if !v.is_empty() && !is_qualified_part(v) {
                errs.push((
                    "metadata.labels".into(),
                    format!("Invalid value: {}: {LABEL_VALUE}", json_str(v)),
                ));
            }
        }
    }
    if let Some(annotations) = obj
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
    {
        let mut total = 0;
        for (k, v) in annotations {
            if let Some(why) = qualified_name_error(&k.to_lowercase()) {
                errs.push(("metadata.annotations".into(), why));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            errs.push((
                "metadata.annotations".into(),
                "Too long: must have at most 262144 bytes".into(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::Registry;

    fn def(group: &str, plural: &str) -> ResourceDef {
        Registry::builtin()
            .find(group, "v1", plural)
            .cloned()
            .unwrap_or_else(|| panic!("no resource {plural}"))
    }

    #[test]
    fn names() {
        let cm = def("", "configmaps");
        assert_eq!(name_error(&cm, "a.b-c"), None);
        for bad in ["Bad_Name", "-a", "a-", "a..b", ".a", &"a".repeat(254)] {
            assert!(name_error(&cm, bad).is_some(), "{bad}");
        }
        let msg = name_error(&cm, "Bad_Name").unwrap_or_default();
        assert!(
            msg.starts_with("Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"),
            "{msg}"
        );
        assert!(name_error(&def("", "namespaces"), "a.b").is_some());
        assert!(name_error(&def("", "services"), "1abc").is_some());
        assert_eq!(
            name_error(
                &def("rbac.authorization.k8s.io", "clusterroles"),
                "system:x"
            ),
            None
        );
        assert!(name_error(&def("rbac.authorization.k8s.io", "clusterroles"), "a/b").is_some());
    }

    #[test]
    fn workloads() {
        let d = def("apps", "deployments");
        let good = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        assert!(validate(&d, &good, None).is_ok());
        let messages = |obj: &Value, old: Option<&Value>| {
            validate(&d, obj, old)
                .err()
                .map(|e| e.message)
                .unwrap_or_default()
        };
        let mut no_selector = good.clone();
        no_selector["spec"]
            .as_object_mut()
            .map(|s| s.remove("selector"));
        assert_eq!(
            messages(&no_selector, None),
            "Deployment.apps \"web\" is invalid: [spec.selector: Required value, spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`]"
        );
        let mut no_containers = good.clone();
        no_containers["spec"]["template"]["spec"] = json!({});
        assert_eq!(
            messages(&no_containers, None),
            "Deployment.apps \"web\" is invalid: spec.template.spec.containers: Required value"
        );
        let mut moved = good.clone();
        moved["spec"]["selector"]["matchLabels"]["tier"] = json!("x");
        moved["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
        assert!(validate(&d, &moved, None).is_ok());
        assert!(messages(&moved, Some(&good)).contains("spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"web\",\"tier\":\"x\"}}: field is immutable"));
        let job = def("batch", "jobs");
        let j = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let err = validate(&job, &j, None)
            .err()
            .map(|e| e.message)
            .unwrap_or_default();
        assert!(err.contains("spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""), "{err}");
    }
}
