//! The resource registry: which resources the API server serves (built-in types and the ones
//! CustomResourceDefinitions add), with the facts discovery needs (kind, scope, short names,
//! subresources, categories). It owns no objects; `store` does.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};

/// The verbs of a custom resource, in the order the apiextensions server lists them.
pub(crate) const CR_VERBS: &[&str] = &[
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "create",
    "update",
    "watch",
];

/// The verbs of an ordinary stored resource.
pub(crate) const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One served resource at one group/version.
#[derive(Clone, Debug)]
pub(crate) struct ResourceDef {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `status` subresource: the main endpoint ignores `status`, `/status` only changes it.
    pub has_status: bool,
    /// Has a `scale` subresource (listed in discovery).
    pub has_scale: bool,
    /// The verbs discovery lists (and the sim serves).
    pub verbs: &'static [&'static str],
    /// The CRD that added this resource, if any.
    pub crd: Option<String>,
    /// Objects carry `metadata.generation` (kinds with a spec/status split: workloads,
    /// PodDisruptionBudgets, CRDs, custom resources, ...; not ConfigMaps, Services, Pods).
    pub generation: bool,
    /// A DELETE that removes the object answers with the object (pods, services, custom
    /// resources, ...); for the others it answers a `Status` naming it
    /// (`ReturnDeletedObject` of the Kubernetes registry).
    pub returns_deleted: bool,
    /// A custom resource's structural schema (`openAPIV3Schema` of its CRD version).
    pub schema: Option<Arc<Value>>,
    /// A custom resource's `additionalPrinterColumns` (Table columns after Name).
    pub printer_columns: Arc<Vec<Value>>,
    /// Objects are stored with those of this group's resource of the same name
    /// (`events.k8s.io` Events are core Events).
    pub storage_group: Option<&'static str>,
    /// How objects of a custom resource convert between the versions of its CRD (see
    /// `convert`); `None` for built-in kinds.
    pub conversion: Option<Arc<CrdConversion>>,
}

/// How the versions of one CRD convert: to and from its storage version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CrdConversion {
    /// The version objects are stored at (`storage: true`).
    pub storage: String,
    /// `spec.conversion.strategy`.
    pub strategy: ConversionStrategy,
}

/// `spec.conversion` of a CRD, as far as the sim can follow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ConversionStrategy {
    /// `None`: only `apiVersion` changes.
    None,
    /// `Webhook` served by the sim's Cluster API (its conversion webhooks run in process:
    /// `controllers::capi::convert`).
    ClusterApi,
    /// `Webhook` the sim cannot call: reading or writing a version other than the storage
    /// version fails as with an unreachable webhook. Holds the webhook's Service.
    Unreachable { service: String },
}

/// The conversion webhooks of Cluster API that the sim serves in process, by Service
/// (namespace, name): the core provider's and the kubeadm control plane provider's.
pub(crate) const CLUSTER_API_WEBHOOKS: &[(&str, &str)] = &[
    ("capi-system", "capi-webhook-service"),
    (
        "capi-kubeadm-control-plane-system",
        "capi-kubeadm-control-plane-webhook-service",
    ),
];

/// The conversion of a CRD's `spec`: its storage version and strategy.
fn crd_conversion(spec: &Value) -> Option<CrdConversion> {
    let versions = spec.get("versions")?.as_array()?;
    let storage = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .or_else(|| versions.first())?
        .get("name")?
        .as_str()?
        .to_string();
    let conversion = spec.get("conversion");
    let strategy = match conversion
        .and_then(|c| c.get("strategy"))
        .and_then(Value::as_str)
    {
        Some("Webhook") => {
            let service = conversion
                .and_then(|c| c.pointer("/webhook/clientConfig/service"))
                .map(|s| {
                    let f = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or_default();
                    (f("namespace").to_string(), f("name").to_string())
                });
            match service {
                Some((ns, name))
                    if CLUSTER_API_WEBHOOKS
                        .iter()
                        .any(|(n, s)| *n == ns && *s == name) =>
                {
                    ConversionStrategy::ClusterApi
                }
                Some((ns, name)) => ConversionStrategy::Unreachable {
                    service: format!("{ns}/{name}"),
                },
                None => ConversionStrategy::Unreachable {
                    service: "(a URL)".into(),
                },
            }
        }
        _ => ConversionStrategy::None,
    };
    Some(CrdConversion { storage, strategy })
}

impl ResourceDef {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key: objects are shared by every version of a group/resource (and by
    /// `events.k8s.io` and core Events).
    pub fn gr(&self) -> GroupResource {
        GroupResource {
            group: self
                .storage_group
                .map_or_else(|| self.group.clone(), str::to_string),
            plural: self.plural.clone(),
        }
    }

    /// Whether a PUT may leave out `metadata.resourceVersion` (`AllowUnconditionalUpdate` of
    /// the kind's strategy): not for Leases.
    pub fn allows_unconditional_update(&self) -> bool {
        !(self.group == "coordination.k8s.io" && self.plural == "leases")
    }

    /// `plural` or `plural.group`, as Kubernetes names resources in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// A group and a resource (plural): the key under which objects are stored.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct GroupResource {
    pub group: String,
    pub plural: String,
}

/// All resources, in registration order (which is discovery order). Those of a CRD are
/// stored from its creation but served only once it is Established.
#[derive(Debug, Default, Clone)]
pub(crate) struct Registry {
    defs: Vec<ResourceDef>,
    /// The CRDs that are Established (their resources are served).
    established: BTreeSet<String>,
    /// The control plane's minor: built-in group/versions with a lifecycle
    /// (`deprecation::LIFECYCLES`) are served only in their minors.
    minor: u32,
}

struct B(
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    bool,
    bool,
);

const ALL: &[&str] = &["all"];

/// Verbs of resources that can only be created (reviews).
pub(crate) const CREATE_ONLY: &[&str] = &["create"];

/// The built-in groups and versions of a v1.28 API server, in discovery order (the
/// aggregator's group priorities): the group's preferred version first. Versions removed
/// by 1.25-1.27 (`events.k8s.io/v1beta1`, `policy/v1beta1`, `autoscaling/v2beta2`, ...) are
/// not served; the flow-control versions follow the control plane's minor
/// (`deprecation::LIFECYCLES`: `v1` from 1.29, `v1beta3` until 1.32, `v1beta2` until 1.29).
#[rustfmt::skip]
const BUILTIN: &[(&str, &str, &[B])] = &[
    ("", "v1", &[
        B("namespaces", "Namespace", "", false, &["ns"], true, false),
        B("nodes", "Node", "", false, &["no"], true, false),
        B("pods", "Pod", "all", true, &["po"], true, false),
        B("services", "Service", "all", true, &["svc"], true, false),
        B("configmaps", "ConfigMap", "", true, &["cm"], false, false),
        B("secrets", "Secret", "", true, &[], false, false),
        B("serviceaccounts", "ServiceAccount", "", true, &["sa"], false, false),
        B("events", "Event", "", true, &["ev"], false, false),
        B("endpoints", "Endpoints", "", true, &["ep"], false, false),
        B("persistentvolumeclaims", "PersistentVolumeClaim", "", true, &["pvc"], true, false),
        B("persistentvolumes", "PersistentVolume", "", false, &["pv"], true, false),
        B("limitranges", "LimitRange", "", true, &["limits"], false, false),
        B("resourcequotas", "ResourceQuota", "", true, &["quota"], true, false),
        B("replicationcontrollers", "ReplicationController", "all", true, &["rc"], true, true),
        B("podtemplates", "PodTemplate", "", true, &[], false, false),
    ]),
    ("apiregistration.k8s.io", "v1", &[
        B("apiservices", "APIService", "", false, &[], true, false),
    ]),
    ("apps", "v1", &[
        B("deployments", "Deployment", "all", true, &["deploy"], true, true),
        B("statefulsets", "StatefulSet", "all", true, &["sts"], true, true),
        B("daemonsets", "DaemonSet", "all", true, &["ds"], true, false),
        B("replicasets", "ReplicaSet", "all", true, &["rs"], true, true),
        B("controllerrevisions", "ControllerRevision", "", true, &[], false, false),
    ]),
    ("events.k8s.io", "v1", &[
        B("events", "Event", "", true, &["ev"], false, false),
    ]),
    ("authentication.k8s.io", "v1", &[
        B("tokenreviews", "TokenReview", "", false, &[], false, false),
        B("selfsubjectreviews", "SelfSubjectReview", "", false, &[], false, false),
    ]),
    ("authorization.k8s.io", "v1", &[
        B("subjectaccessreviews", "SubjectAccessReview", "", false, &[], false, false),
        B("selfsubjectaccessreviews", "SelfSubjectAccessReview", "", false, &[], false, false),
        B("selfsubjectrulesreviews", "SelfSubjectRulesReview", "", false, &[], false, false),
        B("localsubjectaccessreviews", "LocalSubjectAccessReview", "", true, &[], false, false),
    ]),
    ("autoscaling", "v2", &[
        B("horizontalpodautoscalers", "HorizontalPodAutoscaler", "all", true, &["hpa"], true, false),
    ]),
    ("autoscaling", "v1", &[
        B("horizontalpodautoscalers", "HorizontalPodAutoscaler", "all", true, &["hpa"], true, false),
    ]),
    ("batch", "v1", &[
        B("jobs", "Job", "all", true, &[], true, false),
        B("cronjobs", "CronJob", "all", true, &["cj"], true, false),
    ]),
    ("certificates.k8s.io", "v1", &[
        B("certificatesigningrequests", "CertificateSigningRequest", "", false, &["csr"], true, false),
    ]),
    ("networking.k8s.io", "v1", &[
        B("ingresses", "Ingress", "", true, &["ing"], true, false),
        B("ingressclasses", "IngressClass", "", false, &[], false, false),
        B("networkpolicies", "NetworkPolicy", "", true, &["netpol"], false, false),
    ]),
    ("policy", "v1", &[
        B("poddisruptionbudgets", "PodDisruptionBudget", "", true, &["pdb"], true, false),
    ]),
    ("rbac.authorization.k8s.io", "v1", &[
        B("roles", "Role", "", true, &[], false, false),
        B("rolebindings", "RoleBinding", "", true, &[], false, false),
        B("clusterroles", "ClusterRole", "", false, &[], false, false),
        B("clusterrolebindings", "ClusterRoleBinding", "", false, &[], false, false),
    ]),
    ("storage.k8s.io", "v1", &[
        B("storageclasses", "StorageClass", "", false, &["sc"], false, false),
        B("csidrivers", "CSIDriver", "", false, &[], false, false),
        B("csinodes", "CSINode", "", false, &[], false, false),
        B("csistoragecapacities", "CSIStorageCapacity", "", true, &[], false, false),
        B("volumeattachments", "VolumeAttachment", "", false, &[], true, false),
    ]),
    ("admissionregistration.k8s.io", "v1", &[
        B("validatingwebhookconfigurations", "ValidatingWebhookConfiguration", "", false, &[], false, false),
        B("mutatingwebhookconfigurations", "MutatingWebhookConfiguration", "", false, &[], false, false),
    ]),
    ("apiextensions.k8s.io", "v1", &[
        B("customresourcedefinitions", "CustomResourceDefinition", "", false, &["crd", "crds"], true, false),
    ]),
    ("scheduling.k8s.io", "v1", &[
        B("priorityclasses", "PriorityClass", "", false, &["pc"], false, false),
    ]),
    ("coordination.k8s.io", "v1", &[
        B("leases", "Lease", "", true, &[], false, false),
    ]),
    ("node.k8s.io", "v1", &[
        B("runtimeclasses", "RuntimeClass", "", false, &[], false, false),
    ]),
    ("discovery.k8s.io", "v1", &[
        B("endpointslices", "EndpointSlice", "", true, &[], false, false),
    ]),
    ("flowcontrol.apiserver.k8s.io", "v1", &[
        B("flowschemas", "FlowSchema", "", false, &[], true, false),
        B("prioritylevelconfigurations", "PriorityLevelConfiguration", "", false, &[], true, false),
    ]),
    ("flowcontrol.apiserver.k8s.io", "v1beta3", &[
        B("flowschemas", "FlowSchema", "", false, &[], true, false),
        B("prioritylevelconfigurations", "PriorityLevelConfiguration", "", false, &[], true, false),
    ]),
    ("flowcontrol.apiserver.k8s.io", "v1beta2", &[
        B("flowschemas", "FlowSchema", "", false, &[], true, false),
        B("prioritylevelconfigurations", "PriorityLevelConfiguration", "", false, &[], true, false),
    ]),
];

/// Built-in resources whose objects carry `metadata.generation` (their registry strategy sets
/// it on create and bumps it when the spec changes), as of Kubernetes 1.28.
const GENERATION: &[(&str, &str)] = &[
    ("", "replicationcontrollers"),
    ("apps", "deployments"),
    ("apps", "statefulsets"),
    ("apps", "daemonsets"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
    ("policy", "poddisruptionbudgets"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("networking.k8s.io", "ingresses"),
    ("networking.k8s.io", "ingressclasses"),
    ("networking.k8s.io", "networkpolicies"),
    ("discovery.k8s.io", "endpointslices"),
    (
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
    ),
    (
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
    ),
];

/// Built-in resources whose DELETE answers the deleted object (`ReturnDeletedObject: true`
/// in their Kubernetes storage), as of 1.28.
const RETURNS_DELETED: &[(&str, &str)] = &[
    ("", "pods"),
    ("", "services"),
    ("", "serviceaccounts"),
    ("", "persistentvolumes"),
    ("", "persistentvolumeclaims"),
    ("storage.k8s.io", "storageclasses"),
];

impl Registry {
    /// The built-in resources of a v1.28-ish API server.
    pub fn builtin() -> Self {
        let mut defs = Vec::new();
        for (group, version, rs) in BUILTIN {
            for B(plural, kind, cat, namespaced, short, status, scale) in *rs {
                defs.push(ResourceDef {
                    group: (*group).into(),
                    version: (*version).into(),
                    plural: (*plural).into(),
                    singular: kind.to_lowercase(),
                    kind: (*kind).into(),
                    namespaced: *namespaced,
                    short_names: short.iter().map(|s| (*s).to_string()).collect(),
                    categories: if cat.is_empty() {
                        vec![]
                    } else {
                        ALL.iter().map(|s| (*s).to_string()).collect()
                    },
                    has_status: *status,
                    has_scale: *scale,
                    verbs: if kind.ends_with("Review") {
                        CREATE_ONLY
                    } else {
                        VERBS
                    },
                    crd: None,
                    generation: GENERATION.contains(&(*group, *plural)),
                    returns_deleted: RETURNS_DELETED.contains(&(*group, *plural)),
                    schema: None,
                    printer_columns: Arc::new(Vec::new()),
                    storage_group: (*group == "events.k8s.io").then_some(""),
                    conversion: None,
                });
            }
        }
        Registry {
            defs,
            established: BTreeSet::new(),
            minor: 28,
        }
    }

    /// Serves the built-in group/versions of a control plane of `minor`.
    pub fn set_minor(&mut self, minor: u32) {
        self.minor = minor;
    }

    /// Whether `def` is served: built-in and served at this minor, or of an Established
    /// CRD.
    pub fn is_served(&self, def: &ResourceDef) -> bool {
        match &def.crd {
            Some(c) => self.established.contains(c),
            None => crate::deprecation::served(&def.group, &def.version, self.minor),
        }
    }

    /// Serves the resources of CRD `crd_name` (it is Established).
    pub fn establish(&mut self, crd_name: &str) {
        self.established.insert(crd_name.to_string());
    }

    pub fn all(&self) -> &[ResourceDef] {
        &self.defs
    }

    /// The resource `plural` at `group/version`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceDef> {
        self.defs
            .iter()
            .find(|d| d.group == group && d.version == version && d.plural == plural)
    }

    /// The resource of a group/resource at any version: the first registered one served
    /// at this minor, else the first registered one.
    pub fn any_version(&self, gr: &GroupResource) -> Option<&ResourceDef> {
        let mut of_gr = self
            .defs
            .iter()
            .filter(|d| d.group == gr.group && d.plural == gr.plural);
        let first = of_gr.clone().next();
        of_gr
            .find(|d| {
                d.crd.is_some() || crate::deprecation::served(&d.group, &d.version, self.minor)
            })
            .or(first)
    }

    /// Served groups with their versions, in order; the first version is the preferred one.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for d in self.defs.iter().filter(|d| self.is_served(d)) {
            match out.iter_mut().find(|(g, _)| *g == d.group) {
                Some((_, vs)) => {
                    if !vs.contains(&d.version) {
                        vs.push(d.version.clone());
                    }
                }
                None => out.push((d.group.clone(), vec![d.version.clone()])),
            }
        }
        out
    }

    /// Replaces the resources served for CRD `crd_name` by those its spec declares.
    /// Returns the accepted names (for the CRD status), or an error message.
    pub fn set_crd(&mut self, crd_name: &str, crd: &Value) -> Result<Value, String> {
        let spec = crd.get("spec").ok_or("spec: Required value")?;
        let group = spec
            .get("group")
            .and_then(Value::as_str)
            .ok_or("spec.group: Required value")?;
        let names = spec.get("names").ok_or("spec.names: Required value")?;
        let plural = names
            .get("plural")
            .and_then(Value::as_str)
            .ok_or("spec.names.plural: Required value")?;
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .ok_or("spec.names.kind: Required value")?;
        if crd_name != format!("{plural}.{group}") {
            return Err(format!(
                "metadata.name: Invalid value: \"{crd_name}\": must be spec.names.plural+\".\"+spec.group"
            ));
        }
        let singular = names
            .get("singular")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase());
        let strs = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
        let versions = spec
            .get("versions")
            .and_then(Value::as_array)
            .filter(|v| !v.is_empty())
            .ok_or("spec.versions: Required value")?;
        let conversion = crd_conversion(spec).map(Arc::new);
        let mut new = Vec::new();
        // The storage version first, so it is the preferred one in discovery.
        let mut ordered: Vec<&Value> = versions.iter().collect();
        ordered.sort_by_key(|v| v.get("storage").and_then(Value::as_bool) != Some(true));
        for v in ordered {
            if v.get("served").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let Some(version) = v.get("name").and_then(Value::as_str) else {
                return Err("spec.versions[].name: Required value".into());
            };
            new.push(ResourceDef {
                group: group.into(),
                version: version.into(),
                plural: plural.into(),
                singular: singular.clone(),
                kind: kind.into(),
                namespaced,
                short_names: strs(names.get("shortNames")),
                categories: strs(names.get("categories")),
                has_status: v.pointer("/subresources/status").is_some(),
                has_scale: v.pointer("/subresources/scale").is_some(),
                verbs: CR_VERBS,
                crd: Some(crd_name.into()),
                generation: true,
                returns_deleted: true,
                schema: v.pointer("/schema/openAPIV3Schema").cloned().map(Arc::new),
                printer_columns: Arc::new(
                    v.get("additionalPrinterColumns")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                ),
                storage_group: None,
                conversion: conversion.clone(),
            });
        }
        self.defs.retain(|d| d.crd.as_deref() != Some(crd_name));
        self.defs.extend(new);
        Ok(json!({
            "plural": plural, "singular": singular, "kind": kind,
            "listKind": names.get("listKind").cloned().unwrap_or_else(|| json!(format!("{kind}List"))),
            "shortNames": strs(names.get("shortNames")),
            "categories": strs(names.get("categories")),
        }))
    }

    /// Stops serving the resources of CRD `crd_name`.
    pub fn remove_crd(&mut self, crd_name: &str) {
        self.defs.retain(|d| d.crd.as_deref() != Some(crd_name));
        self.established.remove(crd_name);
    }
}
