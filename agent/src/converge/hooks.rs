//! Hooks: a component's helm hooks of one phase (before or after its other objects), run in
//! weight order. Each hook object is (re)created, waited for (a Job until it completes, a
//! Pod until it succeeds; anything else once it exists), then deleted as its delete policy
//! says. A failed hook fails the component's apply.

use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject};
use serde_json::Value;

use super::Scratch;
use super::live::{self, ApiError, LiveError};
use crate::component::diff;
use crate::component::health::{self, ObjectHealth};
use crate::component::hooks::Hook;
use crate::component::manifest::RenderedObject;

/// How often a running hook is looked at.
const POLL: Duration = Duration::from_millis(250);

/// Errors of running hooks.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// A hook could not be created, deleted or read.
    #[error("failed to run the hook {object}")]
    Api {
        /// The hook object.
        object: String,
        /// The cause.
        #[source]
        source: LiveError,
    },
    /// A hook ran and failed.
    #[error("hook {object} failed: {message}")]
    Failed {
        /// The hook object.
        object: String,
        /// What it says.
        message: String,
    },
    /// A hook did not finish in time.
    #[error("hook {object} did not finish within {}", tidemark_schema::Duration(*within))]
    Timeout {
        /// The hook object.
        object: String,
        /// How long tidemark waited.
        within: Duration,
    },
}

/// Runs `hooks` (one phase of one component's apply) in ascending weight, render order
/// within a weight. `timeout` bounds the wait for each weight.
pub async fn run(
    client: &kube::Client,
    scratch: &mut Scratch,
    force: bool,
    hooks: &mut [(&mut RenderedObject, Hook)],
    timeout: Duration,
) -> Result<(), HookError> {
    hooks.sort_by_key(|(_, h)| h.weight);
    let mut start = 0;
    while start < hooks.len() {
        let weight = hooks[start].1.weight;
        let end = hooks[start..]
            .iter()
            .position(|(_, h)| h.weight != weight)
            .map_or(hooks.len(), |p| start + p);
        for (obj, hook) in hooks[start..end].iter_mut() {
            let key = obj.key().to_string();
            let api_err = |source| HookError::Api {
                object: key.clone(),
                source,
            };
            if hook.delete_before_creation {
                delete(client, scratch, obj).await.map_err(api_err)?;
            }
            // A hook whose object survived (no before-hook-creation policy) is applied over:
            // a Job's immutable template then needs the replace an ordinary Job gets.
            let stored = match live::apply(client, &mut scratch.kinds, obj, force).await {
                Err(LiveError::Api(e)) if e.is_immutable() => {
                    live::replace(client, &mut scratch.kinds, obj, force).await
                }
                other => other,
            }
            .map_err(api_err)?;
            obj.body = diff::kept_by_server(&obj.body, &stored);
            tracing::info!(hook = %key, weight, "hook created");
        }
        for (obj, hook) in hooks[start..end].iter() {
            let outcome = wait(client, scratch, obj, timeout).await;
            let key = obj.key().to_string();
            let succeeded = outcome.is_ok();
            if (succeeded && hook.delete_on_success) || (!succeeded && hook.delete_on_failure) {
                delete(client, scratch, obj)
                    .await
                    .map_err(|source| HookError::Api {
                        object: key.clone(),
                        source,
                    })?;
            }
            outcome?;
            tracing::info!(hook = %key, "hook succeeded");
        }
        start = end;
    }
    Ok(())
}

/// Waits until hook `obj` is done: a Job complete, a Pod succeeded, anything else present.
async fn wait(
    client: &kube::Client,
    scratch: &mut Scratch,
    obj: &RenderedObject,
    timeout: Duration,
) -> Result<(), HookError> {
    let object = obj.key().to_string();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let live = get(client, scratch, obj)
            .await
            .map_err(|source| HookError::Api {
                object: object.clone(),
                source,
            })?;
        match live.as_ref().map(done) {
            Some(Done::Succeeded) => return Ok(()),
            Some(Done::Failed(message)) => return Err(HookError::Failed { object, message }),
            Some(Done::Running) | None => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(HookError::Timeout {
                object,
                within: timeout,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

enum Done {
    Succeeded,
    Failed(String),
    Running,
}

/// Whether a hook's live object is done.
fn done(live: &Value) -> Done {
    match live.get("kind").and_then(Value::as_str) {
        Some("Pod") => match live.pointer("/status/phase").and_then(Value::as_str) {
            Some("Succeeded") => Done::Succeeded,
            Some("Failed") => {
                Done::Failed(health::pod_problem(live).unwrap_or_else(|| "the pod failed".into()))
            }
            _ => Done::Running,
        },
        Some("Job") => match health::object_health(live) {
            ObjectHealth::Healthy => Done::Succeeded,
            ObjectHealth::Failed(m) => Done::Failed(m),
            ObjectHealth::Progressing(_) => Done::Running,
        },
        _ => Done::Succeeded,
    }
}

/// The live hook object, typed from its resource.
async fn get(
    client: &kube::Client,
    scratch: &mut Scratch,
    obj: &RenderedObject,
) -> Result<Option<Value>, LiveError> {
    let Some((ar, namespaced)) = scratch.kinds.of(client, obj).await? else {
        return Err(LiveError::UnknownKind(obj.key().to_string()));
    };
    let api: Api<DynamicObject> = match obj.namespace.as_deref().filter(|_| namespaced) {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let found = api
        .get_opt(&obj.name)
        .await
        .map_err(|e| ApiError::new(format!("read {}", obj.key()), e))?;
    Ok(found.map(|o| {
        live::typed_items(&ar, vec![o])
            .into_iter()
            .next()
            .unwrap_or(Value::Null)
    }))
}

/// Deletes a hook's object and waits until it is gone (its pods go in the background).
async fn delete(
    client: &kube::Client,
    scratch: &mut Scratch,
    obj: &RenderedObject,
) -> Result<(), LiveError> {
    let Some((ar, namespaced)) = scratch.kinds.of(client, obj).await? else {
        return Ok(());
    };
    let api: Api<DynamicObject> = match obj.namespace.as_deref().filter(|_| namespaced) {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    match api.delete(&obj.name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(e) => {
            let e = ApiError::new(format!("delete {}", obj.key()), e);
            if !e.is_not_found() {
                return Err(e.into());
            }
            return Ok(());
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while get(client, scratch, obj).await?.is_some() {
        if tokio::time::Instant::now() >= deadline {
            return Err(LiveError::NotGone {
                object: obj.key().to_string(),
                within: Duration::from_secs(60),
            });
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}
