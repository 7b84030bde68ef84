//! Kubernetes `Status` errors: every failed API request is answered with a `Status` object
//! carrying `code`, `reason`, `message` and `details`, as a real API server does.

use serde_json::{Value, json};

use crate::registry::ResourceDef;

/// A failed API request, rendered as a `meta.k8s.io/v1 Status`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    fn named(code: u16, reason: &'static str, def: &ResourceDef, name: &str, msg: String) -> Self {
        ApiError::new(code, reason, msg)
            .with_details(json!({"name": name, "group": def.group, "kind": def.plural}))
    }

    pub fn not_found(def: &ResourceDef, name: &str) -> Self {
        let msg = format!("{} \"{name}\" not found", def.qualified());
        Self::named(404, "NotFound", def, name, msg)
    }

    pub fn already_exists(def: &ResourceDef, name: &str) -> Self {
        let msg = format!("{} \"{name}\" already exists", def.qualified());
        Self::named(409, "AlreadyExists", def, name, msg)
    }

    pub fn conflict(def: &ResourceDef, name: &str) -> Self {
        let msg = format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            def.qualified()
        );
        Self::named(409, "Conflict", def, name, msg)
    }

    /// 422 `Invalid` for one field; `msg` is what Kubernetes prints after the field
    /// (`Required value`, `Invalid value: "x": why`).
    pub fn invalid(def: &ResourceDef, name: &str, field: &str, msg: &str) -> Self {
        Self::invalid_fields(def, name, &[(field.to_string(), msg.to_string())])
    }

    /// 422 `Invalid` for several fields, shaped like the API server's: the message
    /// `Kind.group "name" is invalid: [f1: m1, f2: m2]` (no brackets for one) and one cause per
    /// field whose reason follows the message (`FieldValueRequired`, `FieldValueInvalid`, ...).
    pub fn invalid_fields(def: &ResourceDef, name: &str, errors: &[(String, String)]) -> Self {
        let kind = if def.group.is_empty() {
            def.kind.clone()
        } else {
            format!("{}.{}", def.kind, def.group)
        };
        let listed: Vec<String> = errors.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let all = match listed.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|(field, msg)| {
                let reason = [
                    ("Required value", "FieldValueRequired"),
                    ("Unsupported value", "FieldValueNotSupported"),
                    ("Forbidden", "FieldValueForbidden"),
                    ("Duplicate value", "FieldValueDuplicate"),
                    ("Too long", "FieldValueTooLong"),
                ]
                .iter()
                .find(|(prefix, _)| msg.starts_with(prefix))
                .map_or("FieldValueInvalid", |(_, r)| r);
                json!({"reason": reason, "message": msg, "field": field})
            })
            .collect();
        ApiError::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {all}"),
        )
        .with_details(json!({"name": name, "group": def.group, "kind": def.kind, "causes": causes}))
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", msg)
    }

    pub fn not_found_path() -> Self {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn method_not_allowed(msg: impl Into<String>) -> Self {
        ApiError::new(405, "MethodNotAllowed", msg)
    }

    pub fn unsupported_media(ct: &str) -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct})"
            ),
        )
    }

    pub fn gone(msg: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", msg)
    }

    pub fn too_many_requests(msg: impl Into<String>) -> Self {
        ApiError::new(429, "TooManyRequests", msg)
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        ApiError::new(500, "InternalError", msg)
    }

    pub fn unavailable(msg: impl Into<String>) -> Self {
        ApiError::new(503, "ServiceUnavailable", msg)
    }

    /// The `Status` object.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}
