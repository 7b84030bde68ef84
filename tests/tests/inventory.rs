//! Least privilege from git (issue 13): prune deletes only what a component's inventory
//! (recorded in the status record) holds, reading each object by name, so the agent lists
//! no kind its components do not render (and no Secrets); `--prune-scan` sweeps every kind
//! for adoption; `tidemark rbac` prints the ClusterRole one cluster's agent needs. Every
//! `agent --once` is a new process: what it prunes comes from the recorded inventory.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tidemark_e2e::{
    CLUSTERAPI, Pass, SimProcess, WorkRepo, agent_once, fleet_yaml, helm_wrapper, sim_manifest,
    status_annotation, tidemark_in,
};

/// A chart rendering ConfigMaps `app-keep` (its data `a: NOTE`) and (with `extra`)
/// `app-relabel`, and (with `service`) the Service `app-svc`.
fn write_app_chart(repo: &WorkRepo) -> Result<()> {
    repo.write(
        "charts/app/Chart.yaml",
        "apiVersion: v2\nname: app\nversion: 1.0.0\n",
    )?;
    repo.write(
        "charts/app/templates/objects.yaml",
        "apiVersion: v1
kind: ConfigMap
metadata: {name: app-keep}
data: {a: {{ .Values.note | default \"b\" | quote }}}
{{- if .Values.extra }}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: app-relabel}
data: {a: b}
{{- end }}
{{- if .Values.service }}
---
apiVersion: v1
kind: Service
metadata: {name: app-svc}
spec:
  selector: {app: app}
  ports: [{port: 80, targetPort: 8080}]
{{- end }}
",
    )
}

/// Commits the cluster with component `app` (`service`, `extra` and `note` as given) and
/// moves `wave/canary` to it.
fn release(repo: &WorkRepo, service: bool, extra: bool, note: &str) -> Result<String> {
    let mut manifest = sim_manifest(CLUSTERAPI, "1.29.8", &[("general", "1.29.8")]);
    manifest.push_str(&format!(
        "  components:
    - name: app
      chart: {{path: charts/app}}
      namespace: apps
      values: {{service: {service}, extra: {extra}, note: {note}}}
"
    ));
    repo.write("clusters/sim.yaml", &manifest)?;
    let rev = repo.commit(&format!("service {service}, extra {extra}, note {note}"))?;
    repo.git(&["tag", "-f", "wave/canary", &rev])?;
    Ok(rev)
}

fn count(counts: &BTreeMap<String, u64>, key: &str) -> u64 {
    counts.get(key).copied().unwrap_or(0)
}

fn uid(sim: &SimProcess, kind: &str, name: &str) -> Result<String> {
    let v: Value =
        serde_json::from_str(&sim.kubectl(&["get", kind, "-n", "apps", name, "-o", "json"])?)?;
    Ok(v["metadata"]["uid"].as_str().context("no uid")?.to_string())
}

fn exists(sim: &SimProcess, kind: &str, name: &str) -> bool {
    sim.kubectl(&["get", kind, "-n", "apps", name]).is_ok()
}

fn pass(run: tidemark_e2e::Run) -> Result<Pass> {
    if run.code != Some(0) {
        bail!("agent --once failed: {run:?}");
    }
    Ok(Pass::parse(&run.stdout))
}

#[test]
fn prune_deletes_from_the_recorded_inventory_and_lists_no_other_kind() -> Result<()> {
    let sim = SimProcess::start(&["--version", "1.29.8", "--node-groups", "general=1"])?;
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    write_app_chart(&repo)?;
    release(&repo, true, true, "b")?;
    let work = tempfile::tempdir()?;
    let helm = helm_wrapper(work.path())?;

    let first = pass(agent_once(repo.path(), &sim, &helm, work.path(), &[])?)?;
    assert_eq!(first.phase, "Converged", "{first:?}");
    // The inventory: what was applied, with the uids the API server gave.
    let inventory: Value = serde_json::from_str(&status_annotation(&sim, "inventory"))?;
    assert_eq!(
        inventory,
        serde_json::json!({"app": {
            "ConfigMap": {"apps": {
                "app-keep": uid(&sim, "configmap", "app-keep")?,
                "app-relabel": uid(&sim, "configmap", "app-relabel")?,
            }},
            "Service": {"apps": {"app-svc": uid(&sim, "service", "app-svc")?}},
        }}),
    );
    // A person takes `app-relabel` over (removes the component label): never touched again.
    sim.kubectl(&[
        "label",
        "configmap",
        "-n",
        "apps",
        "app-relabel",
        "tidemark.dev/component-",
    ])?;
    // An object labelled for the component and applied as tidemark, that no inventory
    // records (a pass that died before recording it): only a prune scan adopts it.
    let stray = sim.dir_file(
        "stray.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-stray\n  namespace: apps\n  \
         labels: {tidemark.dev/component: app}\ndata: {a: b}\n",
    )?;
    sim.kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=tidemark",
        "-f",
        &stray.display().to_string(),
    ])?;

    // The render drops the Service and `app-relabel`. A new agent process prunes from the
    // recorded inventory: the Service read by name and deleted; nothing listed to do it.
    release(&repo, false, false, "b")?;
    let before = sim.requests_by_resource()?;
    let second = pass(agent_once(repo.path(), &sim, &helm, work.path(), &[])?)?;
    let after = sim.requests_by_resource()?;
    assert_eq!(second.phase, "Converged", "{second:?}");
    // Deleted in the foreground: gone once the garbage collector has been through.
    tidemark_e2e::wait_until(Duration::from_secs(10), "the Service pruned", || {
        !exists(&sim, "service", "app-svc")
    })?;
    assert!(
        exists(&sim, "configmap", "app-relabel"),
        "an unlabelled object was deleted"
    );
    assert!(
        exists(&sim, "configmap", "app-stray"),
        "an uninventoried object was deleted"
    );
    assert_eq!(
        count(&after, "delete services") - count(&before, "delete services"),
        1
    );
    assert_eq!(
        count(&after, "get services") - count(&before, "get services"),
        1,
        "{after:?}"
    );
    for kind in ["services", "configmaps", "secrets"] {
        assert_eq!(
            count(&after, &format!("list {kind}")),
            0,
            "the agent listed {kind}: {after:?}"
        );
    }
    let inventory: Value = serde_json::from_str(&status_annotation(&sim, "inventory"))?;
    assert_eq!(
        inventory,
        serde_json::json!({"app": {"ConfigMap": {"apps": {
            "app-keep": uid(&sim, "configmap", "app-keep")?,
        }}}}),
    );

    // `--prune-scan` sweeps every listable kind for the label when the component is
    // applied (here a changed ConfigMap): the stray object goes (it says it was applied by
    // tidemark); the unlabelled one still stays. The sweep lists Secrets too, which is why
    // it is not the default.
    release(&repo, false, false, "c")?;
    let third = pass(agent_once(
        repo.path(),
        &sim,
        &helm,
        work.path(),
        &["--prune-scan"],
    )?)?;
    assert_eq!(third.phase, "Converged", "{third:?}");
    tidemark_e2e::wait_until(Duration::from_secs(10), "the stray object pruned", || {
        !exists(&sim, "configmap", "app-stray")
    })?;
    assert!(exists(&sim, "configmap", "app-relabel"));
    assert!(count(&sim.requests_by_resource()?, "list secrets") > 0);
    Ok(())
}

/// `tidemark rbac` renders the cluster's components at every wave tag: a kind only the
/// `main` tag's components render is granted too, as are the rules of a rendered
/// ClusterRole; nothing is wildcard, nothing is granted on Secrets; the result is a
/// ClusterRole the API server takes.
#[test]
fn rbac_prints_the_cluster_role_from_every_wave_tag() -> Result<()> {
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary", "main"]))?;
    write_app_chart(&repo)?;
    repo.write(
        "charts/reader/Chart.yaml",
        "apiVersion: v2\nname: reader\nversion: 1.0.0\n",
    )?;
    repo.write(
        "charts/reader/templates/role.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules:
  - apiGroups: [\"\"]
    resources: [nodes/stats]
    verbs: [get]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: report}
spec:
  schedule: \"0 * * * *\"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: r, image: registry.example.com/report:1}]
",
    )?;
    // Wave `main`'s tag is at an older commit, where the cluster declares the reader
    // chart; `canary`'s at the newest, with the app chart.
    let mut manifest = sim_manifest(CLUSTERAPI, "1.29.8", &[("general", "1.29.8")]);
    manifest.push_str(
        "  components:\n    - name: reader\n      chart: {path: charts/reader}\n      namespace: ops\n",
    );
    repo.write("clusters/sim.yaml", &manifest)?;
    let main = repo.commit("reader")?;
    repo.tag_annotated("wave/main", &main)?;
    release(&repo, true, false, "b")?;

    let work = tempfile::tempdir()?;
    let cache = work.path().join("cache").display().to_string();
    let helm = tidemark_e2e::helm_bin()?.display().to_string();
    let run = tidemark_in(
        &[
            "rbac",
            "--repo",
            &repo.path().display().to_string(),
            "--selector",
            "cluster=sim",
            "--cache-dir",
            &cache,
            "--helm-bin",
            &helm,
        ],
        None,
        &[],
    )?;
    if run.code != Some(0) {
        bail!("tidemark rbac failed: {run:?}");
    }
    assert!(
        run.stdout.contains("wave/canary") && run.stdout.contains("wave/main"),
        "{}",
        run.stdout
    );
    let role: Value = serde_yaml::from_str(&run.stdout)?;
    assert_eq!(role["kind"], "ClusterRole");
    let rules = role["rules"].as_array().context("no rules")?;
    let grants = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            let has = |field: &str, want: &str| {
                r[field]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == want))
            };
            has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
        })
    };
    // wave/canary's component, wave/main's component, the rendered ClusterRole's rule.
    assert!(grants("", "configmaps", "delete"), "{}", run.stdout);
    assert!(grants("", "services", "patch"), "{}", run.stdout);
    assert!(grants("batch", "cronjobs", "create"), "{}", run.stdout);
    assert!(grants("rbac.authorization.k8s.io", "clusterroles", "patch"));
    assert!(grants("", "nodes/stats", "get"), "{}", run.stdout);
    // The agent's own: its provider's kinds, its Lease.
    assert!(grants(
        "controlplane.cluster.x-k8s.io",
        "kubeadmcontrolplanes",
        "patch"
    ));
    assert!(grants("coordination.k8s.io", "leases", "update"));
    assert!(!run.stdout.contains("'*'") && !run.stdout.contains("\"*\""));
    assert!(!run.stdout.contains("secrets"), "{}", run.stdout);

    let sim = SimProcess::start(&["--version", "1.29.8", "--node-groups", "general=1"])?;
    let file = sim.dir_file("role.yaml", &run.stdout)?;
    sim.kubectl(&["apply", "--server-side", "-f", &file.display().to_string()])?;
    sim.kubectl(&["get", "clusterrole", "tidemark"])?;
    Ok(())
}

/// Every (apiGroup, resource or URL, resourceName, verb) a set of rules grants; `""` for
/// no resource name (any).
fn grants(rules: &[Value]) -> BTreeSet<(String, String, String, String)> {
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    for rule in rules {
        let names = strings(&rule["resourceNames"]);
        let names = if names.is_empty() {
            vec![String::new()]
        } else {
            names
        };
        let groups = strings(&rule["apiGroups"]);
        let groups = if groups.is_empty() {
            vec![String::new()]
        } else {
            groups
        };
        for verb in strings(&rule["verbs"]) {
            for url in strings(&rule["nonResourceURLs"]) {
                out.insert((String::new(), url, String::new(), verb.clone()));
            }
            for group in &groups {
                for resource in strings(&rule["resources"]) {
                    for name in &names {
                        out.insert((group.clone(), resource.clone(), name.clone(), verb.clone()));
                    }
                }
            }
        }
    }
    out
}

/// The default `deploy/` ships grants what `tidemark rbac` computes for every cluster of
/// the example fleet (the roles of the base and of the optional components, Cluster API,
/// the management kubeconfig Secret and drain, wherever they are bound). The clusters
/// managed from a management cluster (prod-eu-1, prod-eu-2) need `get` on their kubeconfig
/// Secret, in a Role of the agent's namespace, and no Cluster API kind in the workload
/// cluster; the self-managed ones need the Cluster API kinds and no Secret.
#[test]
fn the_shipped_default_covers_what_tidemark_rbac_computes_for_the_example_fleet() -> Result<()> {
    let example = tidemark_e2e::workspace_root().join("fleet-repo-example");
    let repo = WorkRepo::from_dir(&example)?;
    for wave in ["canary", "early", "main"] {
        repo.tag_annotated(&format!("wave/{wave}"), "HEAD")?;
    }
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(tidemark_e2e::workspace_root().join("deploy/overlays/example-cluster"))
        .output()?;
    if !out.status.success() {
        bail!(
            "kubectl kustomize: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut shipped = BTreeSet::new();
    let root = tidemark_e2e::workspace_root();
    let drain = std::fs::read(root.join("deploy/components/drain/rbac.yaml"))?;
    // The example overlay is prod-eu-1's (managed: the kubeconfig Secret's component); the
    // self-managed clusters' overlays take the Cluster API component.
    let capi = std::fs::read(root.join("deploy/components/clusterapi/rbac.yaml"))?;
    let streams = [out.stdout.as_slice(), drain.as_slice(), capi.as_slice()];
    for doc in streams
        .iter()
        .flat_map(|s| serde_yaml::Deserializer::from_slice(s))
    {
        let doc = <Value as serde::Deserialize>::deserialize(doc)?;
        if doc["kind"] == "ClusterRole" || doc["kind"] == "Role" {
            shipped.extend(grants(doc["rules"].as_array().map_or(&[][..], |v| v)));
        }
    }
    let work = tempfile::tempdir()?;
    let helm = tidemark_e2e::helm_bin()?.display().to_string();
    let clusters = std::fs::read_dir(example.join("clusters"))?;
    let mut checked = 0;
    for entry in clusters {
        let name = entry?
            .path()
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .context("a cluster file without a name")?;
        let run = tidemark_in(
            &[
                "rbac",
                "--repo",
                &repo.path().display().to_string(),
                "--selector",
                &format!("cluster={name}"),
                "--cache-dir",
                &work.path().join(&name).display().to_string(),
                "--helm-bin",
                &helm,
            ],
            None,
            &[],
        )?;
        if run.code != Some(0) {
            bail!("tidemark rbac for {name} failed: {run:?}");
        }
        let mut needed = BTreeSet::new();
        let mut kinds = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&run.stdout) {
            let doc = <Value as serde::Deserialize>::deserialize(doc)?;
            kinds.push(format!(
                "{}/{}",
                doc["kind"].as_str().unwrap_or_default(),
                doc["metadata"]["namespace"].as_str().unwrap_or_default()
            ));
            needed.extend(grants(doc["rules"].as_array().map_or(&[][..], |v| v)));
        }
        let secret = (
            String::new(),
            "secrets".to_string(),
            "capi-management-kubeconfig".to_string(),
            "get".to_string(),
        );
        let kcp = (
            "controlplane.cluster.x-k8s.io".to_string(),
            "kubeadmcontrolplanes".to_string(),
            String::new(),
            "patch".to_string(),
        );
        if ["prod-eu-1", "prod-eu-2"].contains(&name.as_str()) {
            assert_eq!(kinds, ["ClusterRole/", "Role/tidemark-system"], "{name}");
            assert!(needed.contains(&secret), "{name}: {needed:?}");
            assert!(!needed.contains(&kcp), "{name}: {needed:?}");
        } else {
            assert_eq!(kinds, ["ClusterRole/"], "{name}");
            assert!(!needed.contains(&secret), "{name}: {needed:?}");
        }
        if ["dev-eu-1", "staging-eu-1", "edge-ap-1"].contains(&name.as_str()) {
            assert!(needed.contains(&kcp), "{name}: {needed:?}");
        }
        let missing: Vec<_> = needed
            .iter()
            .filter(|(group, resource, resource_name, verb)| {
                // A grant for any name covers a grant for one name.
                !shipped.contains(&(
                    group.clone(),
                    resource.clone(),
                    resource_name.clone(),
                    verb.clone(),
                )) && !shipped.contains(&(
                    group.clone(),
                    resource.clone(),
                    String::new(),
                    verb.clone(),
                ))
            })
            .collect();
        assert!(
            missing.is_empty(),
            "cluster {name} needs what deploy/ does not grant: {missing:?}"
        );
        checked += 1;
    }
    assert_eq!(checked, 7);
    Ok(())
}
