//! Apply: a component's render prepared for the cluster (kinds resolved, namespaces set,
//! labelled, in order), checked for objects another component owns, then applied: the
//! namespaces it needs, CRDs first (waited for until Established), then the rest.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tidemark_schema::resolve::DesiredComponent;

use super::Scratch;
use super::live::{self, ApiError, LiveError};
use crate::component::diff;
use crate::component::manifest::{self, ManifestError, ObjectKey, RenderedObject};

/// Errors of applying one component.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The kinds of the render could not be looked up.
    #[error("failed to look up the kinds of the render")]
    Kinds(#[source] ApiError),
    /// The render holds objects that cannot be applied as they are.
    #[error("the render cannot be applied")]
    Manifest(#[source] ManifestError),
    /// The objects tidemark applied could not be listed (to check who owns what).
    #[error("failed to list the objects tidemark applied")]
    Sweep(#[source] ApiError),
    /// The render holds an object another declared component applied.
    #[error(
        "{object} is applied by component {owner}; one object cannot belong to two \
         components (remove it from one of them)"
    )]
    Owned {
        /// The object.
        object: ObjectKey,
        /// The component that applied it.
        owner: String,
    },
    /// A namespace the render needs could not be created.
    #[error("failed to create the namespaces of the render")]
    Namespaces(#[source] ApiError),
    /// Objects failed to apply; every object was tried, the first failure is the cause.
    #[error("{failed} of {total} objects failed to apply; the first")]
    Objects {
        /// How many failed.
        failed: usize,
        /// How many were tried.
        total: usize,
        /// The first failure.
        #[source]
        first: LiveError,
    },
}

/// Resolves the kinds of `objects` and prepares them for apply (`manifest::prepare`).
pub async fn prepare(
    client: &kube::Client,
    scratch: &mut Scratch,
    c: &DesiredComponent,
    objects: Vec<RenderedObject>,
) -> Result<Vec<RenderedObject>, ApplyError> {
    let mut seen = BTreeSet::new();
    for o in &objects {
        if seen.insert((o.api_version.clone(), o.kind.clone())) {
            scratch
                .kinds
                .of(client, o)
                .await
                .map_err(ApplyError::Kinds)?;
        }
    }
    let kinds = &scratch.kinds;
    manifest::prepare(objects, &c.name, &c.namespace, |o| kinds.namespaced(o))
        .map_err(ApplyError::Manifest)
}

/// Refuses a render holding an object that another declared component applied: two
/// components owning one object would overwrite each other on every change, and removing
/// one would delete what the other still declares. A component no longer declared hands
/// its objects over (a renamed component adopts them).
pub async fn check_ownership(
    client: &kube::Client,
    scratch: &mut Scratch,
    c: &DesiredComponent,
    objects: &[RenderedObject],
) -> Result<(), ApplyError> {
    let mut owners: HashMap<ObjectKey, String> = HashMap::new();
    // Objects no inventory records (applied by a release before inventories), or
    // `--prune-scan`: whoever's label an object carries.
    if scratch.unrecorded || scratch.prune_scan {
        let swept = scratch.swept(client).await.map_err(ApplyError::Sweep)?;
        owners.extend(
            swept
                .iter()
                .filter(|o| o.applied_by_tidemark())
                .map(|o| (o.key.clone(), o.component.clone())),
        );
    }
    owners.extend(scratch.owners.iter().map(|(k, v)| (k.clone(), v.clone())));
    owners.extend(scratch.applied.iter().map(|(k, v)| (k.clone(), v.clone())));
    for o in objects {
        let key = o.key();
        if let Some(owner) = owners.get(&key)
            && *owner != c.name
            && scratch.declared.contains(owner)
        {
            return Err(ApplyError::Owned {
                object: key,
                owner: owner.clone(),
            });
        }
    }
    scratch
        .applied
        .extend(objects.iter().map(|o| (o.key(), c.name.clone())));
    Ok(())
}

/// Applies prepared objects: the namespaces they need first, then CRDs (waited for until
/// Established, at most `crd_wait`), then the rest. Every object is tried; a Job whose
/// template changed (immutable) is replaced. Each applied object's body becomes what the
/// server kept of it ([`diff::kept_by_server`]), the reference later drift checks compare
/// with.
pub async fn apply_objects(
    client: &kube::Client,
    scratch: &mut Scratch,
    c: &DesiredComponent,
    objects: &mut [RenderedObject],
    crd_wait: Duration,
) -> Result<(), ApplyError> {
    ensure_namespaces(client, scratch, c, objects).await?;

    let total = objects.len();
    let mut failures: Vec<LiveError> = Vec::new();
    let mut crds_applied = false;
    for o in objects.iter_mut().filter(|o| manifest::is_crd(o)) {
        let applied = live::apply(client, &mut scratch.kinds, o, c.force).await;
        match applied {
            Ok(stored) => {
                scratch.uids.insert(o.key(), live::uid_of(&stored));
                o.body = diff::kept_by_server(&o.body, &stored);
                crds_applied = true;
                if let Err(e) = live::wait_established(client, &o.name, crd_wait).await {
                    failures.push(e);
                }
            }
            Err(e) => failures.push(e),
        }
    }
    if crds_applied {
        scratch.kinds.forget_misses();
    }
    // Custom resources cannot be applied without their definitions.
    if failures.is_empty() {
        for o in objects.iter_mut().filter(|o| !manifest::is_crd(o)) {
            let result = match live::apply(client, &mut scratch.kinds, o, c.force).await {
                // A Job's template is immutable: its new version replaces it.
                Err(LiveError::Api(e)) if e.is_immutable() && is_job(o) => {
                    tracing::info!(component = %c.name, object = %o.key(), "replacing (immutable)");
                    live::replace(client, &mut scratch.kinds, o, c.force).await
                }
                Err(LiveError::Api(e)) if e.is_conflict() && !c.force => {
                    take_back(client, scratch, &c.name, o, e).await
                }
                other => other,
            };
            match result {
                Ok(stored) => {
                    scratch.uids.insert(o.key(), live::uid_of(&stored));
                    o.body = diff::kept_by_server(&o.body, &stored);
                    crate::crash::point("object-applied");
                }
                Err(e) => {
                    tracing::warn!(component = %c.name, object = %o.key(), error = %crate::status::describe(&e), "apply failed");
                    failures.push(e);
                }
            }
        }
    }
    let failed = failures.len();
    match failures.into_iter().next() {
        None => Ok(()),
        Some(first) => Err(ApplyError::Objects {
            failed,
            total,
            first,
        }),
    }
}

/// A conflict on an object tidemark applied before: someone took one of its fields by
/// hand (`kubectl edit`, `kubectl patch`), which is drift. The new render takes it back, as
/// the drift correction does, instead of failing the release until the next drift check.
/// On an object tidemark never applied (an adoption), the conflict stands: taking fields
/// from another owner needs the component's `force: true`.
async fn take_back(
    client: &kube::Client,
    scratch: &mut Scratch,
    component: &str,
    o: &mut RenderedObject,
    conflict: ApiError,
) -> Result<serde_json::Value, LiveError> {
    let ours = match scratch.lookup(client, component, o).await? {
        super::Lookup::Found(body) => live::has_our_apply_entry(&body),
        _ => false,
    };
    if !ours {
        return Err(LiveError::Api(conflict));
    }
    tracing::info!(component, object = %o.key(), conflict = %crate::status::describe(&conflict), "fields of ours changed by hand: taking them back");
    live::apply(client, &mut scratch.kinds, o, true).await
}

/// Creates the namespaces `objects` need (and the component's own) that the render does
/// not create itself, once per pass.
pub async fn ensure_namespaces(
    client: &kube::Client,
    scratch: &mut Scratch,
    c: &DesiredComponent,
    objects: &[RenderedObject],
) -> Result<(), ApplyError> {
    let rendered_namespaces: BTreeSet<&str> = objects
        .iter()
        .filter(|o| o.kind == "Namespace" && o.group().is_empty())
        .map(|o| o.name.as_str())
        .collect();
    let mut needed: BTreeSet<&str> = objects
        .iter()
        .filter_map(|o| o.namespace.as_deref())
        .collect();
    needed.insert(c.namespace.as_str());
    let needed: Vec<String> = needed
        .into_iter()
        .filter(|ns| !rendered_namespaces.contains(ns) && !scratch.namespaces.contains(*ns))
        .map(str::to_string)
        .collect();
    // A plain loop over owned names: a future holding a closure-made iterator would not be
    // `Send` for every lifetime (rust-lang/rust#64552).
    for ns in needed {
        live::ensure_namespaces(client, [ns.as_str()])
            .await
            .map_err(ApplyError::Namespaces)?;
        scratch.namespaces.insert(ns);
    }
    Ok(())
}

fn is_job(o: &RenderedObject) -> bool {
    o.kind == "Job" && o.group() == "batch"
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::Method;
    use serde_json::json;
    use tidemark_schema::ComponentPhase;

    use super::*;
    use crate::converge::scripted::{self, discovery, on, on_with};
    use crate::fixtures::{desired, with_component};

    fn component() -> DesiredComponent {
        let mut c = with_component(desired("1.30.4"), "jobs", ComponentPhase::AfterNodeGroups)
            .components[0]
            .clone();
        c.namespace = "apps".into();
        c
    }

    fn job() -> Vec<RenderedObject> {
        let text = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate, namespace: apps}\n\
                    spec: {template: {spec: {restartPolicy: Never, containers: [{name: m, image: m:2}]}}}\n";
        manifest::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    const JOB: &str = "/apis/batch/v1/namespaces/apps/jobs/migrate";

    /// A Job whose template changed is refused as immutable; tidemark deletes it, waits
    /// until it is gone and applies the new one, all as field manager `tidemark`.
    #[tokio::test]
    async fn an_immutable_job_is_replaced() {
        let patches = AtomicUsize::new(0);
        let (client, log) = scripted::client(vec![
            on(
                Method::GET,
                "/api/v1/namespaces/apps",
                200,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}),
            ),
            discovery("batch/v1", &[("Job", "jobs", true)]),
            on_with(Method::PATCH, JOB, move |_| {
                if patches.fetch_add(1, Ordering::SeqCst) == 0 {
                    (
                        422,
                        scripted::status(
                            422,
                            "Invalid",
                            "Job.batch \"migrate\" is invalid: spec.template: Invalid value: core.PodTemplateSpec{}: field is immutable",
                        ),
                    )
                } else {
                    (
                        200,
                        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate", "namespace": "apps", "uid": "u2"}}),
                    )
                }
            }),
            on(
                Method::DELETE,
                JOB,
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": "migrate", "group": "batch", "kind": "jobs", "uid": "u1"}}),
            ),
            on(
                Method::GET,
                "/apis/batch/v1/namespaces/apps/jobs",
                200,
                scripted::empty_list("JobList"),
            ),
        ]);
        let mut scratch = Scratch::default();
        let c = component();
        let mut objects = job();
        scripted::within(apply_objects(
            &client,
            &mut scratch,
            &c,
            &mut objects,
            Duration::from_secs(1),
        ))
        .await
        .unwrap_or_else(|e| panic!("{}", crate::status::describe(&e)));
        let seen = scripted::requests(&log);
        let writes: Vec<String> = seen
            .iter()
            .filter(|s| s.method != Method::GET)
            .map(scripted::Seen::line)
            .collect();
        assert_eq!(
            writes,
            [
                format!("PATCH {JOB}"),
                format!("DELETE {JOB}"),
                format!("PATCH {JOB}")
            ]
        );
        for patch in seen.iter().filter(|s| s.method == Method::PATCH) {
            assert!(
                patch.has_query("fieldManager", "tidemark"),
                "{}",
                patch.query
            );
            assert_eq!(patch.content_type, "application/apply-patch+yaml");
            assert_eq!(patch.body["metadata"]["name"], "migrate");
        }
        let delete = seen.iter().find(|s| s.method == Method::DELETE);
        assert!(
            delete.is_some_and(|d| d.body["propagationPolicy"] == "Background"),
            "{delete:?}"
        );
    }

    /// A conflict on an object tidemark applied before (a field edited by hand) is drift:
    /// the apply is repeated with force. On an object tidemark never applied, it stands.
    #[tokio::test]
    async fn a_conflict_on_our_own_object_takes_the_field_back_and_on_a_foreign_one_fails() {
        for (ours, expected_patches) in [(true, 2), (false, 1)] {
            let managers = if ours {
                json!([{"manager": "tidemark", "operation": "Apply", "apiVersion": "batch/v1"},
                       {"manager": "kubectl-patch", "operation": "Update", "apiVersion": "batch/v1"}])
            } else {
                json!([{"manager": "helm", "operation": "Update", "apiVersion": "batch/v1"}])
            };
            let listed = json!({"apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": [{
                "metadata": {"name": "migrate", "namespace": "apps",
                    "labels": {"tidemark.dev/component": "jobs"}, "managedFields": managers},
            }]});
            let (client, log) = scripted::client(vec![
                on(
                    Method::GET,
                    "/api/v1/namespaces/apps",
                    200,
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}),
                ),
                discovery("batch/v1", &[("Job", "jobs", true)]),
                on_with(Method::PATCH, JOB, |req| {
                    if req.query.contains("force=true") {
                        (
                            200,
                            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate", "namespace": "apps"}}),
                        )
                    } else {
                        (
                            409,
                            scripted::status(
                                409,
                                "Conflict",
                                "Apply failed with 1 conflict: conflict with \"kubectl-patch\": .spec.backoffLimit",
                            ),
                        )
                    }
                }),
                on(Method::GET, "/apis/batch/v1/jobs", 200, listed),
            ]);
            let mut scratch = Scratch::default();
            let result = scripted::within(apply_objects(
                &client,
                &mut scratch,
                &component(),
                &mut job(),
                Duration::from_secs(1),
            ))
            .await;
            assert_eq!(result.is_ok(), ours, "ours: {ours}");
            let patches: Vec<String> = scripted::requests(&log)
                .iter()
                .filter(|s| s.method == Method::PATCH)
                .map(|s| s.query.clone())
                .collect();
            assert_eq!(patches.len(), expected_patches, "{patches:?}");
            if ours {
                assert!(patches[1].contains("force=true"), "{patches:?}");
            }
        }
    }

    /// Other failures are reported, not retried as a replace, and every object is tried.
    #[tokio::test]
    async fn a_refused_object_fails_the_apply_naming_it() {
        let (client, log) = scripted::client(vec![
            on(
                Method::GET,
                "/api/v1/namespaces/apps",
                404,
                scripted::status(404, "NotFound", "namespaces \"apps\" not found"),
            ),
            on(
                Method::POST,
                "/api/v1/namespaces",
                201,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}),
            ),
            discovery("batch/v1", &[("Job", "jobs", true)]),
            on(
                Method::PATCH,
                JOB,
                422,
                scripted::status(
                    422,
                    "Invalid",
                    "Job.batch \"migrate\" is invalid: spec.backoffLimit: Invalid value: -1",
                ),
            ),
        ]);
        let mut scratch = Scratch::default();
        let e = scripted::within(apply_objects(
            &client,
            &mut scratch,
            &component(),
            &mut job(),
            Duration::from_secs(1),
        ))
        .await
        .err()
        .map(|e| crate::status::describe(&e));
        assert_eq!(
            e.as_deref(),
            Some(
                "1 of 1 objects failed to apply; the first: failed to apply Job.batch/apps/migrate: \
                 Job.batch \"migrate\" is invalid: spec.backoffLimit: Invalid value: -1 (422 Invalid)"
            )
        );
        let lines = scripted::lines(&log);
        assert!(
            lines.contains(&"POST /api/v1/namespaces".to_string()),
            "{lines:?}"
        );
        assert!(!lines.iter().any(|l| l.starts_with("DELETE")), "{lines:?}");
        let created = scripted::requests(&log)
            .into_iter()
            .find(|s| s.method == Method::POST);
        assert!(created.is_some_and(|c| c.has_query("fieldManager", "tidemark")));
    }
}
