//! Helm's lifecycle annotations, as a GitOps agent honours them (pure).
//!
//! - `helm.sh/hook`: `pre-install`/`pre-upgrade` hooks are applied before the component's
//!   other objects and waited for; `post-install`/`post-upgrade` after them. An install is
//!   a component's first apply; every later apply is an upgrade. `test`, `*-delete` and
//!   `*-rollback` hooks are never applied (tidemark runs no tests, deletes with prune and
//!   never rolls back).
//! - `helm.sh/hook-weight`: hooks of one phase run in ascending weight (then render order).
//! - `helm.sh/hook-delete-policy`: `before-hook-creation` (the default), `hook-succeeded`,
//!   `hook-failed`.
//! - Hooks are neither drift nor pruned as ordinary objects.
//! - `helm.sh/resource-policy: keep`: never pruned.

use serde_json::Value;

const HOOK: &str = "helm.sh/hook";
const WEIGHT: &str = "helm.sh/hook-weight";
const DELETE_POLICY: &str = "helm.sh/hook-delete-policy";
const RESOURCE_POLICY: &str = "helm.sh/resource-policy";

/// When a hook runs relative to the component's other objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum When {
    /// Before them (`pre-install`, `pre-upgrade`).
    Pre,
    /// After them (`post-install`, `post-upgrade`).
    Post,
}

/// A hook to run in this apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hook {
    /// Before or after the other objects.
    pub when: When,
    /// Its weight (lower first).
    pub weight: i64,
    /// Delete the previous hook object before creating this one.
    pub delete_before_creation: bool,
    /// Delete it once it succeeded.
    pub delete_on_success: bool,
    /// Delete it if it failed.
    pub delete_on_failure: bool,
}

/// What an object of a render is for this apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// An ordinary object: applied, checked for drift, pruned when no longer rendered.
    Ordinary,
    /// A hook of this apply.
    Hook(Hook),
    /// A hook of another event (an install hook on an upgrade, a test, delete or rollback
    /// hook): not applied now.
    Skipped,
}

fn annotation<'a>(obj: &'a Value, name: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")?.get(name)?.as_str()
}

/// The hook events an object is annotated with.
fn events(obj: &Value) -> Vec<&str> {
    annotation(obj, HOOK)
        .map(|h| {
            h.split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `obj` is a helm hook of any kind (live objects: never drift, never pruned).
pub fn is_hook(obj: &Value) -> bool {
    !events(obj).is_empty()
}

/// Whether `obj` is a hook that can never run under tidemark (a test, delete or rollback
/// hook only): a render leaves it out.
pub fn is_never_applied(obj: &Value) -> bool {
    let events = events(obj);
    !events.is_empty()
        && !events.iter().any(|e| {
            matches!(
                *e,
                "pre-install" | "post-install" | "pre-upgrade" | "post-upgrade"
            )
        })
}

/// Whether `obj` is marked `helm.sh/resource-policy: keep` (never deleted by prune).
pub fn is_kept(obj: &Value) -> bool {
    annotation(obj, RESOURCE_POLICY).is_some_and(|p| p.trim() == "keep")
}

/// What `obj` is in an apply that is an install (`install`) or an upgrade.
pub fn role(obj: &Value, install: bool) -> Role {
    let events = events(obj);
    if events.is_empty() {
        return Role::Ordinary;
    }
    let (pre, post) = if install {
        ("pre-install", "post-install")
    } else {
        ("pre-upgrade", "post-upgrade")
    };
    let when = if events.contains(&pre) {
        When::Pre
    } else if events.contains(&post) {
        When::Post
    } else {
        return Role::Skipped;
    };
    let weight = annotation(obj, WEIGHT)
        .and_then(|w| w.trim().parse().ok())
        .unwrap_or(0);
    let policies: Vec<&str> = annotation(obj, DELETE_POLICY)
        .map(|p| p.split(',').map(str::trim).collect())
        .unwrap_or_default();
    Role::Hook(Hook {
        when,
        weight,
        // Helm's default when no policy is given.
        delete_before_creation: policies.is_empty() || policies.contains(&"before-hook-creation"),
        delete_on_success: policies.contains(&"hook-succeeded"),
        delete_on_failure: policies.contains(&"hook-failed"),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(annotations: Value) -> Value {
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "m", "annotations": annotations}})
    }

    #[test]
    fn hooks_by_event_weight_and_delete_policy() {
        let migrate = obj(
            json!({"helm.sh/hook": "pre-install,pre-upgrade", "helm.sh/hook-weight": "-5",
                                 "helm.sh/hook-delete-policy": "hook-succeeded"}),
        );
        assert_eq!(
            role(&migrate, false),
            Role::Hook(Hook {
                when: When::Pre,
                weight: -5,
                delete_before_creation: false,
                delete_on_success: true,
                delete_on_failure: false,
            })
        );
        let notify = obj(json!({"helm.sh/hook": "post-upgrade"}));
        assert_eq!(
            role(&notify, false),
            Role::Hook(Hook {
                when: When::Post,
                weight: 0,
                delete_before_creation: true,
                delete_on_success: false,
                delete_on_failure: false,
            })
        );
        // An upgrade hook does not run on install, and the other way round.
        assert_eq!(role(&notify, true), Role::Skipped);
        let install_only = obj(json!({"helm.sh/hook": "pre-install"}));
        assert_eq!(role(&install_only, false), Role::Skipped);
        assert!(matches!(role(&install_only, true), Role::Hook(_)));
        assert_eq!(role(&obj(json!({"a": "b"})), false), Role::Ordinary);
        assert_eq!(role(&json!({"kind": "ConfigMap"}), false), Role::Ordinary);
    }

    #[test]
    fn test_delete_and_rollback_hooks_are_never_applied() {
        for events in [
            "test",
            "test-success",
            "pre-delete",
            "post-delete,post-rollback",
        ] {
            let o = obj(json!({"helm.sh/hook": events}));
            assert!(is_never_applied(&o), "{events}");
            assert!(is_hook(&o));
        }
        assert!(!is_never_applied(&obj(
            json!({"helm.sh/hook": "pre-delete,pre-upgrade"})
        )));
        assert!(!is_never_applied(&obj(json!({}))));
    }

    #[test]
    fn keep_policy() {
        assert!(is_kept(&obj(json!({"helm.sh/resource-policy": "keep"}))));
        assert!(!is_kept(&obj(json!({"helm.sh/resource-policy": "delete"}))));
        assert!(!is_kept(&obj(json!({}))));
    }
}
