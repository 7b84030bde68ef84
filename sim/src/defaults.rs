//! Server-side defaulting, admission and the shape of stored objects: what a real API
//! server (v1.28) adds to an object that is created or updated — the `SetDefaults_*`
//! functions of each kind (pod templates, Services, workloads, Namespaces ...), the admission
//! plugins that change pods and nodes (ServiceAccount, DefaultTolerationSeconds, Priority,
//! TaintNodesByCondition), and the fields Go's JSON encoding writes even when zero (`status:
//! {}`, `creationTimestamp: null` in pod templates, the counters of a StatefulSet status)
//! or leaves out (zero counters of a Deployment status).
//!
//! It does not do what needs a running component: ClusterIP allocation is in `store`, status
//! is written by `controllers`.

use serde_json::{Map, Value, json};

use crate::registry::ResourceDef;
use crate::rng::Rng;

fn obj_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    v.get_mut(key).and_then(Value::as_object_mut)
}

fn set_default(m: &mut Map<String, Value>, key: &str, v: Value) {
    if m.get(key).is_none_or(Value::is_null) {
        m.insert(key.to_string(), v);
    }
}

/// The tag of an image reference (`latest` when it has neither tag nor digest).
fn image_tag(image: &str) -> Option<&str> {
    if image.contains('@') {
        return None;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => Some(tag),
        None => Some("latest"),
    }
}

fn probe(p: &mut Value) {
    let Some(m) = p.as_object_mut() else { return };
    set_default(m, "timeoutSeconds", json!(1));
    set_default(m, "periodSeconds", json!(10));
    set_default(m, "successThreshold", json!(1));
    set_default(m, "failureThreshold", json!(3));
    if let Some(h) = obj_mut(p, "httpGet") {
        set_default(h, "path", json!("/"));
        set_default(h, "scheme", json!("HTTP"));
    }
}

fn container(c: &mut Value) {
    let Some(m) = c.as_object_mut() else { return };
    set_default(m, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(m, "terminationMessagePolicy", json!("File"));
    if m.get("imagePullPolicy").is_none_or(Value::is_null) {
        let image = m.get("image").and_then(Value::as_str).unwrap_or_default();
        let policy = if image_tag(image) == Some("latest") {
            "Always"
        } else {
            "IfNotPresent"
        };
        m.insert("imagePullPolicy".into(), json!(policy));
    }
    set_default(m, "resources", json!({}));
    if let Some(ports) = m.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    if let Some(env) = m.get_mut("env").and_then(Value::as_array_mut) {
        for e in env {
            if let Some(f) = e
                .pointer_mut("/valueFrom/fieldRef")
                .and_then(Value::as_object_mut)
            {
                set_default(f, "apiVersion", json!("v1"));
            }
        }
    }
    for p in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(v) = m.get_mut(p) {
            probe(v);
        }
    }
}

/// `SetDefaults_PodSpec` and what the defaults of its parts add.
fn pod_spec(spec: &mut Value) {
    let Some(m) = spec.as_object_mut() else {
        return;
    };
    set_default(m, "restartPolicy", json!("Always"));
    set_default(m, "terminationGracePeriodSeconds", json!(30));
    set_default(m, "dnsPolicy", json!("ClusterFirst"));
    set_default(m, "securityContext", json!({}));
    set_default(m, "schedulerName", json!("default-scheduler"));
    let host_network = m.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if let Some(cs) = m.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut() {
                container(c);
                if host_network
                    && let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut)
                {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        if let Some(cp) = p.get("containerPort").cloned() {
                            set_default(p, "hostPort", cp);
                        }
                    }
                }
            }
        }
    }
    if let Some(vs) = m.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vs.iter_mut().filter_map(Value::as_object_mut) {
            for (kind, mode) in [
                ("configMap", true),
                ("secret", true),
                ("projected", true),
                ("downwardAPI", true),
                ("hostPath", false),
            ] {
                if let Some(src) = v.get_mut(kind).and_then(Value::as_object_mut) {
                    if mode {
                        set_default(src, "defaultMode", json!(420));
                    } else {
                        set_default(src, "type", json!(""));
                    }
                }
            }
            if let Some(items) = v
                .get_mut("downwardAPI")
                .and_then(|d| d.get_mut("items"))
                .and_then(Value::as_array_mut)
            {
                for i in items {
                    if let Some(f) = i.get_mut("fieldRef").and_then(Value::as_object_mut) {
                        set_default(f, "apiVersion", json!("v1"));
                    }
                }
            }
        }
    }
}

/// A pod template: its spec defaults, and `metadata.creationTimestamp: null` (Go writes the
/// zero time of the embedded ObjectMeta).
fn pod_template(t: &mut Value) {
    let Some(m) = t.as_object_mut() else { return };
    let meta = m.entry("metadata").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        meta.entry("creationTimestamp").or_insert(Value::Null);
    }
    if let Some(spec) = m.get_mut("spec") {
        pod_spec(spec);
    }
}

/// `metadata.creationTimestamp: null` of an embedded object template (PVC templates).
fn embedded_meta(t: &mut Value) {
    if let Some(m) = t.as_object_mut() {
        let meta = m.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.entry("creationTimestamp").or_insert(Value::Null);
        }
    }
}

/// The defaults of a write of `def` (`SetDefaults_*`; `old` is the stored object on update).
pub(crate) fn apply(def: &ResourceDef, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    let kind = (def.group.as_str(), def.kind.as_str());
    let spec_is_object = obj.get("spec").is_some_and(Value::is_object);
    match kind {
        ("", "Namespace") => {
            let Some(root) = obj.as_object_mut() else {
                return;
            };
            let name = root
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let meta = root.entry("metadata").or_insert_with(|| json!({}));
            if let Some(meta) = meta.as_object_mut() {
                let labels = meta.entry("labels").or_insert_with(|| json!({}));
                if let Some(l) = labels.as_object_mut() {
                    l.insert("kubernetes.io/metadata.name".into(), json!(name));
                }
            }
        }
        ("apps", "Deployment") if spec_is_object => {
            let spec = obj_mut(obj, "spec");
            if let Some(s) = spec {
                set_default(s, "replicas", json!(1));
                set_default(s, "revisionHistoryLimit", json!(10));
                set_default(s, "progressDeadlineSeconds", json!(600));
                let strategy = s
                    .entry("strategy")
                    .or_insert_with(|| json!({"type": "RollingUpdate"}));
                if let Some(st) = strategy.as_object_mut() {
                    set_default(st, "type", json!("RollingUpdate"));
                    if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                        let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
                        if let Some(ru) = ru.as_object_mut() {
                            set_default(ru, "maxUnavailable", json!("25%"));
                            set_default(ru, "maxSurge", json!("25%"));
                        }
                    }
                }
                if let Some(t) = s.get_mut("template") {
                    pod_template(t);
                }
            }
        }
        ("apps", "ReplicaSet") | ("", "ReplicationController") if spec_is_object => {
            if let Some(s) = obj_mut(obj, "spec") {
                set_default(s, "replicas", json!(1));
                if let Some(t) = s.get_mut("template") {
                    pod_template(t);
                }
            }
        }
        ("apps", "StatefulSet") if spec_is_object => {
            if let Some(s) = obj_mut(obj, "spec") {
                set_default(s, "replicas", json!(1));
                set_default(s, "podManagementPolicy", json!("OrderedReady"));
                set_default(s, "revisionHistoryLimit", json!(10));
                let strategy = s
                    .entry("updateStrategy")
                    .or_insert_with(|| json!({"type": "RollingUpdate"}));
                if let Some(st) = strategy.as_object_mut() {
                    set_default(st, "type", json!("RollingUpdate"));
                    if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                        let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
                        if let Some(ru) = ru.as_object_mut() {
                            set_default(ru, "partition", json!(0));
                        }
                    }
                }
                // StatefulSetAutoDeletePVC is beta (on) since 1.27.
                let policy = s
                    .entry("persistentVolumeClaimRetentionPolicy")
                    .or_insert_with(|| json!({}));
                if let Some(p) = policy.as_object_mut() {
                    set_default(p, "whenDeleted", json!("Retain"));
                    set_default(p, "whenScaled", json!("Retain"));
                }
                if let Some(t) = s.get_mut("template") {
                    pod_template(t);
                }
                if let Some(ts) = s
                    .get_mut("volumeClaimTemplates")
                    .and_then(Value::as_array_mut)
                {
                    for t in ts.iter_mut() {
                        embedded_meta(t);
                        if let Some(ps) = obj_mut(t, "spec") {
                            set_default(ps, "volumeMode", json!("Filesystem"));
                        }
                        if let Some(t) = t.as_object_mut() {
                            let st = t.entry("status").or_insert_with(|| json!({}));
                            if let Some(st) = st.as_object_mut() {
                                set_default(st, "phase", json!("Pending"));
                            }
                        }
                    }
                }
            }
        }
        ("apps", "DaemonSet") if spec_is_object => {
            if let Some(s) = obj_mut(obj, "spec") {
                set_default(s, "revisionHistoryLimit", json!(10));
                let strategy = s
                    .entry("updateStrategy")
                    .or_insert_with(|| json!({"type": "RollingUpdate"}));
                if let Some(st) = strategy.as_object_mut() {
                    set_default(st, "type", json!("RollingUpdate"));
                    if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                        let ru = st.entry("rollingUpdate").or_insert_with(|| json!({}));
                        if let Some(ru) = ru.as_object_mut() {
                            set_default(ru, "maxUnavailable", json!(1));
                            set_default(ru, "maxSurge", json!(0));
                        }
                    }
                }
                if let Some(t) = s.get_mut("template") {
                    pod_template(t);
                }
            }
        }
        ("batch", "Job") if spec_is_object => {
            if let Some(s) = obj_mut(obj, "spec") {
                job_spec(s);
            }
        }
        ("batch", "CronJob") if spec_is_object => {
            if let Some(s) = obj_mut(obj, "spec") {
                set_default(s, "concurrencyPolicy", json!("Allow"));
                set_default(s, "suspend", json!(false));
                set_default(s, "successfulJobsHistoryLimit", json!(3));
                set_default(s, "failedJobsHistoryLimit", json!(1));
                if let Some(jt) = s.get_mut("jobTemplate") {
                    embedded_meta(jt);
                    if let Some(js) = obj_mut(jt, "spec") {
                        job_spec(js);
                    }
                }
            }
        }
        ("", "Pod") => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec(spec);
                if let Some(s) = spec.as_object_mut() {
                    set_default(s, "enableServiceLinks", json!(true));
                    requests_from_limits(s);
                }
            }
        }
        ("", "Service") if spec_is_object => {
            if let Some(s) = obj_mut(obj, "spec") {
                service_spec(s);
            }
        }
        ("", "PersistentVolumeClaim") => {
            if let Some(s) = obj_mut(obj, "spec") {
                set_default(s, "volumeMode", json!("Filesystem"));
            }
        }
        ("", "PersistentVolume") => {
            if let Some(s) = obj_mut(obj, "spec") {
                set_default(s, "persistentVolumeReclaimPolicy", json!("Retain"));
                set_default(s, "volumeMode", json!("Filesystem"));
            }
        }
        ("", "Secret") => secret(obj),
        ("storage.k8s.io", "StorageClass") => {
            if let Some(root) = obj.as_object_mut() {
                set_default(root, "reclaimPolicy", json!("Delete"));
                set_default(root, "volumeBindingMode", json!("Immediate"));
            }
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            if let Some(root) = obj.as_object_mut() {
                set_default(root, "preemptionPolicy", json!("PreemptLowerPriority"));
            }
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            if let Some(s) = obj_mut(obj, "spec") {
                if s.get("policyTypes").is_none_or(Value::is_null) {
                    let mut types = vec![json!("Ingress")];
                    if s.get("egress").is_some_and(|e| !e.is_null()) {
                        types.push(json!("Egress"));
                    }
                    s.insert("policyTypes".into(), Value::Array(types));
                }
                for dir in ["ingress", "egress"] {
                    for rule in s
                        .get_mut(dir)
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        for p in rule
                            .get_mut("ports")
                            .and_then(Value::as_array_mut)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_object_mut)
                        {
                            set_default(p, "protocol", json!("TCP"));
                        }
                    }
                }
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            for s in obj
                .get_mut("subjects")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                let group = match s.get("kind").and_then(Value::as_str) {
                    Some("User" | "Group") => "rbac.authorization.k8s.io",
                    _ => "",
                };
                if !group.is_empty() {
                    set_default(s, "apiGroup", json!(group));
                }
            }
        }
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration")
        | ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            let mutating = def.kind.starts_with("Mutating");
            for w in obj
                .get_mut("webhooks")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                set_default(w, "failurePolicy", json!("Fail"));
                set_default(w, "matchPolicy", json!("Equivalent"));
                set_default(w, "namespaceSelector", json!({}));
                set_default(w, "objectSelector", json!({}));
                set_default(w, "timeoutSeconds", json!(10));
                if mutating {
                    set_default(w, "reinvocationPolicy", json!("Never"));
                }
                if let Some(svc) = w
                    .get_mut("clientConfig")
                    .and_then(|c| c.get_mut("service"))
                    .and_then(Value::as_object_mut)
                {
                    set_default(svc, "port", json!(443));
                }
                for r in w
                    .get_mut("rules")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_object_mut)
                {
                    set_default(r, "scope", json!("*"));
                }
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            if let Some(s) = obj_mut(obj, "spec") {
                set_default(s, "conversion", json!({"strategy": "None"}));
                if let Some(names) = s.get_mut("names").and_then(Value::as_object_mut) {
                    let kind = names
                        .get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    set_default(names, "listKind", json!(format!("{kind}List")));
                    set_default(names, "singular", json!(kind.to_lowercase()));
                }
            }
        }
        ("apiregistration.k8s.io", "APIService") => {
            if let Some(svc) = obj
                .pointer_mut("/spec/service")
                .and_then(Value::as_object_mut)
            {
                set_default(svc, "port", json!(443));
            }
        }
        _ => {}
    }
}

/// The DaemonSet strategy's template generation: 1 on create, one more whenever the pod
/// template changes, kept in `deprecated.daemonset.template.generation`.
fn template_generation(obj: &mut Value, old: Option<&Value>) {
    const KEY: &str = "deprecated.daemonset.template.generation";
    let generation = match old {
        None => 1,
        Some(old) => {
            let before = old
                .pointer("/metadata/annotations")
                .and_then(|a| a.get(KEY))
                .and_then(Value::as_str)
                .and_then(|g| g.parse::<i64>().ok())
                .unwrap_or(1);
            if old.pointer("/spec/template") == obj.pointer("/spec/template") {
                before
            } else {
                before + 1
            }
        }
    };
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let meta = root.entry("metadata").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        let a = meta.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = a.as_object_mut() {
            a.insert(KEY.into(), json!(generation.to_string()));
        }
    }
}

/// The Job strategy's generated selector: unless `manualSelector`, the pod template gets the
/// labels `batch.kubernetes.io/controller-uid` and `batch.kubernetes.io/job-name` (and, since
/// 1.27, still their unprefixed forms), the selector matches the uid; a Job without labels
/// gets its template's.
fn job_selector(obj: &mut Value) {
    if obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let template = spec.entry("template").or_insert_with(|| json!({}));
    if let Some(t) = template.as_object_mut() {
        let meta = t.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                for (k, v) in [
                    ("batch.kubernetes.io/controller-uid", &uid),
                    ("batch.kubernetes.io/job-name", &name),
                    ("controller-uid", &uid),
                    ("job-name", &name),
                ] {
                    l.entry(k).or_insert_with(|| json!(v));
                }
            }
        }
    }
    let selector = spec.entry("selector").or_insert_with(|| json!({}));
    if let Some(sel) = selector.as_object_mut() {
        let ml = sel.entry("matchLabels").or_insert_with(|| json!({}));
        if let Some(ml) = ml.as_object_mut() {
            ml.entry("batch.kubernetes.io/controller-uid")
                .or_insert_with(|| json!(uid));
        }
    }
    let labels = obj.pointer("/spec/template/metadata/labels").cloned();
    if let (Some(root), Some(labels)) = (obj.as_object_mut(), labels) {
        let meta = root.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            let empty = meta
                .get("labels")
                .and_then(Value::as_object)
                .is_none_or(Map::is_empty);
            if empty {
                meta.insert("labels".into(), labels);
            }
        }
    }
}

/// What the conversion to the external version writes (so the writer owns it): a
/// DaemonSet's template generation annotation.
pub(crate) fn convert(def: &ResourceDef, obj: &mut Value, old: Option<&Value>) {
    if def.group == "apps"
        && def.kind == "DaemonSet"
        && obj.get("spec").is_some_and(Value::is_object)
    {
        template_generation(obj, old);
    }
}

/// What the registry strategy and the admission plugins change after defaulting (so no
/// manager owns it): the Job selector, the DaemonSet template generation, a pod's service
/// account, tolerations and priority, a new node's not-ready taint.
pub(crate) fn prepare(
    def: &ResourceDef,
    obj: &mut Value,
    old: Option<&Value>,
    external: bool,
    rng: &mut Rng,
) {
    match (def.group.as_str(), def.kind.as_str()) {
        ("batch", "Job") if old.is_none() => job_selector(obj),
        ("", "Namespace") => {
            // The namespace strategy: the `kubernetes` finalizer, phase Active.
            let Some(root) = obj.as_object_mut() else {
                return;
            };
            if old.is_none() {
                let spec = root.entry("spec").or_insert_with(|| json!({}));
                if let Some(s) = spec.as_object_mut() {
                    set_default(s, "finalizers", json!(["kubernetes"]));
                }
            }
            let status = root.entry("status").or_insert_with(|| json!({}));
            if let Some(s) = status.as_object_mut() {
                set_default(s, "phase", json!("Active"));
            }
        }
        ("", "Service") => {
            let old_spec = old.and_then(|o| o.get("spec"));
            if let Some(s) = obj_mut(obj, "spec") {
                allocate(s, old_spec, rng);
            }
        }
        ("", "Pod") if old.is_none() => admit_pod(obj, rng),
        ("", "Node") if external && old.is_none() => {
            // TaintNodesByCondition: a new node is not ready until its kubelet says so.
            if let Some(root) = obj.as_object_mut() {
                let spec = root.entry("spec").or_insert_with(|| json!({}));
                if let Some(s) = spec.as_object_mut()
                    && s.get("taints").is_none_or(Value::is_null)
                {
                    s.insert(
                        "taints".into(),
                        json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]),
                    );
                }
            }
        }
        _ => {}
    }
}

fn job_spec(s: &mut Map<String, Value>) {
    let both_unset = s.get("completions").is_none_or(Value::is_null)
        && s.get("parallelism").is_none_or(Value::is_null);
    if both_unset {
        s.insert("completions".into(), json!(1));
        s.insert("parallelism".into(), json!(1));
    }
    set_default(s, "parallelism", json!(1));
    set_default(s, "backoffLimit", json!(6));
    set_default(s, "completionMode", json!("NonIndexed"));
    set_default(s, "suspend", json!(false));
    if let Some(t) = s.get_mut("template") {
        pod_template(t);
    }
}

/// A Secret's `stringData` is write-only: merged into `data` (base64), never stored.
fn secret(obj: &mut Value) {
    use base64::Engine as _;
    let Some(o) = obj.as_object_mut() else { return };
    let string_data = o.remove("stringData").and_then(|d| d.as_object().cloned());
    if let Some(extra) = string_data {
        let data = o.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        for (k, v) in extra {
            let text = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            data[k.as_str()] = json!(base64::engine::general_purpose::STANDARD.encode(text));
        }
    }
    set_default(o, "type", json!("Opaque"));
}

/// What the Service REST storage allocates (so no manager owns it): cluster IPs, IP
/// families, node ports. Allocated values stay what they were (a PUT may leave them out).
fn allocate(s: &mut Map<String, Value>, old: Option<&Value>, rng: &mut Rng) {
    if let Some(old) = old {
        for k in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if let Some(v) = old.get(k) {
                set_default(s, k, v.clone());
            }
        }
    }
    let kind = s
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if kind != "ExternalName" {
        if s.get("clusterIP").is_none_or(|v| v.is_null() || v == "") {
            let ip = format!(
                "10.96.{}.{}",
                rng.next_u64() % 250,
                1 + rng.next_u64() % 250
            );
            s.insert("clusterIP".into(), json!(ip));
        }
        if let Some(ip) = s.get("clusterIP").cloned() {
            set_default(s, "clusterIPs", json!([ip]));
        }
        set_default(s, "ipFamilies", json!(["IPv4"]));
        set_default(s, "ipFamilyPolicy", json!("SingleStack"));
    }
    if matches!(kind.as_str(), "NodePort" | "LoadBalancer") {
        let old_ports: Vec<Value> = old
            .and_then(|o| o.get("ports"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(ports) = s.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                if p.get("nodePort").is_none_or(|v| v.is_null() || v == 0) {
                    let kept = old_ports
                        .iter()
                        .find(|o| o.get("port") == p.get("port"))
                        .and_then(|o| o.get("nodePort").cloned());
                    let port = kept.unwrap_or_else(|| json!(30000 + rng.next_u64() % 2768));
                    p.insert("nodePort".into(), port);
                }
            }
        }
    }
}

fn service_spec(s: &mut Map<String, Value>) {
    set_default(s, "type", json!("ClusterIP"));
    set_default(s, "sessionAffinity", json!("None"));
    let kind = s
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if kind != "ExternalName" {
        set_default(s, "internalTrafficPolicy", json!("Cluster"));
    }
    if matches!(kind.as_str(), "NodePort" | "LoadBalancer") {
        set_default(s, "externalTrafficPolicy", json!("Cluster"));
    }
    if kind == "LoadBalancer" {
        set_default(s, "allocateLoadBalancerNodePorts", json!(true));
    }
    if let Some(ports) = s.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                set_default(p, "targetPort", port);
            }
        }
    }
    if s.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        set_default(
            s,
            "sessionAffinityConfig",
            json!({"clientIP": {"timeoutSeconds": 10800}}),
        );
    }
}

/// Containers with limits and no requests get the limits as requests (pods only).
fn requests_from_limits(spec: &mut Map<String, Value>) {
    for list in ["containers", "initContainers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(limits) = c.pointer("/resources/limits").and_then(Value::as_object) else {
                continue;
            };
            let limits = limits.clone();
            let Some(res) = c.get_mut("resources").and_then(Value::as_object_mut) else {
                continue;
            };
            let req = res.entry("requests").or_insert_with(|| json!({}));
            if let Some(req) = req.as_object_mut() {
                for (k, v) in limits {
                    req.entry(k).or_insert(v);
                }
            }
        }
    }
}

/// The QoS class of a pod spec (`Guaranteed`, `Burstable`, `BestEffort`).
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .filter_map(|l| spec.get(*l).and_then(Value::as_array))
        .flatten()
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|r| !r.is_empty()) || lim.is_some_and(|l| !l.is_empty()) {
            any = true;
        }
        let full = ["cpu", "memory"].iter().all(|k| {
            let l = lim.and_then(|l| l.get(*k));
            l.is_some() && req.and_then(|r| r.get(*k)).is_none_or(|r| Some(r) == l)
        });
        if !full {
            guaranteed = false;
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The admission plugins a pod passes on create: ServiceAccount (the service account and
/// its token volume), DefaultTolerationSeconds, Priority; and the initial status.
fn admit_pod(pod: &mut Value, rng: &mut Rng) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let sa = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), json!(sa));
    spec.insert("serviceAccount".into(), json!(sa));
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        != Some(false);
    let has_token_mount = spec
        .get("containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("volumeMounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|m| {
                    m.get("mountPath").and_then(Value::as_str)
                        == Some("/var/run/secrets/kubernetes.io/serviceaccount")
                })
        });
    if automount && !has_token_mount {
        let name = format!("kube-api-access-{}", rng.suffix(5));
        let volume = json!({"name": name, "projected": {"sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ], "defaultMode": 420}});
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(v) = volumes.as_array_mut() {
            v.push(volume);
        }
        for list in ["containers", "initContainers"] {
            for c in spec
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
                if let Some(m) = mounts.as_array_mut() {
                    m.push(json!({"name": name, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}));
                }
            }
        }
    }
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    if let Some(t) = tolerations.as_array_mut() {
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let present = t.iter().any(|x| {
                x.get("key").and_then(Value::as_str) == Some(key)
                    && x.get("effect").and_then(Value::as_str) == Some("NoExecute")
            }) || t.iter().any(|x| {
                x.get("operator").and_then(Value::as_str) == Some("Exists")
                    && x.get("key")
                        .is_none_or(|k| k.as_str().unwrap_or_default().is_empty())
            });
            if !present {
                t.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
        }
    }
    set_default(spec, "priority", json!(0));
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    let qos = qos_class(&Value::Object(spec.clone()));
    if let Some(root) = pod.as_object_mut() {
        let status = root.entry("status").or_insert_with(|| json!({}));
        if !status.is_object() {
            *status = json!({});
        }
        if let Some(st) = status.as_object_mut() {
            set_default(st, "phase", json!("Pending"));
            st.insert("qosClass".into(), json!(qos));
        }
    }
}

/// Fields Go's JSON encoding always writes for a kind (its status struct, non-`omitempty`
/// counters) and zero counters it leaves out (`omitempty`), applied to every stored object.
pub(crate) fn encode(def: &ResourceDef, obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let kind = (def.group.as_str(), def.kind.as_str());
    // (always written, left out when zero)
    let (always, omit): (&[&str], &[&str]) = match kind {
        ("apps", "Deployment") => (
            &[],
            &[
                "observedGeneration",
                "replicas",
                "updatedReplicas",
                "readyReplicas",
                "availableReplicas",
                "unavailableReplicas",
                "collisionCount",
            ],
        ),
        ("apps", "ReplicaSet") => (
            &["replicas"],
            &[
                "fullyLabeledReplicas",
                "readyReplicas",
                "availableReplicas",
                "observedGeneration",
            ],
        ),
        ("apps", "StatefulSet") => (
            &["replicas", "availableReplicas"],
            &[
                "observedGeneration",
                "readyReplicas",
                "currentReplicas",
                "updatedReplicas",
            ],
        ),
        ("apps", "DaemonSet") => (
            &[
                "currentNumberScheduled",
                "numberMisscheduled",
                "desiredNumberScheduled",
                "numberReady",
            ],
            &[
                "observedGeneration",
                "updatedNumberScheduled",
                "numberAvailable",
                "numberUnavailable",
            ],
        ),
        ("batch", "Job") => (&[], &["active", "succeeded", "failed"]),
        ("policy", "PodDisruptionBudget") => (
            &[
                "disruptionsAllowed",
                "currentHealthy",
                "desiredHealthy",
                "expectedPods",
            ],
            &["observedGeneration"],
        ),
        ("autoscaling", "HorizontalPodAutoscaler") => (&["desiredReplicas"], &[]),
        _ => {
            encode_other(kind, root);
            return;
        }
    };
    let status = root.entry("status").or_insert_with(|| json!({}));
    if !status.is_object() {
        *status = json!({});
    }
    if let Some(st) = status.as_object_mut() {
        for k in always {
            set_default(st, k, json!(0));
        }
        st.retain(|k, v| !(omit.contains(&k.as_str()) && v.as_i64() == Some(0)));
    }
}

fn encode_other(kind: (&str, &str), root: &mut Map<String, Value>) {
    match kind {
        ("batch", "CronJob") => {
            root.entry("status").or_insert_with(|| json!({}));
        }
        ("", "Pod") => {
            // PodCondition.lastProbeTime is a non-pointer time: null when unset.
            for c in root
                .get_mut("status")
                .and_then(|s| s.get_mut("conditions"))
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
                .filter_map(Value::as_object_mut)
            {
                c.entry("lastProbeTime").or_insert(Value::Null);
            }
        }
        ("", "Service") | ("networking.k8s.io", "Ingress") => {
            let st = root.entry("status").or_insert_with(|| json!({}));
            if let Some(st) = st.as_object_mut() {
                st.entry("loadBalancer").or_insert_with(|| json!({}));
            }
        }
        ("", "PersistentVolumeClaim") | ("", "PersistentVolume") => {
            let st = root.entry("status").or_insert_with(|| json!({}));
            if let Some(st) = st.as_object_mut() {
                set_default(st, "phase", json!("Pending"));
            }
        }
        ("", "Node") => {
            root.entry("spec").or_insert_with(|| json!({}));
            let st = root.entry("status").or_insert_with(|| json!({}));
            if let Some(st) = st.as_object_mut() {
                st.entry("daemonEndpoints")
                    .or_insert_with(|| json!({"kubeletEndpoint": {"Port": 0}}));
                let info = st.entry("nodeInfo").or_insert_with(|| json!({}));
                if let Some(info) = info.as_object_mut() {
                    for k in [
                        "machineID",
                        "systemUUID",
                        "bootID",
                        "kernelVersion",
                        "osImage",
                        "containerRuntimeVersion",
                        "kubeletVersion",
                        "kubeProxyVersion",
                        "operatingSystem",
                        "architecture",
                    ] {
                        info.entry(k).or_insert_with(|| json!(""));
                    }
                }
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            let st = root.entry("status").or_insert_with(|| json!({}));
            if let Some(st) = st.as_object_mut() {
                st.entry("conditions").or_insert(Value::Null);
                let names = st.entry("acceptedNames").or_insert_with(|| json!({}));
                if let Some(n) = names.as_object_mut() {
                    n.entry("plural").or_insert_with(|| json!(""));
                    n.entry("kind").or_insert_with(|| json!(""));
                }
                st.entry("storedVersions").or_insert_with(|| json!([]));
            }
        }
        ("apiregistration.k8s.io", "APIService") => {
            root.entry("status").or_insert_with(|| json!({}));
        }
        ("", "Event") => {
            let mut v = Value::Object(std::mem::take(root));
            crate::events::encode_core(&mut v);
            if let Value::Object(m) = v {
                *root = m;
            }
        }
        _ => {}
    }
}
