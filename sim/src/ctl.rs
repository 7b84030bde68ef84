//! The simulated "cloud": the `/sim/v1` control interface an `exec` provider's commands use to
//! upgrade the control plane and node groups (the same rules as Cluster API: one minor at a
//! time, no downgrade, kubelet never newer than the control plane), read the cluster state and
//! change faults; and [`ctl`], the client behind `tidemark sim ctl`.
//!
//! Endpoints (never subject to faults):
//! - `GET  /sim/v1/state` — control plane, node groups and request counts as JSON (see the
//!   crate docs);
//! - `POST /sim/v1/upgrade-control-plane` `{"version":"1.29.8"}` — 202, 409 when refused;
//! - `POST /sim/v1/upgrade-node-group` `{"name":"general","version":"1.29.8"}` — 202, 404, 409;
//! - `POST /sim/v1/replace-node` `{"name":"NODE","version":"1.29.8"}` — 202, 404, 409: the
//!   cloud terminates the node's VM and its group replaces it (a self-managed group, as an
//!   autoscaling group does: the node and the pods still on it are deleted at once, and a new
//!   node at VERSION boots). The group's MachineDeployment is switched to `OnDelete`, so the
//!   sim never rolls that group by itself afterwards. Replacements are counted per node in
//!   `state` (`replacedNodes`);
//! - `GET  /sim/v1/faults`, `PUT|POST /sim/v1/faults` (body: a fault spec string) — faults.

use std::path::Path;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};

use crate::api::status::ApiError;
use crate::api::{Body, Req, error_response, json_response};
use crate::controllers::capi::{self, KCP_GROUP, MD_GROUP, VERSION};
use crate::controllers::{def, nodes, s, write};
use crate::{Error, FaultSpec, Shared, Version};

fn state(shared: &Shared) -> Value {
    let store = shared.lock_store();
    let cp = shared.cp_version();
    let kcp = def(&store, KCP_GROUP, VERSION, "kubeadmcontrolplanes").and_then(|d| {
        store
            .get(
                &d.gr(),
                &shared.config.capi_namespace,
                &capi::kcp_name(&shared.config.cluster_name),
            )
            .cloned()
    });
    let target = kcp
        .as_ref()
        .map(|k| s(k, "/spec/version").trim_start_matches('v').to_string())
        .unwrap_or_else(|| cp.to_string());
    let all_nodes = nodes::all(&store);
    let mut groups = Vec::new();
    if let Some(d) = def(&store, MD_GROUP, VERSION, "machinedeployments") {
        for md in store.list(&d.gr(), Some(&shared.config.capi_namespace)) {
            let group = capi::group_of(md);
            let md_name = s(md, "/metadata/name");
            let want = s(md, "/spec/template/spec/version")
                .trim_start_matches('v')
                .to_string();
            let members: Vec<Value> = all_nodes
                .iter()
                .filter(|n| nodes::deployment_of(n) == md_name)
                .map(|n| json!({
                    "name": s(n, "/metadata/name"),
                    "kubeletVersion": s(n, "/status/nodeInfo/kubeletVersion").trim_start_matches('v'),
                    "ready": nodes::is_ready(n),
                    "unschedulable": n.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false),
                }))
                .collect();
            let done = members.iter().all(|m| m["kubeletVersion"] == json!(want))
                && md.pointer("/status/phase").and_then(Value::as_str) == Some("Running");
            groups.push(json!({
                "name": group, "machineDeployment": md_name, "targetVersion": want, "upgrading": !done,
                "message": md.pointer("/status/conditions/0/message").cloned().unwrap_or(json!("")),
                "nodes": members,
            }));
        }
    }
    drop(store);
    let replaced = shared
        .replaced_nodes
        .lock()
        .map(|r| json!(*r))
        .unwrap_or_else(|_| json!({}));
    let (requests, by_resource) = shared.request_counts().to_json();
    json!({
        "controlPlane": {"version": cp.to_string(), "targetVersion": target, "upgrading": target != cp.to_string()},
        "nodeGroups": groups,
        "replacedNodes": replaced,
        "requests": requests,
        "requestsByResource": by_resource,
    })
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

fn upgrade_control_plane(shared: &Shared, body: &Value) -> Result<Value, ApiError> {
    let target = version(field(body, "version")?)?;
    let mut store = shared.lock_store();
    let d = def(&store, KCP_GROUP, VERSION, "kubeadmcontrolplanes")
        .ok_or_else(ApiError::not_found_path)?;
    let name = capi::kcp_name(&shared.config.cluster_name);
    let kcp = store
        .get(&d.gr(), &shared.config.capi_namespace, &name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&d, &name))?;
    let cp = shared.cp_version();
    let pending = Version::parse(s(&kcp, "/spec/version"));
    if pending == Some(target) {
        return Ok(
            json!({"accepted": true, "message": format!("control plane upgrade to v{target} already requested")}),
        );
    }
    if pending.is_some_and(|p| p != cp) {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "a control plane upgrade to v{} is in progress",
                pending.map(|p| p.to_string()).unwrap_or_default()
            ),
        ));
    }
    if let Some(msg) = capi::control_plane_refusal(cp, target) {
        return Err(ApiError::new(409, "Conflict", msg));
    }
    let mut k = kcp;
    k["spec"]["version"] = json!(format!("v{target}"));
    write(&mut store, &d, k);
    Ok(
        json!({"accepted": true, "message": format!("upgrading the control plane from v{cp} to v{target}")}),
    )
}

fn upgrade_node_group(shared: &Shared, body: &Value) -> Result<Value, ApiError> {
    let group = field(body, "name")?;
    let target = version(field(body, "version")?)?;
    let mut store = shared.lock_store();
    let d = def(&store, MD_GROUP, VERSION, "machinedeployments")
        .ok_or_else(ApiError::not_found_path)?;
    let md = store
        .list(&d.gr(), Some(&shared.config.capi_namespace))
        .find(|m| capi::group_of(m) == group || s(m, "/metadata/name") == group)
        .cloned()
        .ok_or_else(|| ApiError::new(404, "NotFound", format!("node group {group:?} not found")))?;
    let md_name = s(&md, "/metadata/name").to_string();
    let lowest = nodes::all(&store)
        .iter()
        .filter(|n| nodes::deployment_of(n) == md_name)
        .filter_map(nodes::kubelet_version)
        .min();
    if let Some(msg) = capi::node_group_refusal(shared.cp_version(), lowest, target) {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!("node group {group}: {msg}"),
        ));
    }
    let mut m = md;
    m["spec"]["template"]["spec"]["version"] = json!(format!("v{target}"));
    write(&mut store, &d, m);
    Ok(json!({"accepted": true, "message": format!("rolling node group {group} to v{target}")}))
}

/// Terminates node `name` and has its group replace it at `version` (see the module docs).
fn replace_node(shared: &Shared, body: &Value) -> Result<Value, ApiError> {
    let name = field(body, "name")?;
    let target = version(field(body, "version")?)?;
    let mut store = shared.lock_store();
    let (Some(nd), Some(pd), Some(d)) = (
        def(&store, "", "v1", "nodes"),
        def(&store, "", "v1", "pods"),
        def(&store, MD_GROUP, VERSION, "machinedeployments"),
    ) else {
        return Err(ApiError::not_found_path());
    };
    let node = store
        .get(&nd.gr(), "", name)
        .cloned()
        .ok_or_else(|| ApiError::new(404, "NotFound", format!("node {name:?} not found")))?;
    let md_name = nodes::deployment_of(&node).to_string();
    let md = store
        .list(&d.gr(), Some(&shared.config.capi_namespace))
        .find(|m| s(m, "/metadata/name") == md_name)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                404,
                "NotFound",
                format!("node {name:?} belongs to no node group"),
            )
        })?;
    if let Some(msg) = capi::node_group_refusal(shared.cp_version(), None, target) {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!("node {name}: {msg}"),
        ));
    }
    let mut m = md;
    m["spec"]["strategy"] = json!({"type": "OnDelete"});
    m["spec"]["template"]["spec"]["version"] = json!(format!("v{target}"));
    write(&mut store, &d, m);
    // The VM is gone: so are its pods (no grace: the kubelet that ran them is gone too).
    let on_node: Vec<(String, String)> = store
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
        let _ = store.delete(&pd, &ns, &pod);
    }
    let _ = store.delete(&nd, "", name);
    drop(store);
    if let Ok(mut r) = shared.replaced_nodes.lock() {
        *r.entry(name.to_string()).or_insert(0) += 1;
    }
    Ok(
        json!({"accepted": true, "message": format!("replacing node {name} with a node at v{target}")}),
    )
}

/// Serves `/sim/v1/{rest}`.
pub(crate) async fn handle(shared: &Shared, req: &Req, rest: &str) -> http::Response<Body> {
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
                        *f = crate::faults::Faults::new(spec, shared.config.seed);
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
