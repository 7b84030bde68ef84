//! `load` + `validate` on `fleet-repo-example/` and on copies of it broken in one specific
//! way per test, asserting the exact diagnostics (`file:line:col: field: message`) a person
//! would read from `tidemark validate`. Also checks the manifests against the generated
//! JSON Schema with `check-jsonschema` from the repo's `.venv` (`scripts/setup-python.sh`).

// NB: test code: a panic is a failed test, which is what unwrap/expect should give here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use tidemark_schema::{FsTree, json_schema::fleet_repo_schema, load, validate};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("schema/ has a parent")
        .to_path_buf()
}

fn example_dir() -> PathBuf {
    workspace_root().join("fleet-repo-example")
}

/// A private copy of `fleet-repo-example/` to break.
struct Repo {
    dir: tempfile::TempDir,
}

impl Repo {
    fn example() -> Self {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&example_dir(), dir.path());
        Self { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap()
    }

    fn write(&self, rel: &str, contents: impl AsRef<[u8]>) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    /// Replaces the one occurrence of `from` in file `rel` by `to`.
    fn edit(&self, rel: &str, from: &str, to: &str) {
        let text = self.read(rel);
        assert_eq!(
            text.matches(from).count(),
            1,
            "test setup: `{from}` must occur exactly once in {rel}"
        );
        self.write(rel, text.replacen(from, to, 1));
    }

    fn remove(&self, rel: &str) {
        std::fs::remove_file(self.path(rel)).unwrap();
    }

    fn symlink(&self, target: &Path, rel: &str) {
        let link = self.path(rel);
        if link.exists() {
            std::fs::remove_file(&link).unwrap();
        }
        std::os::unix::fs::symlink(target, link).unwrap();
    }

    /// What `tidemark validate` reports: load and validation diagnostics, sorted.
    fn diagnostics(&self) -> Vec<String> {
        diagnostics_of(self.root())
    }
}

fn diagnostics_of(root: &Path) -> Vec<String> {
    let tree = FsTree::new(root).unwrap();
    let (repo, mut diags) = load(&tree);
    diags.extend(validate(&repo, &tree).0);
    diags.sort();
    diags.iter().map(ToString::to_string).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[track_caller]
fn assert_diagnostics(actual: Vec<String>, expected: &[&str]) {
    assert_eq!(
        actual,
        expected,
        "\nactual diagnostics:\n{}\n",
        actual.join("\n")
    );
}

#[test]
fn example_is_valid() {
    let tree = FsTree::new(example_dir()).unwrap();
    let (repo, diags) = load(&tree);
    assert_diagnostics(diags.iter().map(ToString::to_string).collect(), &[]);
    assert_diagnostics(
        validate(&repo, &tree)
            .iter()
            .map(ToString::to_string)
            .collect(),
        &[],
    );
    let clusters: Vec<&str> = repo
        .clusters
        .iter()
        .map(|d| d.value.metadata.name.as_str())
        .collect();
    assert_eq!(
        clusters,
        [
            "dev-eu-1",
            "edge-ap-1",
            "prod-eu-1",
            "prod-eu-2",
            "prod-us-1",
            "staging-eu-1",
            "staging-us-1"
        ]
    );
    assert_eq!(repo.component_sets.len(), 2);
    assert!(repo.fleet.is_some());
    // The copy the other tests break starts out valid too.
    assert_diagnostics(Repo::example().diagnostics(), &[]);
}

#[test]
fn malformed_yaml() {
    let repo = Repo::example();
    repo.edit(
        "clusters/prod-eu-2.yaml",
        "      version: \"1.28.9\"\n      followControlPlane: true",
        "      version: \"1.28.9\n      followControlPlane: true",
    );
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "clusters/prod-eu-2.yaml:25:17: invalid YAML: did not find expected key, while parsing a block mapping at line 19 column 7",
        ],
    );
}

#[test]
fn unknown_field() {
    let repo = Repo::example();
    repo.edit(
        "clusters/prod-eu-1.yaml",
        "      drainTimeout: 30m",
        "      drainTimeot: 30m",
    );
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "clusters/prod-eu-1.yaml:28:7: spec.nodeGroups[1].drainTimeot: unknown field `drainTimeot`, expected one of `name`, `version`, `maxUnavailable`, `drainTimeout`, `followControlPlane`, `maxSurge`, `drainTimeoutAction`, `drain`, `deleteEmptyDirData`",
        ],
    );
}

#[test]
fn unknown_field_in_provider() {
    let repo = Repo::example();
    repo.edit(
        "clusters/prod-eu-2.yaml",
        "    namespace: prod-eu-2",
        "    namespace: prod-eu-2\n    controlPlaneName: prod-eu-2",
    );
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "clusters/prod-eu-2.yaml:15:5: spec.provider.controlPlaneName: unknown field `controlPlaneName`, expected one of `namespace`, `controlPlane`, `machineDeployments`, `clusterName`, `kubeconfigSecret`, `kubeconfigFile`, `topology`, `nodeGroupLabel`, `maxKubeletSkew`",
        ],
    );
}

#[test]
fn wrong_kind() {
    let repo = Repo::example();
    repo.edit(
        "clusters/prod-eu-2.yaml",
        "kind: Cluster",
        "kind: ComponentSet",
    );
    repo.edit("fleet.yaml", "kind: Fleet", "kind: fleet");
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "clusters/prod-eu-2.yaml:2:7: kind: wrong kind `ComponentSet`: files under clusters/ must be kind Cluster",
            "fleet.yaml:2:7: kind: wrong kind `fleet`: fleet.yaml must be kind Fleet",
        ],
    );
}

/// A component set that does not load is reported once, at its file; the clusters that
/// use it are not blamed with follow-on "not found" errors.
#[test]
fn component_set_that_does_not_load_is_reported_once() {
    let repo = Repo::example();
    repo.edit(
        "components/observability.yaml",
        "kind: ComponentSet",
        "kind: Cluster",
    );
    assert_diagnostics(
        repo.diagnostics(),
        &[
            // Clusters naming the set are not blamed again: the set's file is the problem.
            "components/observability.yaml:2:7: kind: wrong kind `Cluster`: files under components/ must be kind ComponentSet",
        ],
    );
}

#[test]
fn bad_version_string() {
    let repo = Repo::example();
    repo.edit(
        "clusters/prod-us-1.yaml",
        "controlPlane:\n    version: \"1.28.9\"",
        "controlPlane:\n    version: \"1.3x\"",
    );
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "clusters/prod-us-1.yaml:24:14: spec.controlPlane.version: `1.3x` is not a Kubernetes version (expected MAJOR.MINOR or MAJOR.MINOR.PATCH, e.g. 1.30.4)",
        ],
    );
}

#[test]
fn unquoted_float_version() {
    let repo = Repo::example();
    repo.edit(
        "clusters/prod-us-1.yaml",
        "controlPlane:\n    version: \"1.28.9\"",
        "controlPlane:\n    version: 1.30",
    );
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "clusters/prod-us-1.yaml:24:14: spec.controlPlane.version: version must be quoted: YAML reads it as the number 1.3 (an unquoted 1.30 becomes 1.3); write a string, e.g. \"1.30\"",
        ],
    );
}

#[test]
fn node_group_above_control_plane() {
    let repo = Repo::example();
    repo.edit(
        "clusters/prod-eu-2.yaml",
        "    - name: storage\n      version: \"1.28.9\"",
        "    - name: storage\n      version: \"1.28.10\"",
    );
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "clusters/prod-eu-2.yaml:25:16: spec.nodeGroups[1].version: node group `storage` is declared at 1.28.10, above the control plane (1.28.9): a kubelet must never be newer than the API server",
        ],
    );
}

#[test]
fn node_group_beyond_skew() {
    let repo = Repo::example();
    // Upstream skew (3 minors) on a clusterapi cluster.
    repo.edit(
        "clusters/prod-eu-1.yaml",
        "version: \"1.27.13\"",
        "version: \"1.24.17\"",
    );
    // An EKS-like exec cluster allows no lag at all (maxKubeletSkew: 0).
    repo.edit(
        "clusters/staging-us-1.yaml",
        "    - name: system\n      version: \"1.29.4\"",
        "    - name: system\n      version: \"1.28.11\"",
    );
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "clusters/prod-eu-1.yaml:27:16: spec.nodeGroups[1].version: node group `gpu` (1.24.17) is 4 minors behind the control plane (1.28.9); the clusterapi provider allows at most 3 minors (Kubernetes skew policy)",
            "clusters/staging-us-1.yaml:32:16: spec.nodeGroups[1].version: node group `system` (1.28.11) is 1 minor behind the control plane (1.29.4); spec.provider.maxKubeletSkew allows at most 0 minors",
        ],
    );
}

#[test]
fn duplicate_cluster_names() {
    let repo = Repo::example();
    // Copied to make a new cluster, but the name was not changed.
    repo.write(
        "clusters/prod-eu-3.yaml",
        repo.read("clusters/prod-eu-2.yaml"),
    );
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "clusters/prod-eu-3.yaml:4:9: metadata.name: duplicate cluster name `prod-eu-2`: also declared in clusters/prod-eu-2.yaml",
        ],
    );
}

#[test]
fn wave_label_names_unknown_wave() {
    let repo = Repo::example();
    repo.edit(
        "clusters/edge-ap-1.yaml",
        "tidemark.dev/wave: main",
        "tidemark.dev/wave: mian",
    );
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "clusters/edge-ap-1.yaml:9:24: metadata.labels.tidemark.dev/wave: wave `mian` is not declared in fleet.yaml (waves: canary, early, main)",
        ],
    );
}

#[test]
fn missing_component_set() {
    let repo = Repo::example();
    repo.edit(
        "clusters/dev-eu-1.yaml",
        "    - observability",
        "    - observabilty",
    );
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "clusters/dev-eu-1.yaml:28:7: spec.componentSets[1]: component set `observabilty` not found under components/ (known: base-addons, observability)",
        ],
    );
}

#[test]
fn missing_chart_path() {
    let repo = Repo::example();
    repo.edit(
        "components/observability.yaml",
        "        path: charts/metrics-lite",
        "        path: charts/metrics-light",
    );
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "components/observability.yaml:12:15: spec.components[0].chart.path: chart directory `charts/metrics-light` not found in the repository",
        ],
    );
}

#[test]
fn chart_path_without_chart_yaml() {
    let repo = Repo::example();
    repo.remove("charts/node-agent/Chart.yaml");
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "clusters/prod-eu-1.yaml:46:15: spec.components[0].chart.path: `charts/node-agent` is not a helm chart: charts/node-agent/Chart.yaml not found",
            "components/base-addons.yaml:13:15: spec.components[0].chart.path: `charts/node-agent` is not a helm chart: charts/node-agent/Chart.yaml not found",
            "components/observability.yaml:23:15: spec.components[1].chart.path: `charts/node-agent` is not a helm chart: charts/node-agent/Chart.yaml not found",
        ],
    );
}

#[test]
fn missing_values_file() {
    let repo = Repo::example();
    repo.remove("values/metrics-lite/prod.yaml");
    repo.remove("values/log-shipper/common.yaml");
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "clusters/prod-eu-1.yaml:35:11: spec.componentValues.metrics-lite.valuesFiles[0]: values file `values/metrics-lite/prod.yaml` not found in the repository",
            "clusters/prod-eu-2.yaml:34:11: spec.componentValues.metrics-lite.valuesFiles[0]: values file `values/metrics-lite/prod.yaml` not found in the repository",
            "clusters/prod-us-1.yaml:44:11: spec.componentValues.metrics-lite.valuesFiles[0]: values file `values/metrics-lite/prod.yaml` not found in the repository",
            "components/observability.yaml:26:11: spec.components[1].valuesFiles[0]: values file `values/log-shipper/common.yaml` not found in the repository",
        ],
    );
}

#[test]
fn huge_file_in_clusters() {
    let repo = Repo::example();
    let mut text = repo
        .read("clusters/prod-eu-2.yaml")
        .replace("prod-eu-2", "prod-eu-9");
    let filler = format!("# {}\n", "x".repeat(1021));
    while text.len() < 20 * 1024 * 1024 {
        text.push_str(&filler);
    }
    text.truncate(20 * 1024 * 1024);
    repo.write("clusters/prod-eu-9.yaml", text);
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "clusters/prod-eu-9.yaml: file is 20971520 bytes, larger than the limit of 1048576 bytes for this kind of file",
        ],
    );
}

#[test]
fn file_not_utf8() {
    let repo = Repo::example();
    // "# owner: Jürgen" in Latin-1.
    let mut bytes = b"# owner: J\xfcrgen\n".to_vec();
    bytes.extend(repo.read("clusters/prod-eu-2.yaml").into_bytes());
    repo.write("clusters/prod-eu-2.yaml", bytes);
    repo.write(
        "values/node-agent/prod.yaml",
        b"# J\xfcrgen\nmode: metrics\n",
    );
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "clusters/edge-ap-1.yaml:47:11: spec.componentValues.node-agent.valuesFiles[0]: values file `values/node-agent/prod.yaml` is not UTF-8",
            "clusters/prod-eu-1.yaml:38:11: spec.componentValues.node-agent.valuesFiles[0]: values file `values/node-agent/prod.yaml` is not UTF-8",
            "clusters/prod-eu-1.yaml:50:11: spec.components[0].valuesFiles[1]: values file `values/node-agent/prod.yaml` is not UTF-8",
            "clusters/prod-eu-2.yaml: file is not UTF-8 (invalid byte at offset 10)",
            "clusters/prod-us-1.yaml:51:11: spec.componentValues.node-agent.valuesFiles[0]: values file `values/node-agent/prod.yaml` is not UTF-8",
        ],
    );
}

/// Replaces the path of `outside` in the diagnostics, which differs per run.
fn redact(diags: Vec<String>, outside: &Path) -> Vec<String> {
    let shown = outside.display().to_string();
    diags
        .into_iter()
        .map(|d| d.replace(&shown, "$OUTSIDE"))
        .collect()
}

#[test]
fn symlink_outside_repo_as_values_file() {
    let repo = Repo::example();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.yaml"), "token: hunter2\n").unwrap();
    repo.symlink(
        &outside.path().join("secret.yaml"),
        "values/node-agent/prod.yaml",
    );
    assert_diagnostics(
        redact(repo.diagnostics(), outside.path()),
        &[
            "clusters/edge-ap-1.yaml:47:11: spec.componentValues.node-agent.valuesFiles[0]: `values/node-agent/prod.yaml`: symlink points outside the repository (to $OUTSIDE/secret.yaml)",
            "clusters/prod-eu-1.yaml:38:11: spec.componentValues.node-agent.valuesFiles[0]: `values/node-agent/prod.yaml`: symlink points outside the repository (to $OUTSIDE/secret.yaml)",
            "clusters/prod-eu-1.yaml:50:11: spec.components[0].valuesFiles[1]: `values/node-agent/prod.yaml`: symlink points outside the repository (to $OUTSIDE/secret.yaml)",
            "clusters/prod-eu-2.yaml:37:11: spec.componentValues.node-agent.valuesFiles[0]: `values/node-agent/prod.yaml`: symlink points outside the repository (to $OUTSIDE/secret.yaml)",
            "clusters/prod-us-1.yaml:51:11: spec.componentValues.node-agent.valuesFiles[0]: `values/node-agent/prod.yaml`: symlink points outside the repository (to $OUTSIDE/secret.yaml)",
        ],
    );
}

#[test]
fn symlink_outside_repo_as_cluster_manifest() {
    let repo = Repo::example();
    let outside = tempfile::tempdir().unwrap();
    let manifest = repo
        .read("clusters/prod-eu-2.yaml")
        .replace("prod-eu-2", "prod-eu-9");
    std::fs::write(outside.path().join("prod-eu-9.yaml"), manifest).unwrap();
    repo.symlink(
        &outside.path().join("prod-eu-9.yaml"),
        "clusters/prod-eu-9.yaml",
    );
    assert_diagnostics(
        redact(repo.diagnostics(), outside.path()),
        &[
            "clusters/prod-eu-9.yaml: symlink points outside the repository (to $OUTSIDE/prod-eu-9.yaml)",
        ],
    );
}

#[test]
fn many_problems_reported_in_one_run_sorted() {
    let repo = Repo::example();
    repo.edit(
        "clusters/edge-ap-1.yaml",
        "tidemark.dev/wave: main",
        "tidemark.dev/wave: mian",
    );
    repo.edit(
        "clusters/prod-us-1.yaml",
        "controlPlane:\n    version: \"1.28.9\"",
        "controlPlane:\n    version: \"1.3x\"",
    );
    repo.edit(
        "clusters/dev-eu-1.yaml",
        "      version: \"1.28.11\"",
        "      version: \"1.29.7\"",
    );
    repo.edit(
        "fleet.yaml",
        "tagPattern: \"wave/{wave}\"",
        "tagPattern: waves",
    );
    repo.remove("values/metrics-lite/staging.yaml");
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "clusters/dev-eu-1.yaml:24:16: spec.nodeGroups[1].version: node group `batch` is declared at 1.29.7, above the control plane (1.29.6): a kubelet must never be newer than the API server",
            "clusters/edge-ap-1.yaml:9:24: metadata.labels.tidemark.dev/wave: wave `mian` is not declared in fleet.yaml (waves: canary, early, main)",
            "clusters/prod-us-1.yaml:24:14: spec.controlPlane.version: `1.3x` is not a Kubernetes version (expected MAJOR.MINOR or MAJOR.MINOR.PATCH, e.g. 1.30.4)",
            "clusters/staging-eu-1.yaml:34:11: spec.componentValues.metrics-lite.valuesFiles[0]: values file `values/metrics-lite/staging.yaml` not found in the repository",
            "clusters/staging-us-1.yaml:40:11: spec.componentValues.metrics-lite.valuesFiles[0]: values file `values/metrics-lite/staging.yaml` not found in the repository",
            "fleet.yaml:19:15: spec.tagPattern: tag pattern `waves` must contain `{wave}` exactly once",
        ],
    );
}

#[test]
fn missing_fleet_yaml() {
    let repo = Repo::example();
    repo.remove("fleet.yaml");
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "fleet.yaml: file not found: a fleet repo needs fleet.yaml at its root (waves, tag pattern); wave labels are not checked without it",
        ],
    );
}

#[test]
fn tag_pattern_without_wave_placeholder() {
    let repo = Repo::example();
    repo.edit(
        "fleet.yaml",
        "tagPattern: \"wave/{wave}\"",
        "tagPattern: release/latest",
    );
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "fleet.yaml:19:15: spec.tagPattern: tag pattern `release/latest` must contain `{wave}` exactly once",
        ],
    );
}

#[test]
fn bad_selector_in_fleet_defaults() {
    let repo = Repo::example();
    repo.edit(
        "fleet.yaml",
        "clusters: env in (dev,staging)",
        "clusters: \"env in (prod\"",
    );
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "fleet.yaml:22:17: spec.defaults[0].clusters: invalid selector `env in (prod`: unbalanced `(`",
        ],
    );
}

#[test]
fn exec_provider_with_empty_command() {
    let repo = Repo::example();
    repo.edit(
        "clusters/staging-us-1.yaml",
        "upgradeNodeGroup: [tidemark, sim, ctl, upgrade-node-group]",
        "upgradeNodeGroup: []",
    );
    repo.edit(
        "clusters/prod-us-1.yaml",
        "status: [tidemark, sim, ctl, state]",
        "status: [\"\"]",
    );
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "clusters/prod-us-1.yaml:22:5: spec.provider.status: must be a non-empty command (a list: program, then arguments)",
            "clusters/staging-us-1.yaml:18:5: spec.provider.upgradeNodeGroup: must be a non-empty command (a list: program, then arguments)",
        ],
    );
}

// JSON Schema: the schema `tidemark schema` prints accepts every manifest of the example
// and rejects what the loader rejects, checked by an independent validator.

fn check_jsonschema() -> PathBuf {
    let bin = workspace_root().join(".venv/bin/check-jsonschema");
    assert!(
        bin.is_file(),
        "{} not found: run scripts/setup-python.sh (it creates .venv/ with the pinned check-jsonschema)",
        bin.display()
    );
    bin
}

fn manifests(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("fleet.yaml")];
    for dir in ["clusters", "components"] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

/// Runs check-jsonschema on `files` with the generated schema: (success, output).
fn run_check_jsonschema(files: &[PathBuf]) -> (bool, String) {
    let bin = check_jsonschema();
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("fleet-repo.schema.json");
    std::fs::write(
        &schema,
        serde_json::to_string_pretty(&fleet_repo_schema()).unwrap(),
    )
    .unwrap();
    let out = Command::new(&bin)
        .arg("--schemafile")
        .arg(&schema)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("failed to run {}: {e}", bin.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn json_schema_accepts_every_example_manifest() {
    let files = manifests(&example_dir());
    assert_eq!(files.len(), 1 + 7 + 2, "{files:?}");
    let (ok, output) = run_check_jsonschema(&files);
    assert!(ok, "check-jsonschema rejected the example:\n{output}");
}

#[test]
fn json_schema_rejects_unknown_field_and_unquoted_version() {
    let repo = Repo::example();
    repo.edit(
        "clusters/prod-eu-1.yaml",
        "      drainTimeout: 30m",
        "      drainTimeot: 30m",
    );
    let (ok, output) = run_check_jsonschema(&[repo.path("clusters/prod-eu-1.yaml")]);
    assert!(!ok, "check-jsonschema accepted an unknown field:\n{output}");
    assert!(
        output.contains("$.spec.nodeGroups[1]: Additional properties are not allowed ('drainTimeot' was unexpected)"),
        "{output}"
    );

    // The loader refuses `version: 1.30` (a YAML float); so must the schema.
    repo.edit(
        "clusters/prod-us-1.yaml",
        "controlPlane:\n    version: \"1.28.9\"",
        "controlPlane:\n    version: 1.30",
    );
    let (ok, output) = run_check_jsonschema(&[repo.path("clusters/prod-us-1.yaml")]);
    assert!(
        !ok,
        "check-jsonschema accepted an unquoted version:\n{output}"
    );
    assert!(output.contains("1.3 is not of type 'string'"), "{output}");
}

#[test]
fn bad_freezes_and_failure_budgets() {
    let repo = Repo::example();
    repo.edit(
        "fleet.yaml",
        "  tagPattern: \"wave/{wave}\"",
        "  tagPattern: \"wave/{wave}\"
  freezes:
    - {name: year-end, from: \"2026-12-21\", until: \"2026-12-01\", timeZone: Europe/Berlin}
    - {name: year-end, days: [Fri], start: \"16:00\"}",
    );
    assert_diagnostics(
        repo.diagnostics(),
        &[
            "fleet.yaml:21:7: spec.freezes[0]: `until` must be after `from`",
            "fleet.yaml:22:7: spec.freezes[1]: a freeze is either a calendar freeze (`from` and `until`) or a weekly one (`days`, `start` and `duration`)",
            "fleet.yaml:22:14: spec.freezes[1].name: duplicate freeze `year-end` (also spec.freezes[0])",
        ],
    );
    let repo = Repo::example();
    repo.edit(
        "fleet.yaml",
        "soak: 10m",
        "soak: 10m\n      maxUnhealthy: 120%",
    );
    let diags = repo.diagnostics();
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert!(
        diags[0].starts_with("fleet.yaml:12:21: spec.waves[0].maxUnhealthy: ")
            && diags[0].contains("`120%` is not a failure budget"),
        "{diags:?}"
    );
}

#[test]
fn json_schema_knows_freezes_budgets_and_the_stop_all_switch() {
    let repo = Repo::example();
    repo.edit(
        "fleet.yaml",
        "  tagPattern: \"wave/{wave}\"",
        "  tagPattern: \"wave/{wave}\"
  paused: true
  freezes:
    - {name: year-end, from: \"2026-12-21\", until: \"2027-01-04T06:00\", timeZone: Europe/Berlin}
    - {name: weekend, days: [Fri], start: \"16:00\", duration: 64h, reason: nobody is around}",
    );
    repo.edit(
        "fleet.yaml",
        "soak: 10m",
        "soak: 10m\n      maxUnhealthy: 10%",
    );
    repo.edit("fleet.yaml", "soak: 1h", "soak: 1h\n      maxUnhealthy: 1");
    assert_diagnostics(repo.diagnostics(), &[]);
    let (ok, output) = run_check_jsonschema(&[repo.path("fleet.yaml")]);
    assert!(
        ok,
        "check-jsonschema rejected a valid fleet.yaml:\n{output}"
    );

    repo.edit("fleet.yaml", "maxUnhealthy: 10%", "maxUnhealthy: 110%");
    let (ok, output) = run_check_jsonschema(&[repo.path("fleet.yaml")]);
    assert!(!ok, "check-jsonschema accepted a budget of 110%:\n{output}");
}

#[test]
fn settings_a_provider_cannot_honour_are_refused() {
    let fleet = "apiVersion: tidemark.dev/v1alpha1\nkind: Fleet\nmetadata: {name: f}\nspec:\n  waves: [{name: main}]\n";
    let topology = "apiVersion: tidemark.dev/v1alpha1
kind: Cluster
metadata: {name: t, labels: {cluster: t}}
spec:
  provider: {kind: clusterapi, namespace: capi, topology: true, kubeconfigSecret: mgmt, kubeconfigFile: /etc/mgmt}
  controlPlane: {version: \"1.30.4\"}
  nodeGroups:
    - {name: general, version: \"1.30.4\"}
    - {name: gpu, version: \"1.29.8\", drain: tidemark}
";
    let exec = "apiVersion: tidemark.dev/v1alpha1
kind: Cluster
metadata: {name: e, labels: {cluster: e}}
spec:
  provider: {kind: exec, upgradeControlPlane: [up], upgradeNodeGroup: [ng]}
  controlPlane: {version: \"1.30.4\"}
  nodeGroups:
    - {name: self-managed, version: \"1.30.4\", drain: tidemark, drainTimeoutAction: force}
    - {name: other, version: \"1.30.4\", deleteEmptyDirData: true}
";
    let dir = tempfile::tempdir().unwrap();
    for (rel, text) in [
        ("fleet.yaml", fleet),
        ("clusters/t.yaml", topology),
        ("clusters/e.yaml", exec),
    ] {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let lines = diagnostics_of(dir.path());
    let expected = [
        "clusters/e.yaml:8:54: spec.nodeGroups[0].drain: `drain: tidemark` needs spec.provider.replaceNode, the command that replaces one drained node",
        "clusters/e.yaml:8:84: spec.nodeGroups[0].drainTimeoutAction: only Cluster API can force a drain (nodeDrainTimeout); an exec group's drain stops and reports",
        "clusters/e.yaml:9:60: spec.nodeGroups[1].deleteEmptyDirData: only tidemark's own drain reads it (`drain: tidemark`); the provider's drain has its own rules",
        "clusters/t.yaml:5:105: spec.provider.kubeconfigFile: give the management cluster's kubeconfig either as kubeconfigSecret or as kubeconfigFile, not both",
        "clusters/t.yaml:9:28: spec.nodeGroups[1].version: node group `gpu` cannot have a version of its own on a ClusterClass (topology) cluster: the topology controller moves every MachineDeployment to the control plane's version (1.30.4); declare 1.30.4 or drop topology",
        "clusters/t.yaml:9:45: spec.nodeGroups[1].drain: Cluster API drains its machines itself; `drain: tidemark` is for exec node groups (with spec.provider.replaceNode)",
    ];
    assert_eq!(lines, expected);
}
