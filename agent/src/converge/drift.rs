//! Drift: compare the live objects of an applied component with its render, re-apply what
//! was edited or deleted by hand, and delete labelled leftovers the render does not hold.
//!
//! The render compared with is the one recorded: the caller applies a new render that
//! differs from the recorded one in full, as a change.

use std::collections::BTreeSet;

use jiff::Timestamp;
use tidemark_schema::resolve::DesiredComponent;

use super::live::{self, LiveError, LiveObject};
use super::render::Render;
use super::{Lookup, Scratch, Target};
use crate::component::inputs::ComponentInputs;
use crate::component::manifest::{ObjectKey, RenderedObject};
use crate::component::{diff, hooks};
use crate::status::{ComponentHealth, ComponentRecord, describe};

/// Checks `c` (applied with `record`) for drift and corrects it; `render` is its prepared
/// render, the one recorded (a corrected object's body becomes what the server kept of
/// it). Returns the new record and each correction as `object (why)`.
pub async fn check(
    target: &Target<'_>,
    scratch: &mut Scratch,
    c: &DesiredComponent,
    render: &mut Render,
    record: &ComponentRecord,
    now: Timestamp,
) -> (ComponentRecord, Vec<String>) {
    let client = target.client;
    let mut corrected = Vec::new();
    let mut errors: Vec<LiveError> = Vec::new();
    for o in &mut render.objects {
        // Hooks run with an apply and are then theirs (a delete policy may remove them).
        if hooks::is_hook(&o.body) {
            continue;
        }
        let why = match scratch.lookup(client, &c.name, o).await {
            Ok(Lookup::NotServed) => {
                corrected.push(format!("{} (kind not served)", o.key()));
                continue;
            }
            // A Job deleted by its own `ttlSecondsAfterFinished` finished: creating it again
            // would run it again.
            Ok(Lookup::Absent) if deleted_by_its_ttl(o) => None,
            Ok(Lookup::Absent) => Some("deleted".to_string()),
            Ok(Lookup::Found(live)) => diff::first_difference(&o.body, &live),
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let Some(why) = why else { continue };
        tracing::info!(component = %c.name, object = %o.key(), drift = %why, "drift found");
        // The fields were tidemark's and someone changed them by hand (taking them over as
        // their field manager): correcting drift takes them back.
        match live::apply(client, &mut scratch.kinds, o, true).await {
            Ok(stored) => {
                o.body = diff::kept_by_server(&o.body, &stored);
                corrected.push(format!("{} ({why})", o.key()));
                crate::crash::point("drift-corrected");
            }
            Err(e) => errors.push(e),
        }
    }
    match leftovers(client, scratch, c, &render.objects).await {
        Ok(found) => {
            for l in &found {
                match live::delete(client, l).await {
                    Ok(()) => corrected.push(format!("{} (not rendered; deleted)", l.key)),
                    Err(e) => errors.push(e.into()),
                }
            }
        }
        Err(e) => errors.push(e),
    }
    let mut next = record.clone();
    if !errors.is_empty() {
        let described: Vec<String> = errors.iter().map(|e| describe(e)).collect();
        next.health = ComponentHealth::Failed;
        next.message = Some(format!("drift correction: {}", described.join("; ")));
    } else if !corrected.is_empty() {
        // A correction is an apply: its rollout gets the component's timeout anew.
        next.applied_at = Some(now);
    }
    (next, corrected)
}

/// Objects of the kinds the render has, labelled for component `c`, applied by tidemark and
/// not rendered (never hooks, objects marked `keep`, or CRDs without `pruneCRDs`).
async fn leftovers(
    client: &kube::Client,
    scratch: &mut Scratch,
    c: &DesiredComponent,
    objects: &[RenderedObject],
) -> Result<Vec<LiveObject>, LiveError> {
    let name = c.name.as_str();
    let keep: BTreeSet<ObjectKey> = objects.iter().map(RenderedObject::key).collect();
    let mut out: Vec<LiveObject> = Vec::new();
    for o in objects {
        let Some((ar, namespaced)) = scratch.kinds.of(client, o).await? else {
            continue;
        };
        let index = scratch.live.of_kind(client, &ar, namespaced).await?;
        out.extend(
            index
                .values()
                .filter(|l| {
                    l.component == name && l.applied_by_tidemark() && !keep.contains(&l.key)
                })
                .cloned(),
        );
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out.dedup_by(|a, b| a.key == b.key);
    Ok(out)
}

/// Whether `o` is a Job that deletes itself when finished (`ttlSecondsAfterFinished`).
fn deleted_by_its_ttl(o: &RenderedObject) -> bool {
    o.kind == "Job"
        && o.group() == "batch"
        && o.body
            .pointer("/spec/ttlSecondsAfterFinished")
            .is_some_and(|t| !t.is_null())
}

/// Whether a new render of `inputs` is the one recorded (same output digest).
pub fn matches_record(render: &Render, inputs: &ComponentInputs, record: &ComponentRecord) -> bool {
    render.inputs == inputs.digest && record.rendered.as_deref() == Some(render.rendered.as_str())
}
