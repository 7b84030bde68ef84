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
    /// Answered as `text/plain` (the Go mux's `404 page not found`, the aggregator's
    /// `service unavailable`), not as a Status.
    pub plain: bool,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            plain: false,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Details naming an object: the core group is left out, as Kubernetes does.
    fn details(name: &str, group: &str, kind: &str) -> Value {
        let mut d = json!({"name": name, "group": group, "kind": kind});
        if group.is_empty()
            && let Some(m) = d.as_object_mut()
        {
            m.remove("group");
        }
        d
    }

    fn named(code: u16, reason: &'static str, def: &ResourceDef, name: &str, msg: String) -> Self {
        ApiError::new(code, reason, msg).with_details(Self::details(name, &def.group, &def.plural))
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
        let mut details = Self::details(name, &def.group, &def.kind);
        details["causes"] = json!(causes);
        ApiError::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {all}"),
        )
        .with_details(details)
    }

    /// 422 `Invalid` named by the resource (`leases.coordination.k8s.io "x" is invalid: ...`),
    /// as checks of the generic registry report it.
    pub fn invalid_resource(def: &ResourceDef, name: &str, field: &str, msg: &str) -> Self {
        let mut details = Self::details(name, &def.group, &def.plural);
        details["causes"] =
            json!([{"reason": "FieldValueInvalid", "message": msg, "field": field}]);
        ApiError::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {field}: {msg}", def.qualified()),
        )
        .with_details(details)
    }

    /// 422 about request options (`PatchOptions`, `DeleteOptions`, ...), as the API server
    /// validates them: `PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value`.
    pub fn invalid_options(kind: &str, field: &str, msg: &str) -> Self {
        let reason = if msg.starts_with("Required value") {
            "FieldValueRequired"
        } else if msg.starts_with("Unsupported value") {
            "FieldValueNotSupported"
        } else {
            "FieldValueInvalid"
        };
        ApiError::new(
            422,
            "Invalid",
            format!("{kind}.meta.k8s.io \"\" is invalid: {field}: {msg}"),
        )
        .with_details(json!({"group": "meta.k8s.io", "kind": kind,
            "causes": [{"reason": reason, "message": msg, "field": field}]}))
    }

    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", msg)
    }

    /// A path no handler serves (unknown group or version, not an API path): the Go mux's
    /// plain-text 404.
    pub fn not_found_path() -> Self {
        ApiError {
            plain: true,
            ..ApiError::new(404, "NotFound", "404 page not found\n")
        }
    }

    /// The aggregator's answer for an APIService that is not available.
    pub fn service_unavailable() -> Self {
        ApiError {
            plain: true,
            ..ApiError::new(503, "ServiceUnavailable", "service unavailable\n")
        }
    }

    /// An unknown resource of a served group/version: a 404 Status with empty details.
    pub fn not_found_resource() -> Self {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn method_not_allowed() -> Self {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn unsupported_media() -> Self {
        ApiError::new(415, "UnsupportedMediaType", "415: Unsupported Media Type")
            .with_details(json!({}))
    }

    /// A patch that cannot be applied (a JSON patch's failed `test`, a missing path).
    pub fn patch_rejected() -> Self {
        ApiError::new(
            422,
            "Invalid",
            "the server rejected our request due to an error in our request",
        )
        .with_details(json!({}))
    }

    pub fn gone(msg: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", msg)
    }

    pub fn too_many_requests(msg: impl Into<String>) -> Self {
        ApiError::new(429, "TooManyRequests", msg)
    }

    /// A throttled request, as the max-in-flight and priority-and-fairness filters answer
    /// it: `http.Error`'s plain text, not a Status (the caller adds `Retry-After`).
    pub fn throttled() -> Self {
        ApiError {
            plain: true,
            ..ApiError::new(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.\n",
            )
        }
    }

    pub fn internal(msg: impl Into<String>) -> Self {
        ApiError::new(500, "InternalError", msg)
    }

    pub fn unavailable(msg: impl Into<String>) -> Self {
        ApiError::new(503, "ServiceUnavailable", msg)
    }

    /// The `Status` object (an empty reason is left out, as Go's encoding does).
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code,
        });
        if self.reason.is_empty()
            && let Some(m) = v.as_object_mut()
        {
            m.remove("reason");
        }
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}
