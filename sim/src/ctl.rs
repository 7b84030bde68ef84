//! The simulated "cloud": the `/sim/v1` control interface an `exec` provider's commands use to
//! upgrade the control plane and node groups, read the cluster state and change faults; and
//! [`ctl`], the client behind `tidemark sim ctl`. Requests act on the cluster's Cluster API
//! objects, wherever they are (the sim itself when self-managed, its management sim
//! otherwise): an upgrade writes `KubeadmControlPlane.spec.version` (or a topology cluster's
//! `Cluster.spec.topology.version`) or `MachineDeployment.spec.template.spec.version`, after
//! the cloud's own rules: one minor at a time, no downgrade, kubelet never newer than the
//! control plane and only at its minor (kubeadm), no node-group request on a topology cluster.
//!
//! Endpoints (never subject to faults):
//! - `GET  /sim/v1/state` — control plane, node groups, Machines and request counts as JSON
//!   (see the crate docs; a management sim lists every cluster it manages);
//! - `POST /sim/v1/upgrade-control-plane` `{"version":"1.29.8"}` — 202, 409 when refused (also
//!   through a management sim, which has no managed control plane of its own);
//! - `POST /sim/v1/upgrade-node-group` `{"name":"general","version":"1.29.8"}` — 202, 404, 409;
//! - `POST /sim/v1/replace-node` `{"name":"NODE","version":"1.29.8"}` — 202, 404, 409: the
//!   cloud terminates the node's VM and its group replaces it (a self-managed group, as an
//!   autoscaling group does: the node and the pods still on it are deleted at once, so is its
//!   Machine, and a new node at VERSION boots). The group's MachineDeployment is switched to
//!   `OnDelete`, so the sim never rolls that group by itself afterwards. Replacements are counted per node in
//!   `state` (`replacedNodes`);
//! - `GET  /sim/v1/faults`, `PUT|POST /sim/v1/faults` (body: a fault spec string) — faults.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};

use crate::api::status::ApiError;
use crate::api::{Body, Req, error_response, json_response};
use crate::controllers::capi::{self, Kind, Kinds, Managed, Stores, deployments, keys, label};
use crate::controllers::{nodes, s};
use crate::store::Store;
use crate::{Error, FaultSpec, Shared, Version};

/// The sim holding the Cluster API objects of `shared`'s cluster (itself when self-managed,
/// else its management sim).
fn capi_home(shared: &Arc<Shared>) -> Result<Arc<Shared>, ApiError> {
    if shared
        .capi
        .as_ref()
        .is_some_and(|c| c.clusters.iter().any(|m| m.workload.is_none()))
    {
        return Ok(shared.clone());
    }
    if shared.capi.is_some() {
        return Err(ApiError::new(
            409,
            "Conflict",
            "this is a management sim: its own control plane and nodes are not managed by Cluster API; ask through a workload cluster's kubeconfig",
        ));
    }
    shared
        .management
        .get()
        .and_then(std::sync::Weak::upgrade)
        .ok_or_else(|| ApiError::unavailable("the management sim is gone"))
}

/// The record of `workload`'s cluster in `home`.
fn managed<'a>(home: &'a Shared, workload: &Shared) -> Result<&'a Managed, ApiError> {
    home.capi
        .as_ref()
        .and_then(|c| {
            c.clusters.iter().find(|m| {
                m.name == workload.config.cluster_name
                    && m.namespace == workload.config.capi_namespace
            })
        })
        .ok_or_else(ApiError::not_found_path)
}

/// Runs `f` with the home (management) store and the workload store locked, in that order.
fn with_stores<T>(home: &Shared, workload: &Shared, f: impl FnOnce(&mut Stores) -> T) -> T {
    let mut guard = home.lock_store();
    let mut wl_guard = (!std::ptr::eq(home, workload)).then(|| workload.lock_store());
    let mut stores = Stores {
        mgmt: &mut guard,
        workload: wl_guard.as_deref_mut(),
    };
    f(&mut stores)
}

fn kinds(store: &Store) -> Result<Kinds, ApiError> {
    Kinds::of(store).ok_or_else(ApiError::not_found_path)
}

/// One managed cluster as `state` shows it.
fn cluster_state(home: &Shared, m: &Managed, workload: &Shared) -> Value {
    let cp = workload.cp_version();
    let (forced, deleted) = m.counts();
    let replaced = workload
        .replaced_nodes
        .lock()
        .map(|r| json!(*r))
        .unwrap_or_else(|_| json!({}));
    with_stores(home, workload, |stores| {
        let Some(kinds) = Kinds::of(stores.mgmt) else {
            return json!({});
        };
        let cluster = kinds.get(stores.mgmt, Kind::Cluster, &m.namespace, &m.name);
        let topology = cluster
            .as_ref()
            .map(|c| s(c, "/spec/topology/version").to_string())
            .unwrap_or_default();
        let kcp = cluster
            .as_ref()
            .and_then(|c| capi::control_plane_of(stores.mgmt, &kinds, c));
        let target = kcp
            .as_ref()
            .map(|k| s(k, "/spec/version").trim_start_matches('v').to_string())
            .unwrap_or_else(|| cp.to_string());
        let machines = kinds.of_cluster(stores.mgmt, Kind::Machine, &m.namespace, &m.name);
        let mut groups = Vec::new();
        for md in kinds.of_cluster(stores.mgmt, Kind::MachineDeployment, &m.namespace, &m.name) {
            let md_name = s(&md, "/metadata/name").to_string();
            let want = s(&md, "/spec/template/spec/version")
                .trim_start_matches('v')
                .to_string();
            let members: Vec<Value> = deployments::nodes_of(stores, &kinds, &m.namespace, &m.name, &md_name)
                .iter()
                .map(|n| json!({
                    "name": s(n, "/metadata/name"),
                    "kubeletVersion": s(n, "/status/nodeInfo/kubeletVersion").trim_start_matches('v'),
                    "ready": nodes::is_ready(n),
                    "unschedulable": n.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false),
                }))
                .collect();
            let own: Vec<Value> = machines
                .iter()
                .filter(|x| label(x, keys::DEPLOYMENT_NAME) == md_name)
                .map(|x| {
                    json!({
                        "name": s(x, "/metadata/name"),
                        "node": s(x, "/status/nodeRef/name"),
                        "version": s(x, "/spec/version").trim_start_matches('v'),
                        "phase": s(x, "/status/phase"),
                        "deleting": x.pointer("/metadata/deletionTimestamp").is_some(),
                    })
                })
                .collect();
            let done = members
                .iter()
                .all(|n| n["kubeletVersion"] == json!(want) && n["ready"] == json!(true))
                && own
                    .iter()
                    .all(|x| x["deleting"] == json!(false) && x["version"] == json!(want))
                && md.pointer("/status/phase").and_then(Value::as_str) == Some("Running");
            // The first v1beta1 condition that is not True says what holds it, if anything.
            let message = md
                .pointer("/status/deprecated/v1beta1/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["status"] == json!("False")))
                .and_then(|c| c.get("message"))
                .cloned()
                .unwrap_or(json!(""));
            groups.push(json!({
                "name": capi::group_of(&md), "machineDeployment": md_name,
                "strategy": match s(&md, "/spec/rollout/strategy/type") { "" => "RollingUpdate", t => t },
                "targetVersion": want, "upgrading": !done, "message": message,
                "nodes": members, "machines": own,
            }));
        }
        json!({
            "name": m.name, "namespace": m.namespace,
            "topologyVersion": topology.trim_start_matches('v'),
            "controlPlane": {"version": cp.to_string(), "targetVersion": target, "upgrading": target != cp.to_string()},
            "nodeGroups": groups,
            "drainsForced": forced, "machinesDeleted": deleted,
            "replacedNodes": replaced,
        })
    })
}

fn state(shared: &Arc<Shared>) -> Value {
    let (requests, by_resource) = shared.request_counts().to_json();
    let mut out = match (&shared.capi, capi_home(shared)) {
        (Some(install), Err(_)) => {
            // A management sim: every cluster it manages.
            let clusters: Vec<Value> = install
                .clusters
                .iter()
                .filter_map(|m| m.workload.as_ref().map(|w| cluster_state(shared, m, w)))
                .collect();
            let cp = shared.cp_version().to_string();
            json!({
                "controlPlane": {"version": cp, "targetVersion": cp, "upgrading": false},
                "clusterApi": install.api.to_string(),
                "clusters": clusters,
            })
        }
        (_, Ok(home)) => match managed(&home, shared) {
            Ok(m) => {
                let mut st = cluster_state(&home, m, shared);
                if let Some(install) = &home.capi {
                    st["clusterApi"] = json!(install.api.to_string());
                }
                st
            }
            Err(_) => json!({}),
        },
        (None, Err(e)) => json!({"error": e.message}),
    };
    out["requests"] = requests;
    out["requestsByResource"] = by_resource;
    out["faults"] = faults_state(shared);
    out
}

/// The faults in force and what clients did after the 429s answered.
fn faults_state(shared: &Shared) -> Value {
    let faults = shared
        .faults
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (all, by_client) = faults.throttle_record();
    let record = |t: &crate::ThrottleRecord| {
        json!({
            "throttled": t.throttled,
            "retried": t.retried,
            "retriedEarly": t.retried_early,
            "shortestRetryWaitMs": t.shortest_wait.map(|d| d.as_millis() as u64),
        })
    };
    let mut out = record(&all);
    out["spec"] = json!(faults.spec.to_string());
    out["byClient"] = by_client
        .iter()
        .map(|(client, t)| (client.clone(), record(t)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    out
}

fn field<'a>(body: &'a Value, key: &str) -> Result<&'a str, ApiError> {
    body.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::bad_request(format!("body needs a string {key:?}")))
}

fn version(v: &str) -> Result<Version, ApiError> {
    Version::parse(v).ok_or_else(|| {
        ApiError::bad_request(format!("invalid version {v:?}: expected MAJOR.MINOR.PATCH"))
    })
}

fn conflict(message: impl Into<String>) -> ApiError {
    ApiError::new(409, "Conflict", message)
}

fn upgrade_control_plane(shared: &Arc<Shared>, body: &Value) -> Result<Value, ApiError> {
    let target = version(field(body, "version")?)?;
    let home = capi_home(shared)?;
    let m = managed(&home, shared)?;
    let cp = shared.cp_version();
    with_stores(&home, shared, |stores| {
        let kinds = kinds(stores.mgmt)?;
        let cluster = kinds
            .get(stores.mgmt, Kind::Cluster, &m.namespace, &m.name)
            .ok_or_else(|| {
                ApiError::new(404, "NotFound", format!("cluster {:?} not found", m.name))
            })?;
        let kcp = capi::control_plane_of(stores.mgmt, &kinds, &cluster)
            .ok_or_else(|| ApiError::new(404, "NotFound", "the cluster has no control plane"))?;
        let topology = !s(&cluster, "/spec/topology/version").is_empty();
        let pending = Version::parse(if topology {
            s(&cluster, "/spec/topology/version")
        } else {
            s(&kcp, "/spec/version")
        });
        if pending == Some(target) {
            return Ok(
                json!({"accepted": true, "message": format!("control plane upgrade to v{target} already requested")}),
            );
        }
        if pending.is_some_and(|p| p != cp) {
            return Err(conflict(format!(
                "a control plane upgrade to v{} is in progress",
                pending.map(|p| p.to_string()).unwrap_or_default()
            )));
        }
        // The simulated cloud upgrades; it never downgrades.
        if target < cp {
            return Err(conflict(format!(
                "cannot downgrade the control plane from v{cp} to v{target}"
            )));
        }
        if let Some(msg) = capi::control_plane_refusal(cp, target) {
            return Err(conflict(msg));
        }
        if topology {
            let mut c = cluster;
            c["spec"]["topology"]["version"] = json!(capi::v(target));
            kinds
                .update(stores.mgmt, Kind::Cluster, c)
                .map_err(|e| conflict(e.message))?;
        } else {
            let mut k = kcp;
            k["spec"]["version"] = json!(capi::v(target));
            kinds
                .update(stores.mgmt, Kind::KubeadmControlPlane, k)
                .map_err(|e| conflict(e.message))?;
        }
        Ok(
            json!({"accepted": true, "message": format!("upgrading the control plane from v{cp} to v{target}")}),
        )
    })
}

fn upgrade_node_group(shared: &Arc<Shared>, body: &Value) -> Result<Value, ApiError> {
    let group = field(body, "name")?;
    let target = version(field(body, "version")?)?;
    let home = capi_home(shared)?;
    let m = managed(&home, shared)?;
    let cp = shared.cp_version();
    with_stores(&home, shared, |stores| {
        let kinds = kinds(stores.mgmt)?;
        if kinds
            .get(stores.mgmt, Kind::Cluster, &m.namespace, &m.name)
            .is_some_and(|c| !s(&c, "/spec/topology/version").is_empty())
        {
            return Err(conflict(format!(
                "cluster {} is built from a ClusterClass: its node groups follow spec.topology.version",
                m.name
            )));
        }
        let md = kinds
            .of_cluster(stores.mgmt, Kind::MachineDeployment, &m.namespace, &m.name)
            .into_iter()
            .find(|md| capi::group_of(md) == group || s(md, "/metadata/name") == group)
            .ok_or_else(|| {
                ApiError::new(404, "NotFound", format!("node group {group:?} not found"))
            })?;
        let md_name = s(&md, "/metadata/name").to_string();
        let lowest = deployments::nodes_of(stores, &kinds, &m.namespace, &m.name, &md_name)
            .iter()
            .filter_map(nodes::kubelet_version)
            .min();
        if Version::parse(s(&md, "/spec/template/spec/version")) == Some(target) {
            return Ok(
                json!({"accepted": true, "message": format!("node group {group} upgrade to v{target} already requested")}),
            );
        }
        if let Some(msg) = capi::node_group_refusal(cp, lowest, target) {
            return Err(conflict(format!("node group {group}: {msg}")));
        }
        let mut new = md;
        new["spec"]["template"]["spec"]["version"] = json!(capi::v(target));
        kinds
            .update(stores.mgmt, Kind::MachineDeployment, new)
            .map_err(|e| conflict(e.message))?;
        Ok(json!({"accepted": true, "message": format!("rolling node group {group} to v{target}")}))
    })
}

/// Terminates node `name` and has its group replace it at `version` (see the module docs).
fn replace_node(shared: &Arc<Shared>, body: &Value) -> Result<Value, ApiError> {
    let name = field(body, "name")?;
    let target = version(field(body, "version")?)?;
    let home = capi_home(shared)?;
    let m = managed(&home, shared)?;
    let cp = shared.cp_version();
    with_stores(&home, shared, |stores| {
        let kinds = kinds(stores.mgmt)?;
        if nodes::get(stores.wl(), name).is_none() {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("node {name:?} not found"),
            ));
        }
        let machine = kinds
            .of_cluster(stores.mgmt, Kind::Machine, &m.namespace, &m.name)
            .into_iter()
            .find(|x| s(x, "/status/nodeRef/name") == name);
        let md = machine.as_ref().and_then(|x| {
            kinds.get(
                stores.mgmt,
                Kind::MachineDeployment,
                &m.namespace,
                label(x, keys::DEPLOYMENT_NAME),
            )
        });
        let (Some(machine), Some(md)) = (machine, md) else {
            return Err(ApiError::new(
                404,
                "NotFound",
                format!("node {name:?} belongs to no node group"),
            ));
        };
        if let Some(msg) = capi::node_group_refusal(cp, None, target) {
            return Err(conflict(format!("node {name}: {msg}")));
        }
        // From now on the group is replaced node by node (Cluster API's `OnDelete`), each at
        // the template's version.
        let mut new = md;
        new["spec"]["rollout"]["strategy"] = json!({"type": "OnDelete"});
        new["spec"]["template"]["spec"]["version"] = json!(capi::v(target));
        kinds
            .update(stores.mgmt, Kind::MachineDeployment, new)
            .map_err(|e| conflict(e.message))?;
        // The VM is gone: so are its pods (no grace: the kubelet that ran them is gone too)
        // and its Node; its Machine goes (nothing left to drain) and is replaced.
        let wl = stores.wl();
        if let (Some(nd), Some(pd)) = (
            crate::controllers::def(wl, "", "v1", "nodes"),
            crate::controllers::def(wl, "", "v1", "pods"),
        ) {
            let on_node: Vec<(String, String)> = wl
                .list(&pd.gr(), None)
                .filter(|p| s(p, "/spec/nodeName") == name)
                .map(|p| {
                    (
                        s(p, "/metadata/namespace").to_string(),
                        s(p, "/metadata/name").to_string(),
                    )
                })
                .collect();
            for (ns, pod) in on_node {
                let _ = wl.delete(&pd, &ns, &pod);
            }
            let _ = wl.delete(&nd, "", name);
        }
        capi::machines::delete(stores, &kinds, &machine);
        Ok(())
    })?;
    if let Ok(mut r) = shared.replaced_nodes.lock() {
        *r.entry(name.to_string()).or_insert(0) += 1;
    }
    Ok(
        json!({"accepted": true, "message": format!("replacing node {name} with a node at v{target}")}),
    )
}

/// Serves `/sim/v1/{rest}`.
pub(crate) async fn handle(shared: &Arc<Shared>, req: &Req, rest: &str) -> http::Response<Body> {
    let result = match (&req.method, rest.trim_end_matches('/')) {
        (&Method::GET, "state") => Ok((200, state(shared))),
        (&Method::POST, "upgrade-control-plane") => req
            .body_value()
            .and_then(|b| upgrade_control_plane(shared, &b))
            .map(|v| (202, v)),
        (&Method::POST, "upgrade-node-group") => req
            .body_value()
            .and_then(|b| upgrade_node_group(shared, &b))
            .map(|v| (202, v)),
        (&Method::POST, "replace-node") => req
            .body_value()
            .and_then(|b| replace_node(shared, &b))
            .map(|v| (202, v)),
        (&Method::GET, "faults") => {
            let spec = shared
                .faults
                .lock()
                .map(|f| f.spec.to_string())
                .unwrap_or_default();
            Ok((200, json!({"faults": spec})))
        }
        (&Method::PUT | &Method::POST, "faults") => {
            let text = String::from_utf8_lossy(&req.body).trim().to_string();
            let text = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("faults").and_then(Value::as_str).map(str::to_string))
                .unwrap_or(text);
            match text.parse::<FaultSpec>() {
                Ok(spec) => {
                    let printed = spec.to_string();
                    if let Ok(mut f) = shared.faults.lock() {
                        f.replace(spec, shared.config.seed);
                    }
                    Ok((200, json!({"faults": printed})))
                }
                Err(e) => Err(ApiError::bad_request(e.to_string())),
            }
        }
        _ => Err(ApiError::not_found_path()),
    };
    match result {
        Ok((code, v)) => json_response(code, &v),
        Err(e) => error_response(&e),
    }
}

const USAGE: &str = "usage: tidemark sim ctl (state | upgrade-control-plane [VERSION] [--wait] | upgrade-node-group [NAME [VERSION]] [--wait] | replace-node [NODE [VERSION]] | faults [SPEC]); a missing NAME, NODE or VERSION is taken from TIDEMARK_NODE_GROUP, TIDEMARK_NODE_NAME / TIDEMARK_TARGET_VERSION";

/// Fills in arguments the `exec` provider passes in the environment instead.
fn complete_from_env(mut args: Vec<String>, env: impl Fn(&str) -> Option<String>) -> Vec<String> {
    match args.first().map(String::as_str) {
        Some("upgrade-control-plane") if args.len() == 1 => {
            args.extend(env("TIDEMARK_TARGET_VERSION"));
        }
        Some(verb @ ("upgrade-node-group" | "replace-node")) => {
            if args.len() == 1 {
                args.extend(env(if verb == "replace-node" {
                    "TIDEMARK_NODE_NAME"
                } else {
                    "TIDEMARK_NODE_GROUP"
                }));
            }
            if args.len() == 2 {
                args.extend(env("TIDEMARK_TARGET_VERSION"));
            }
        }
        _ => {}
    }
    args
}

async fn call(
    client: &kube::Client,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, Error> {
    let body = body
        .map(|b| serde_json::to_vec(&b).unwrap_or_default())
        .unwrap_or_default();
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| Error::Ctl(e.to_string()))?;
    let text = client.request_text(req).await.map_err(|e| match e {
        kube::Error::Api(s) => Error::Ctl(s.message),
        other => Error::Ctl(other.to_string()),
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Ctl(format!("bad response: {e}")))
}

/// `tidemark sim ctl ARGS...`: talks to the sim named by the kubeconfig's current context.
/// Returns what to print (JSON for `state`, a sentence otherwise).
///
/// - `state`
/// - `upgrade-control-plane [VERSION] [--wait]`
/// - `upgrade-node-group [NAME [VERSION]] [--wait]` (NAME: the node group or its MachineDeployment)
/// - `replace-node [NODE [VERSION]]` (the node is terminated at once; its replacement boots)
/// - `faults [SPEC]`
///
/// A missing NAME or VERSION is read from `TIDEMARK_NODE_GROUP` / `TIDEMARK_TARGET_VERSION`,
/// the environment the agent's `exec` provider sets. Without `--wait` an upgrade returns once
/// accepted (like a cloud API); progress shows in Kubernetes. Upgrading to the version already
/// requested succeeds (idempotent).
pub async fn ctl(kubeconfig: &Path, args: &[String]) -> Result<String, Error> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let client = kube::Client::try_from(config).map_err(|e| Error::Client(Box::new(e)))?;
    let wait = args.iter().any(|a| a == "--wait");
    let given = args.iter().filter(|a| *a != "--wait").cloned().collect();
    let args = complete_from_env(given, |k| {
        std::env::var(k).ok().filter(|v| !v.trim().is_empty())
    });
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["state"] => {
            let v = call(&client, Method::GET, "/sim/v1/state", None).await?;
            Ok(serde_json::to_string_pretty(&v).unwrap_or_default())
        }
        ["upgrade-control-plane", version] => {
            let v = call(
                &client,
                Method::POST,
                "/sim/v1/upgrade-control-plane",
                Some(json!({"version": version})),
            )
            .await?;
            if wait {
                wait_for(&client, |st| {
                    st.pointer("/controlPlane/version").and_then(Value::as_str)
                        == Some(version.trim_start_matches('v'))
                })
                .await?;
            }
            Ok(v["message"].as_str().unwrap_or_default().to_string())
        }
        ["upgrade-node-group", name, version] => {
            let v = call(
                &client,
                Method::POST,
                "/sim/v1/upgrade-node-group",
                Some(json!({"name": name, "version": version})),
            )
            .await?;
            if wait {
                let name = (*name).to_string();
                wait_for(&client, move |st| {
                    st.get("nodeGroups")
                        .and_then(Value::as_array)
                        .is_some_and(|gs| {
                            gs.iter()
                                .any(|g| g["name"] == json!(name) && g["upgrading"] == json!(false))
                        })
                })
                .await?;
            }
            Ok(v["message"].as_str().unwrap_or_default().to_string())
        }
        ["replace-node", name, version] => {
            let v = call(
                &client,
                Method::POST,
                "/sim/v1/replace-node",
                Some(json!({"name": name, "version": version})),
            )
            .await?;
            Ok(v["message"].as_str().unwrap_or_default().to_string())
        }
        ["faults"] => Ok(
            call(&client, Method::GET, "/sim/v1/faults", None).await?["faults"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ),
        ["faults", spec] => {
            let v = call(
                &client,
                Method::PUT,
                "/sim/v1/faults",
                Some(json!({"faults": spec})),
            )
            .await?;
            Ok(v["faults"].as_str().unwrap_or_default().to_string())
        }
        _ => Err(Error::Ctl(USAGE.into())),
    }
}

async fn wait_for(client: &kube::Client, done: impl Fn(&Value) -> bool) -> Result<(), Error> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(600) {
        let st = call(client, Method::GET, "/sim/v1/state", None).await?;
        if done(&st) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(Error::Ctl("timed out waiting for the upgrade".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_arguments_come_from_the_environment() {
        let env = |k: &str| match k {
            "TIDEMARK_NODE_GROUP" => Some("gpu".to_string()),
            "TIDEMARK_TARGET_VERSION" => Some("1.29.8".to_string()),
            _ => None,
        };
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            complete_from_env(args(&["upgrade-control-plane"]), env),
            args(&["upgrade-control-plane", "1.29.8"])
        );
        assert_eq!(
            complete_from_env(args(&["upgrade-node-group"]), env),
            args(&["upgrade-node-group", "gpu", "1.29.8"])
        );
        assert_eq!(
            complete_from_env(args(&["upgrade-node-group", "general"]), env),
            args(&["upgrade-node-group", "general", "1.29.8"])
        );
        assert_eq!(
            complete_from_env(args(&["upgrade-control-plane", "1.30.0"]), env),
            args(&["upgrade-control-plane", "1.30.0"])
        );
    }
}
