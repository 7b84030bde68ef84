//! The ClusterRole one cluster's agent needs (`tidemark rbac`), from what its components
//! render and its own needs. Pure: the renders come from the caller.
//!
//! - Every kind a component renders: `get`, `list`, `watch` (drift checks and health read
//!   them, replacing a Job watches it go), `create`, `patch` (server-side apply), `delete`
//!   (prune). CustomResourceDefinitions: no `delete` unless a component prunes its CRDs.
//! - What health reads whatever a chart renders: Deployments, StatefulSets, DaemonSets,
//!   Jobs, CRDs and Pods (`get`, `list`, `watch`); and the namespaces it creates for them.
//! - The rules of every Role and ClusterRole a component renders: Kubernetes lets the agent
//!   grant only what it holds itself (it gets no `escalate` and no `bind`).
//! - The agent's own: its status Namespace (`get`, `patch`), Events, its Lease, nodes, the
//!   API server's `/version` and `/readyz`, the Cluster API kinds of its provider when they
//!   are in the cluster itself (self-managed), and, when it drains node groups itself
//!   (`drain: tidemark`), cordoning nodes and evicting pods.
//! - A cluster managed from a management cluster (`kubeconfigSecret`): `get` on that one
//!   Secret, in a Role of the agent's namespace ([`Role::kubeconfig_secret`]); the Cluster
//!   API kinds are granted in the management cluster, not here.
//!
//! Resource names come from the CRDs of the renders, from a table of Kubernetes' built-in
//! kinds, and otherwise are guessed (lower case, plural `s`, `es` after `s`, `x`, `ch` and
//! `sh`, `ies` after a consonant and `y`); guessed ones are named in [`Role::guessed`].

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::component::manifest::RenderedObject;
use crate::keys;

/// One component's render, as far as its permissions go.
#[derive(Clone, Debug)]
pub struct ComponentRender {
    /// Whether the component prunes its CRDs (`pruneCRDs`).
    pub prune_crds: bool,
    /// Its objects.
    pub objects: Vec<RenderedObject>,
}

/// The agent's own needs that depend on the cluster.
#[derive(Clone, Debug)]
pub struct Own {
    /// The namespace of its status record and Lease.
    pub status_namespace: String,
    /// Whether its provider is Cluster API with the objects in this cluster (self-managed:
    /// it reads and applies KubeadmControlPlanes and MachineDeployments here).
    pub clusterapi: bool,
    /// The Secrets of the agent's namespace holding the management cluster's kubeconfig
    /// (`provider.kubeconfigSecret`, at any of the revisions), when the Cluster API objects
    /// are there.
    pub kubeconfig_secrets: BTreeSet<String>,
    /// Whether it drains a node group itself (`drain: tidemark`: it cordons and annotates
    /// nodes, lists their pods and evicts them).
    pub drain: bool,
}

/// The computed ClusterRole.
#[derive(Clone, Debug, PartialEq)]
pub struct Role {
    /// The ClusterRole, as JSON.
    pub cluster_role: Value,
    /// `Kind.group` whose resource name was guessed.
    pub guessed: BTreeSet<String>,
    /// The Role (in the status namespace) reading the management cluster's kubeconfig
    /// Secret, when there is one: a ClusterRole would grant that name in every namespace.
    pub kubeconfig_secret: Option<Value>,
}

const ALL: [&str; 6] = ["get", "list", "watch", "create", "patch", "delete"];
const READ: [&str; 3] = ["get", "list", "watch"];

/// The ClusterRole `name` granting what `renders` and `own` need.
pub fn cluster_role(name: &str, renders: &[ComponentRender], own: &Own) -> Role {
    // (group, resource) -> verbs; resourceNames-scoped and non-resource rules apart.
    let mut grants: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut grant = |group: &str, resource: &str, verbs: &[&str]| {
        grants
            .entry((group.to_string(), resource.to_string()))
            .or_default()
            .extend(verbs.iter().map(|v| v.to_string()));
    };
    let crd_plurals: BTreeMap<(String, String), String> = renders
        .iter()
        .flat_map(|r| &r.objects)
        .filter(|o| o.kind == "CustomResourceDefinition" && o.group() == "apiextensions.k8s.io")
        .filter_map(|o| {
            let spec = o.body.get("spec")?;
            Some((
                (
                    spec.get("group")?.as_str()?.to_string(),
                    spec.pointer("/names/kind")?.as_str()?.to_string(),
                ),
                spec.pointer("/names/plural")?.as_str()?.to_string(),
            ))
        })
        .collect();
    let mut guessed = BTreeSet::new();
    let mut granted_by_roles: Vec<Value> = Vec::new();
    for r in renders {
        for o in &r.objects {
            let group = o.group();
            let resource = match crd_plurals.get(&(group.to_string(), o.kind.clone())) {
                Some(plural) => plural.clone(),
                None => match builtin(group, &o.kind) {
                    Some(plural) => plural.to_string(),
                    None => {
                        guessed.insert(if group.is_empty() {
                            o.kind.clone()
                        } else {
                            format!("{}.{group}", o.kind)
                        });
                        guess(&o.kind)
                    }
                },
            };
            if o.kind == "CustomResourceDefinition" && group == "apiextensions.k8s.io" {
                grant(group, &resource, &READ);
                grant(group, &resource, &["create", "patch"]);
                if r.prune_crds {
                    grant(group, &resource, &["delete"]);
                }
            } else {
                grant(group, &resource, &ALL);
            }
            let is_rbac = group == "rbac.authorization.k8s.io"
                && (o.kind == "Role" || o.kind == "ClusterRole");
            if is_rbac && let Some(rules) = o.body.get("rules").and_then(Value::as_array) {
                granted_by_roles.extend(rules.iter().cloned());
            }
        }
    }
    // Health, whatever is rendered; the namespaces components are applied to.
    for (group, resource) in [
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        ("", "pods"),
    ] {
        grant(group, resource, &READ);
    }
    if !renders.is_empty() {
        grant("", "namespaces", &["get", "create"]);
    }
    // The agent's own. (Pre-flight: budgets and the pods they select, before a rollout.)
    grant("", "nodes", &["get", "list"]);
    grant("policy", "poddisruptionbudgets", &["list"]);
    grant("events.k8s.io", "events", &["create", "patch"]);
    grant("coordination.k8s.io", "leases", &["create"]);
    if own.clusterapi {
        grant(
            keys::capi::CONTROL_PLANE_GROUP,
            "kubeadmcontrolplanes",
            &["get", "patch"],
        );
        grant(
            keys::capi::CLUSTER_GROUP,
            "machinedeployments",
            &["get", "patch"],
        );
        // Nodes map to groups through Machines; topology clusters move the Cluster.
        grant(keys::capi::CLUSTER_GROUP, "machines", &["list"]);
        grant(keys::capi::CLUSTER_GROUP, "clusters", &["get", "patch"]);
    }
    if own.drain {
        grant("", "nodes", &["patch"]);
        grant("", "pods", &["list"]);
        grant("", "pods/eviction", &["create"]);
    }

    let mut rules: Vec<Value> = Vec::new();
    // One rule per group and set of verbs, resources sorted.
    let mut by_group_verbs: BTreeMap<(String, Vec<String>), Vec<String>> = BTreeMap::new();
    for ((group, resource), verbs) in grants {
        by_group_verbs
            .entry((group, ordered(&verbs)))
            .or_default()
            .push(resource);
    }
    for ((group, verbs), resources) in by_group_verbs {
        rules.push(json!({"apiGroups": [group], "resources": resources, "verbs": verbs}));
    }
    rules.push(json!({
        "apiGroups": [""], "resources": ["namespaces"],
        "resourceNames": [own.status_namespace], "verbs": ["get", "patch"],
    }));
    rules.push(json!({
        "apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
        "resourceNames": [keys::LEASE_NAME], "verbs": ["get", "update"],
    }));
    // `/metrics`: the deprecated APIs clients call, before a control-plane hop.
    rules.push(json!({"nonResourceURLs": ["/version", "/readyz", "/metrics"], "verbs": ["get"]}));
    // What rendered Roles and ClusterRoles grant, as they grant it (deduplicated).
    let mut seen = BTreeSet::new();
    for rule in granted_by_roles {
        if seen.insert(rule.to_string()) {
            rules.push(rule);
        }
    }
    let kubeconfig_secret = (!own.kubeconfig_secrets.is_empty()).then(|| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": format!("{name}-clusterapi-kubeconfig"), "namespace": own.status_namespace},
            "rules": [{"apiGroups": [""], "resources": ["secrets"],
                       "resourceNames": own.kubeconfig_secrets, "verbs": ["get"]}],
        })
    });
    Role {
        cluster_role: json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": rules,
        }),
        guessed,
        kubeconfig_secret,
    }
}

/// Verbs in the order people write them.
fn ordered(verbs: &BTreeSet<String>) -> Vec<String> {
    const ORDER: [&str; 8] = [
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
    ];
    let mut out: Vec<String> = ORDER
        .iter()
        .filter(|v| verbs.contains(**v))
        .map(|v| v.to_string())
        .collect();
    out.extend(
        verbs
            .iter()
            .filter(|v| !ORDER.contains(&v.as_str()))
            .cloned(),
    );
    out
}

/// The resource of a built-in kind whose name the guess gets wrong or that is common
/// enough to name here.
fn builtin(group: &str, kind: &str) -> Option<&'static str> {
    Some(match (group, kind) {
        ("", "Endpoints") => "endpoints",
        ("", "ConfigMap") => "configmaps",
        ("", "Secret") => "secrets",
        ("", "Service") => "services",
        ("", "ServiceAccount") => "serviceaccounts",
        ("", "Namespace") => "namespaces",
        ("", "Pod") => "pods",
        ("", "PersistentVolumeClaim") => "persistentvolumeclaims",
        ("", "PersistentVolume") => "persistentvolumes",
        ("", "LimitRange") => "limitranges",
        ("", "ResourceQuota") => "resourcequotas",
        ("apps", "Deployment") => "deployments",
        ("apps", "StatefulSet") => "statefulsets",
        ("apps", "DaemonSet") => "daemonsets",
        ("batch", "Job") => "jobs",
        ("batch", "CronJob") => "cronjobs",
        ("policy", "PodDisruptionBudget") => "poddisruptionbudgets",
        ("rbac.authorization.k8s.io", "Role") => "roles",
        ("rbac.authorization.k8s.io", "RoleBinding") => "rolebindings",
        ("rbac.authorization.k8s.io", "ClusterRole") => "clusterroles",
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => "clusterrolebindings",
        ("apiextensions.k8s.io", "CustomResourceDefinition") => "customresourcedefinitions",
        ("networking.k8s.io", "Ingress") => "ingresses",
        ("networking.k8s.io", "IngressClass") => "ingressclasses",
        ("networking.k8s.io", "NetworkPolicy") => "networkpolicies",
        ("autoscaling", "HorizontalPodAutoscaler") => "horizontalpodautoscalers",
        ("scheduling.k8s.io", "PriorityClass") => "priorityclasses",
        ("storage.k8s.io", "StorageClass") => "storageclasses",
        ("storage.k8s.io", "CSIDriver") => "csidrivers",
        ("apiregistration.k8s.io", "APIService") => "apiservices",
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            "mutatingwebhookconfigurations"
        }
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            "validatingwebhookconfigurations"
        }
        ("coordination.k8s.io", "Lease") => "leases",
        ("discovery.k8s.io", "EndpointSlice") => "endpointslices",
        ("node.k8s.io", "RuntimeClass") => "runtimeclasses",
        _ => return None,
    })
}

/// A kind's resource name, guessed as CRDs usually name them.
fn guess(kind: &str) -> String {
    let lower = kind.to_lowercase();
    let before_y = lower
        .strip_suffix('y')
        .filter(|stem| !stem.ends_with(['a', 'e', 'i', 'o', 'u']));
    if let Some(stem) = before_y {
        format!("{stem}ies")
    } else if ["s", "x", "ch", "sh"].iter().any(|e| lower.ends_with(e)) {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::manifest;

    fn render(text: &str, prune_crds: bool) -> ComponentRender {
        ComponentRender {
            prune_crds,
            objects: manifest::parse(text).unwrap_or_else(|e| panic!("{e}")),
        }
    }

    fn rule_for<'a>(role: &'a Value, group: &str, resource: &str) -> Option<&'a Value> {
        role["rules"].as_array()?.iter().find(|r| {
            r.get("resourceNames").is_none()
                && r["apiGroups"][0] == group
                && r["resources"]
                    .as_array()
                    .is_some_and(|rs| rs.iter().any(|x| x == resource))
        })
    }

    fn verbs(role: &Value, group: &str, resource: &str) -> Vec<String> {
        rule_for(role, group, resource)
            .and_then(|r| r["verbs"].as_array())
            .map(|v| {
                v.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn rendered_kinds_crds_roles_and_the_agents_own_needs() {
        let web = render(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: apps}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web, namespace: apps}\n---\n\
             apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: gizmos.example.com}\n\
             spec: {group: example.com, names: {kind: Gizmo, plural: gizmoes}, scope: Namespaced}\n---\n\
             apiVersion: example.com/v1\nkind: Gizmo\nmetadata: {name: g, namespace: apps}\n---\n\
             apiVersion: example.com/v1\nkind: Policy\nmetadata: {name: p, namespace: apps}\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: reader}\n\
             rules: [{apiGroups: [''], resources: [nodes/metrics], verbs: [get]}]\n",
            false,
        );
        let role = cluster_role(
            "tidemark",
            &[web],
            &Own {
                status_namespace: "tidemark-system".into(),
                clusterapi: true,
                kubeconfig_secrets: BTreeSet::new(),
                drain: true,
            },
        );
        let r = &role.cluster_role;
        assert_eq!(r["kind"], "ClusterRole");
        assert_eq!(r["metadata"]["name"], "tidemark");
        let all = ["get", "list", "watch", "create", "patch", "delete"];
        assert_eq!(verbs(r, "", "configmaps"), all);
        assert_eq!(verbs(r, "networking.k8s.io", "ingresses"), all);
        assert_eq!(verbs(r, "example.com", "gizmoes"), all);
        assert_eq!(verbs(r, "example.com", "policies"), all);
        assert_eq!(
            verbs(r, "apiextensions.k8s.io", "customresourcedefinitions"),
            ["get", "list", "watch", "create", "patch"]
        );
        assert_eq!(verbs(r, "", "pods"), ["get", "list", "watch"]);
        assert_eq!(verbs(r, "", "nodes"), ["get", "list", "patch"]);
        assert_eq!(verbs(r, "", "pods/eviction"), ["create"]);
        assert_eq!(
            verbs(r, "controlplane.cluster.x-k8s.io", "kubeadmcontrolplanes"),
            ["get", "patch"]
        );
        assert_eq!(verbs(r, "", "secrets"), Vec::<String>::new());
        assert_eq!(
            role.guessed,
            BTreeSet::from(["Policy.example.com".to_string()])
        );
        let rules = r["rules"].as_array().cloned().unwrap_or_default();
        assert!(rules.contains(
            &json!({"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]})
        ));
        assert!(rules.contains(&json!({
            "apiGroups": [""], "resources": ["namespaces"],
            "resourceNames": ["tidemark-system"], "verbs": ["get", "patch"],
        })));
        // Nothing wildcard.
        let text = r.to_string();
        assert!(!text.contains("\"*\""), "{text}");
    }

    #[test]
    fn crds_are_deleted_only_by_a_component_that_prunes_them() {
        let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
                   metadata: {name: gizmos.example.com}\n\
                   spec: {group: example.com, names: {kind: Gizmo, plural: gizmos}, scope: Namespaced}\n";
        let own = Own {
            status_namespace: "tidemark-system".into(),
            clusterapi: false,
            kubeconfig_secrets: BTreeSet::new(),
            drain: false,
        };
        let role = cluster_role("t", &[render(crd, true)], &own);
        assert!(
            verbs(
                &role.cluster_role,
                "apiextensions.k8s.io",
                "customresourcedefinitions"
            )
            .contains(&"delete".to_string())
        );
        assert!(
            rule_for(
                &role.cluster_role,
                "controlplane.cluster.x-k8s.io",
                "kubeadmcontrolplanes"
            )
            .is_none()
        );
        assert_eq!(verbs(&role.cluster_role, "", "nodes"), ["get", "list"]);
        assert!(rule_for(&role.cluster_role, "", "pods/eviction").is_none());
        assert_eq!(role.kubeconfig_secret, None);
    }

    #[test]
    fn a_managed_cluster_reads_one_secret_in_its_namespace_and_no_cluster_api_kinds() {
        let own = Own {
            status_namespace: "tidemark-system".into(),
            clusterapi: false,
            kubeconfig_secrets: BTreeSet::from(["capi-management-kubeconfig".to_string()]),
            drain: false,
        };
        let role = cluster_role("tidemark", &[], &own);
        assert_eq!(
            verbs(&role.cluster_role, "", "secrets"),
            Vec::<String>::new()
        );
        assert!(!role.cluster_role.to_string().contains("secrets"));
        assert!(!role.cluster_role.to_string().contains("cluster.x-k8s.io"));
        assert_eq!(
            role.kubeconfig_secret,
            Some(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": "tidemark-clusterapi-kubeconfig", "namespace": "tidemark-system"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"],
                           "resourceNames": ["capi-management-kubeconfig"], "verbs": ["get"]}],
            }))
        );
    }

    #[test]
    fn guesses_plurals_as_crds_name_them() {
        assert_eq!(guess("Gateway"), "gateways");
        assert_eq!(guess("Policy"), "policies");
        assert_eq!(guess("Ingress"), "ingresses");
        assert_eq!(guess("Certificate"), "certificates");
        assert_eq!(guess("Mailbox"), "mailboxes");
    }
}
