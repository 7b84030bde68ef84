//! Semantic validation of a fleet repo: names, references across files, version skew,
//! waves, windows, providers. Every problem is reported, each located in its file.
//!
//! The per-document checks ([`check_fleet`], [`check_cluster`], [`check_component_set`])
//! are also what the agent runs on the one manifest it resolves.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::cluster::{Cluster, DrainBy, DrainTimeoutAction, Provider, UPSTREAM_KUBELET_SKEW};
use crate::component::{Component, ComponentSet};
use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::fleet::{Fleet, WAVE_PLACEHOLDER};
use crate::load::{Document, FleetRepo, tree_diagnostic};
use crate::meta::{ObjectMeta, WAVE_LABEL, is_dns_label};
use crate::selector::{LabelSelector, check_key};
use crate::tree::{EntryKind, MAX_VALUES_BYTES, Tree, TreeError, join, normalize};

/// Validates a loaded repo; `tree` is the same version of the repo, used to check that
/// charts and values files exist. Returns the problems found (empty when valid).
pub fn validate(repo: &FleetRepo, tree: &dyn Tree) -> Diagnostics {
    let mut diags = Diagnostics::default();
    let files = FileChecks::new(tree);
    let fleet = repo.fleet.as_ref().map(|d| &d.value);
    if let Some(doc) = &repo.fleet {
        diags.extend(check_fleet(doc));
    }
    diags.extend(unique_names(
        repo.clusters.iter().map(|d| (d, &d.value.metadata)),
        "cluster",
    ));
    diags.extend(unique_names(
        repo.component_sets.iter().map(|d| (d, &d.value.metadata)),
        "component set",
    ));

    let mut sets: BTreeMap<String, &ComponentSet> = BTreeMap::new();
    for doc in &repo.component_sets {
        sets.entry(doc.value.metadata.name.clone())
            .or_insert(&doc.value);
        diags.extend(check_component_set_with(doc, &files));
    }
    for doc in &repo.clusters {
        diags.extend(check_cluster_with(
            doc,
            fleet,
            &sets,
            &repo.broken_sets,
            &files,
        ));
    }
    diags.sort();
    diags
}

fn unique_names<'a, T: 'a>(
    docs: impl Iterator<Item = (&'a Document<T>, &'a ObjectMeta)>,
    what: &str,
) -> Vec<Diagnostic> {
    let mut first: HashMap<&str, &str> = HashMap::new();
    let mut out = Vec::new();
    for (doc, meta) in docs {
        if let Some(other) = first.get(meta.name.as_str()) {
            out.push(doc.diagnostic(
                "metadata.name",
                format!(
                    "duplicate {what} name `{}`: also declared in {other}",
                    meta.name
                ),
            ));
        } else {
            first.insert(&meta.name, doc.file());
        }
    }
    out
}

/// Checks `fleet.yaml` on its own.
pub fn check_fleet(doc: &Document<Fleet>) -> Vec<Diagnostic> {
    let f = &doc.value;
    let mut out = Vec::new();
    let mut at = |field: &str, msg: String| out.push(doc.diagnostic(field, msg));
    if !is_dns_label(&f.metadata.name) {
        at(
            "metadata.name",
            format!(
                "`{}` is not a valid name (lower-case letters, digits and '-', at most 63)",
                f.metadata.name
            ),
        );
    }
    if f.spec.waves.is_empty() {
        at("spec.waves", "declare at least one wave".into());
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, w) in f.spec.waves.iter().enumerate() {
        let field = format!("spec.waves[{i}].name");
        if let Some(j) = seen.insert(&w.name, i) {
            at(
                &field,
                format!("duplicate wave `{}` (also spec.waves[{j}])", w.name),
            );
        }
        if !is_dns_label(&w.name) {
            at(
                &field,
                format!(
                    "wave name `{}` must be a DNS label (lower-case letters, digits and '-')",
                    w.name
                ),
            );
        }
    }
    let pattern = &f.spec.tag_pattern;
    if pattern.matches(WAVE_PLACEHOLDER).count() != 1 {
        at(
            "spec.tagPattern",
            format!("tag pattern `{pattern}` must contain `{WAVE_PLACEHOLDER}` exactly once"),
        );
    } else if let Err(why) = check_ref_name(&pattern.replace(WAVE_PLACEHOLDER, "x")) {
        at(
            "spec.tagPattern",
            format!("tag pattern `{pattern}` does not make a valid git tag: {why}"),
        );
    }
    for (i, d) in f.spec.defaults.iter().enumerate() {
        if d.max_unavailable == Some(0) {
            at(
                &format!("spec.defaults[{i}].maxUnavailable"),
                "must be at least 1".into(),
            );
        }
        if let Some(w) = &d.maintenance_window
            && let Err(e) = w.check()
        {
            at(
                &format!("spec.defaults[{i}].maintenanceWindow"),
                e.to_string(),
            );
        }
    }
    let mut freeze_names: HashMap<&str, usize> = HashMap::new();
    for (i, f) in f.spec.freezes.iter().enumerate() {
        if let Some(j) = freeze_names.insert(&f.name, i) {
            at(
                &format!("spec.freezes[{i}].name"),
                format!("duplicate freeze `{}` (also spec.freezes[{j}])", f.name),
            );
        }
        if let Err(e) = f.check() {
            at(&format!("spec.freezes[{i}]"), e.to_string());
        }
    }
    out
}

/// The rules of `git check-ref-format` that a tag name can break.
fn check_ref_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Err("empty path component");
    }
    if name.contains("..") || name.contains("@{") || name.ends_with(".lock") || name.ends_with('.')
    {
        return Err("contains `..`, `@{`, or ends with `.lock` or `.`");
    }
    if name
        .bytes()
        .any(|b| b < 0x20 || b == 0x7f || b" ~^:?*[\\".contains(&b))
    {
        return Err("contains a space, control character or one of ~^:?*[\\");
    }
    if name.split('/').any(|part| part.starts_with('.')) {
        return Err("a component starts with `.`");
    }
    Ok(())
}

/// Checks one cluster manifest against the fleet and the component sets it may name.
/// `broken_sets` names sets whose files failed to parse: references to them are not
/// reported again.
pub fn check_cluster(
    doc: &Document<Cluster>,
    fleet: Option<&Fleet>,
    sets: &BTreeMap<String, &ComponentSet>,
    broken_sets: &BTreeSet<String>,
    tree: &dyn Tree,
) -> Vec<Diagnostic> {
    check_cluster_with(doc, fleet, sets, broken_sets, &FileChecks::new(tree))
}

fn check_cluster_with(
    doc: &Document<Cluster>,
    fleet: Option<&Fleet>,
    sets: &BTreeMap<String, &ComponentSet>,
    broken_sets: &BTreeSet<String>,
    files: &FileChecks<'_>,
) -> Vec<Diagnostic> {
    let c = &doc.value;
    let spec = &c.spec;
    let mut out = Vec::new();
    let mut at = |field: &str, msg: String| out.push(doc.diagnostic(field, msg));

    if !is_dns_label(&c.metadata.name) {
        at(
            "metadata.name",
            format!(
                "`{}` is not a valid cluster name (lower-case letters, digits and '-', at most 63)",
                c.metadata.name
            ),
        );
    }
    for (k, v) in &c.metadata.labels {
        let field = format!("metadata.labels.{k}");
        if let Err(e) = check_key(k).and_then(|()| {
            let sel = LabelSelector {
                match_labels: [(k.clone(), v.clone())].into(),
                ..Default::default()
            };
            sel.check()
        }) {
            at(&field, e.to_string());
        }
    }
    if let (Some(wave), Some(fleet)) = (c.wave(), fleet)
        && fleet.wave(wave).is_none()
    {
        let known: Vec<&str> = fleet.spec.waves.iter().map(|w| w.name.as_str()).collect();
        at(
            &format!("metadata.labels.{WAVE_LABEL}"),
            format!(
                "wave `{wave}` is not declared in fleet.yaml (waves: {})",
                known.join(", ")
            ),
        );
    }

    // Provider.
    let max_skew = spec.provider.max_kubelet_skew();
    match &spec.provider {
        Provider::ClusterApi(p) => {
            if !is_dns_label(&p.namespace) {
                at(
                    "spec.provider.namespace",
                    format!("`{}` is not a valid namespace", p.namespace),
                );
            }
            for group in p.machine_deployments.keys() {
                if !spec.node_groups.iter().any(|g| &g.name == group) {
                    at(
                        &format!("spec.provider.machineDeployments.{group}"),
                        format!("no node group named `{group}` in spec.nodeGroups"),
                    );
                }
            }
            if p.kubeconfig_secret.is_some() && p.kubeconfig_file.is_some() {
                at(
                    "spec.provider.kubeconfigFile",
                    "give the management cluster's kubeconfig either as kubeconfigSecret or as kubeconfigFile, not both".into(),
                );
            }
            if p.topology {
                for (i, g) in spec.node_groups.iter().enumerate() {
                    if g.version != spec.control_plane.version {
                        at(
                            &format!("spec.nodeGroups[{i}].version"),
                            format!(
                                "node group `{}` cannot have a version of its own on a ClusterClass (topology) cluster: the topology controller moves every MachineDeployment to the control plane's version ({}); declare {} or drop topology",
                                g.name, spec.control_plane.version, spec.control_plane.version
                            ),
                        );
                    }
                }
            }
            for (i, g) in spec.node_groups.iter().enumerate() {
                if g.delete_empty_dir_data {
                    at(
                        &format!("spec.nodeGroups[{i}].deleteEmptyDirData"),
                        "only tidemark's own drain reads it (`drain: tidemark`, exec groups); Cluster API drains its machines itself".into(),
                    );
                }
                if g.drain == Some(DrainBy::Tidemark) {
                    at(
                        &format!("spec.nodeGroups[{i}].drain"),
                        "Cluster API drains its machines itself; `drain: tidemark` is for exec node groups (with spec.provider.replaceNode)".into(),
                    );
                }
            }
        }
        Provider::Exec(p) => {
            for (i, g) in spec.node_groups.iter().enumerate() {
                if g.drain == Some(DrainBy::Tidemark) && p.replace_node.is_none() {
                    at(
                        &format!("spec.nodeGroups[{i}].drain"),
                        "`drain: tidemark` needs spec.provider.replaceNode, the command that replaces one drained node".into(),
                    );
                }
                if g.delete_empty_dir_data && g.drain != Some(DrainBy::Tidemark) {
                    at(
                        &format!("spec.nodeGroups[{i}].deleteEmptyDirData"),
                        "only tidemark's own drain reads it (`drain: tidemark`); the provider's drain has its own rules".into(),
                    );
                }
                if g.drain_timeout_action == Some(DrainTimeoutAction::Force) {
                    at(
                        &format!("spec.nodeGroups[{i}].drainTimeoutAction"),
                        "only Cluster API can force a drain (nodeDrainTimeout); an exec group's drain stops and reports".into(),
                    );
                }
            }
            for (field, argv) in [
                ("upgradeControlPlane", Some(&p.upgrade_control_plane)),
                ("upgradeNodeGroup", Some(&p.upgrade_node_group)),
                ("status", p.status.as_ref()),
                ("replaceNode", p.replace_node.as_ref()),
            ] {
                if let Some(argv) = argv
                    && argv.first().is_none_or(|a| a.trim().is_empty())
                {
                    at(
                        &format!("spec.provider.{field}"),
                        "must be a non-empty command (a list: program, then arguments)".into(),
                    );
                }
            }
            for k in p.env.keys() {
                let ok = k
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
                    && k.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
                if !ok || k.starts_with("TIDEMARK_") {
                    at(
                        &format!("spec.provider.env.{k}"),
                        format!(
                            "`{k}` must be an upper-case variable name not starting with TIDEMARK_"
                        ),
                    );
                }
            }
            if p.timeout.is_some_and(|t| t.as_std().is_zero()) {
                at("spec.provider.timeout", "must be more than 0s".into());
            }
        }
    }
    if max_skew > UPSTREAM_KUBELET_SKEW {
        at(
            "spec.provider.maxKubeletSkew",
            format!("must be at most {UPSTREAM_KUBELET_SKEW} (the Kubernetes skew policy)"),
        );
    }

    // Node groups: names, never above the control plane, within skew.
    let cp = spec.control_plane.version;
    let mut groups: HashMap<&str, usize> = HashMap::new();
    for (i, g) in spec.node_groups.iter().enumerate() {
        let base = format!("spec.nodeGroups[{i}]");
        if let Some(j) = groups.insert(&g.name, i) {
            at(
                &format!("{base}.name"),
                format!(
                    "duplicate node group `{}` (also spec.nodeGroups[{j}])",
                    g.name
                ),
            );
        }
        if !is_dns_label(&g.name) {
            at(
                &format!("{base}.name"),
                format!("`{}` is not a valid node group name", g.name),
            );
        }
        if g.version.is_newer_than(cp) {
            at(
                &format!("{base}.version"),
                format!(
                    "node group `{}` is declared at {}, above the control plane ({cp}): a kubelet must never be newer than the API server",
                    g.name, g.version
                ),
            );
        } else if cp.minor_gap(g.version) > i64::from(max_skew) {
            at(
                &format!("{base}.version"),
                format!(
                    "node group `{}` ({}) is {} behind the control plane ({cp}); {}",
                    g.name,
                    g.version,
                    minors(cp.minor_gap(g.version)),
                    skew_rule(&spec.provider),
                ),
            );
        }
        if g.max_unavailable == Some(0) {
            at(
                &format!("{base}.maxUnavailable"),
                "must be at least 1".into(),
            );
        }
        if g.drain_timeout.is_some_and(|d| d.as_std().is_zero()) {
            at(
                &format!("{base}.drainTimeout"),
                "must be more than 0s".into(),
            );
        }
    }

    if let Some(w) = &spec.maintenance_window
        && let Err(e) = w.check()
    {
        at("spec.maintenanceWindow", e.to_string());
    }

    // Components: sets resolve, names unique, per-component values name a set component.
    let mut from_sets: HashMap<&str, &str> = HashMap::new();
    for (i, name) in spec.component_sets.iter().enumerate() {
        let field = format!("spec.componentSets[{i}]");
        if broken_sets.contains(name) {
            continue; // the set's own file problems are reported
        }
        let Some(set) = sets.get(name) else {
            let mut known: Vec<&str> = sets.keys().map(String::as_str).collect();
            known.truncate(20);
            at(
                &field,
                format!(
                    "component set `{name}` not found under components/ (known: {})",
                    known.join(", ")
                ),
            );
            continue;
        };
        if spec.component_sets[..i].contains(name) {
            at(&field, format!("component set `{name}` is listed twice"));
        }
        for comp in &set.spec.components {
            if let Some(other) = from_sets.insert(&comp.name, name)
                && other != name
                && !spec.components.iter().any(|c| c.name == comp.name)
            {
                at(
                    &field,
                    format!(
                        "component `{}` comes from both component sets `{other}` and `{name}`; declare it in spec.components to choose",
                        comp.name
                    ),
                );
            }
        }
    }
    // With a set whose file is broken, what it declares is unknown: say nothing more.
    let sets_known = !spec.component_sets.iter().any(|n| broken_sets.contains(n));
    for name in spec.component_values.keys() {
        if sets_known && !from_sets.contains_key(name.as_str()) {
            at(
                &format!("spec.componentValues.{name}"),
                format!("no component `{name}` in this cluster's component sets"),
            );
        }
    }
    for (path, message) in spec.component_values.iter().flat_map(|(name, v)| {
        v.values_files.iter().enumerate().filter_map(move |(i, f)| {
            files
                .values_file(f)
                .err()
                .map(|m| (format!("spec.componentValues.{name}.valuesFiles[{i}]"), m))
        })
    }) {
        at(&path, message);
    }
    out.extend(check_components(
        doc,
        "spec.components",
        &spec.components,
        files,
    ));
    out
}

fn minors(n: i64) -> String {
    if n == 1 {
        "1 minor".into()
    } else {
        format!("{n} minors")
    }
}

/// Where the allowed kubelet lag comes from, for messages.
fn skew_rule(provider: &Provider) -> String {
    let (explicit, kind) = match provider {
        Provider::ClusterApi(p) => (p.max_kubelet_skew, provider.kind()),
        Provider::Exec(p) => (p.max_kubelet_skew, provider.kind()),
    };
    match explicit {
        Some(n) => format!(
            "spec.provider.maxKubeletSkew allows at most {}",
            minors(i64::from(n))
        ),
        None => format!(
            "the {kind} provider allows at most {UPSTREAM_KUBELET_SKEW} minors (Kubernetes skew policy)"
        ),
    }
}

/// Checks one component set.
pub fn check_component_set(doc: &Document<ComponentSet>, tree: &dyn Tree) -> Vec<Diagnostic> {
    check_component_set_with(doc, &FileChecks::new(tree))
}

fn check_component_set_with(
    doc: &Document<ComponentSet>,
    files: &FileChecks<'_>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if !is_dns_label(&doc.value.metadata.name) {
        out.push(doc.diagnostic(
            "metadata.name",
            format!(
                "`{}` is not a valid component set name",
                doc.value.metadata.name
            ),
        ));
    }
    out.extend(check_components(
        doc,
        "spec.components",
        &doc.value.spec.components,
        files,
    ));
    out
}

fn check_components<T>(
    doc: &Document<T>,
    base: &str,
    components: &[Component],
    files: &FileChecks<'_>,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut at = |field: String, msg: String| out.push(doc.diagnostic(&field, msg));
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, c) in components.iter().enumerate() {
        let f = |rest: &str| format!("{base}[{i}].{rest}");
        if let Some(j) = seen.insert(&c.name, i) {
            at(
                f("name"),
                format!("duplicate component `{}` (also {base}[{j}])", c.name),
            );
        }
        if !is_dns_label(&c.name) {
            at(
                f("name"),
                format!("`{}` is not a valid component name", c.name),
            );
        }
        if !is_dns_label(&c.namespace) {
            at(
                f("namespace"),
                format!("`{}` is not a valid namespace", c.namespace),
            );
        }
        if let Some(r) = &c.release
            && (!is_dns_label(r) || r.len() > 53)
        {
            at(
                f("release"),
                format!(
                    "`{r}` is not a valid helm release name (DNS label, at most 53 characters)"
                ),
            );
        }
        if c.timeout.is_some_and(|t| t.as_std().is_zero()) {
            at(f("timeout"), "must be more than 0s".into());
        }
        if let Some((field, msg)) = c.chart.check() {
            at(f(&format!("chart.{field}")), msg.into());
        } else if let Some(path) = &c.chart.path
            && let Err(msg) = files.chart_dir(path, c.chart.version.as_deref())
        {
            at(f("chart.path"), msg);
        } else if let Some(repo) = &c.chart.repository
            && let Err(msg) = check_chart_repository(repo)
        {
            at(f("chart.repository"), msg);
        }
        for (k, file) in c.values_files.iter().enumerate() {
            if let Err(msg) = files.values_file(file) {
                at(f(&format!("valuesFiles[{k}]")), msg);
            }
        }
    }
    out
}

fn check_chart_repository(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "`{url}` is not a URL (expected https://, http:// or oci://)"
        ));
    };
    if !matches!(scheme, "https" | "http" | "oci") {
        return Err(format!(
            "unsupported scheme `{scheme}` (expected https, http or oci)"
        ));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(
            "credentials must not be written in the fleet repo: remove the user:password@ part"
                .into(),
        );
    }
    if authority.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    Ok(())
}

/// Checks of referenced files, each path checked once however many documents name it.
struct FileChecks<'a> {
    tree: &'a dyn Tree,
    charts: RefCell<HashMap<String, Result<Option<String>, String>>>,
    values: RefCell<HashMap<String, Result<(), String>>>,
}

impl<'a> FileChecks<'a> {
    fn new(tree: &'a dyn Tree) -> Self {
        Self {
            tree,
            charts: RefCell::default(),
            values: RefCell::default(),
        }
    }

    /// The chart directory exists and holds a `Chart.yaml` (whose version must equal the
    /// declared one, if any).
    fn chart_dir(&self, path: &str, declared: Option<&str>) -> Result<(), String> {
        let cached = self.charts.borrow().get(path).cloned();
        let found = match cached {
            Some(r) => r,
            None => {
                let r = self.read_chart_version(path);
                self.charts.borrow_mut().insert(path.to_string(), r.clone());
                r
            }
        }?;
        match (declared, found) {
            (Some(want), Some(have)) if want != have => Err(format!(
                "chart version {want} is declared but {path}/Chart.yaml has version {have}"
            )),
            _ => Ok(()),
        }
    }

    fn read_chart_version(&self, path: &str) -> Result<Option<String>, String> {
        let dir = normalize(path).map_err(|e| reason(&e))?;
        match self.tree.kind(&dir) {
            Ok(Some(EntryKind::Dir)) => {}
            Ok(Some(EntryKind::File)) => {
                return Err(format!(
                    "chart path `{path}` is a file, not a chart directory"
                ));
            }
            Ok(None) => {
                return Err(format!(
                    "chart directory `{path}` not found in the repository"
                ));
            }
            Err(e) => return Err(reason(&e)),
        }
        let chart_yaml = join(&dir, "Chart.yaml");
        let bytes = self
            .tree
            .read(&chart_yaml, MAX_VALUES_BYTES)
            .map_err(|e| match e {
                TreeError::NotFound(_) => {
                    format!("`{path}` is not a helm chart: {chart_yaml} not found")
                }
                e => reason(&e),
            })?;
        let chart: serde_yaml::Value = serde_yaml::from_slice(&bytes)
            .map_err(|e| format!("{chart_yaml} is not valid YAML: {e}"))?;
        Ok(chart.get("version").and_then(|v| match v {
            serde_yaml::Value::String(s) => Some(s.clone()),
            serde_yaml::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }))
    }

    /// The values file exists, is small enough and holds a YAML mapping.
    fn values_file(&self, path: &str) -> Result<(), String> {
        if let Some(r) = self.values.borrow().get(path) {
            return r.clone();
        }
        let r = (|| {
            let file = normalize(path).map_err(|e| reason(&e))?;
            let bytes = self
                .tree
                .read(&file, MAX_VALUES_BYTES)
                .map_err(|e| match e {
                    TreeError::NotFound(_) => {
                        format!("values file `{path}` not found in the repository")
                    }
                    e => reason(&e),
                })?;
            let text = String::from_utf8(bytes)
                .map_err(|_| format!("values file `{path}` is not UTF-8"))?;
            match serde_yaml::from_str::<serde_yaml::Value>(&text) {
                Ok(serde_yaml::Value::Mapping(_) | serde_yaml::Value::Null) => Ok(()),
                Ok(_) => Err(format!("values file `{path}` must hold a YAML mapping")),
                Err(e) => Err(format!("values file `{path}` is not valid YAML: {e}")),
            }
        })();
        self.values.borrow_mut().insert(path.to_string(), r.clone());
        r
    }
}

fn reason(e: &TreeError) -> String {
    let d = tree_diagnostic("", e.clone());
    match e {
        TreeError::NotFound(p) | TreeError::BadPath(p) => format!("`{p}`: {}", d.message),
        TreeError::TooLarge { path, .. }
        | TreeError::OutsideRepo { path, .. }
        | TreeError::Io { path, .. } => {
            format!("`{path}`: {}", d.message)
        }
    }
}
