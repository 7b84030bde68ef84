//! Helm 3 (v3.17.2) and Helm 4 (v4.1.4) render the same objects from every chart the tests
//! use: `fleet-repo-example/charts/*` with each of its values files, the charts the e2e tests
//! write (`tidemark_e2e::charts`), metrics-lite 0.4.0 as the upgrade tests change it, and
//! metrics-lite from a chart repository over HTTP. Each render is `helm template` with
//! tidemark's arguments; the output is parsed as multi-document YAML and compared object by
//! object (kind, namespace, name, then the whole body), and in order. A chart that fails must
//! fail with both, with the same message. Differences that are expected are named in
//! [`KNOWN_DIFFERENCES`]; any other one fails the test, and so does a named one that is gone.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_yaml::Value;
use tidemark_e2e::charts::{self, TestChart};
use tidemark_e2e::{
    HELM3_VERSION, HELM4_VERSION, HttpServer, copy_dir, helm_bin, helm_run, helm3_bin, index_yaml,
    package_metrics_lite, workspace_root,
};

/// (case, what differs) for every difference between the two renders that is expected.
/// Empty: for the test charts, Helm 3 and Helm 4 render identical objects, in the same
/// order, and fail with the same message.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

/// One object of a render: `kind namespace/name` (namespace `-` when cluster-scoped) and body.
type Object = (String, Value);

/// What one `helm template` gave.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The objects in the order helm printed them.
    Rendered(Vec<Object>),
    /// Exit 1: the `Error: ` line.
    Failed(String),
}

fn key(doc: &Value) -> String {
    let field = |v: &Value| v.as_str().unwrap_or("?").to_string();
    format!(
        "{} {}/{}",
        field(&doc["kind"]),
        doc["metadata"]["namespace"].as_str().unwrap_or("-"),
        field(&doc["metadata"]["name"])
    )
}

/// Parses `helm template` output: every non-empty YAML document is one object.
fn objects(stdout: &str) -> Result<Vec<Object>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(stdout) {
        let value = Value::deserialize(doc).context("helm output is not YAML")?;
        if let Value::Null = value {
            continue;
        }
        out.push((key(&value), value));
    }
    Ok(out)
}

fn render(helm: &Path, args: &[&str], dir: &Path) -> Result<Outcome> {
    let run = helm_run(helm, args, dir)?;
    match run.code {
        Some(0) => Ok(Outcome::Rendered(objects(&run.stdout)?)),
        Some(1) if run.stdout.is_empty() => {
            let line = run
                .stderr
                .lines()
                .find(|l| l.starts_with("Error: "))
                .with_context(|| format!("{args:?}: no `Error: ` line: {}", run.stderr))?;
            Ok(Outcome::Failed(line.to_string()))
        }
        _ => bail!("helm {args:?} in {}: {run:?}", dir.display()),
    }
}

/// The differences between two outcomes, each named by object and field.
fn differences(helm3: &Outcome, helm4: &Outcome) -> Vec<String> {
    let mut found = Vec::new();
    match (helm3, helm4) {
        (Outcome::Rendered(a), Outcome::Rendered(b)) => {
            let keys = |objs: &[Object]| objs.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
            for (k, body) in a {
                match b.iter().find(|(kb, _)| kb == k) {
                    None => found.push(format!("{k}: only Helm 3 renders it")),
                    Some((_, other)) if other != body => {
                        let mut fields = Vec::new();
                        diff_fields("", body, other, &mut fields);
                        found.push(format!("{k}: differs at {}", fields.join(", ")));
                    }
                    Some(_) => {}
                }
            }
            for (k, _) in b {
                if !a.iter().any(|(ka, _)| ka == k) {
                    found.push(format!("{k}: only Helm 4 renders it"));
                }
            }
            if found.is_empty() && keys(a) != keys(b) {
                found.push(format!("order: Helm 3 {:?}, Helm 4 {:?}", keys(a), keys(b)));
            }
        }
        (Outcome::Failed(a), Outcome::Failed(b)) if a != b => {
            found.push(format!("error: Helm 3 {a:?}, Helm 4 {b:?}"));
        }
        (Outcome::Failed(_), Outcome::Failed(_)) => {}
        (a, b) => found.push(format!("outcome: Helm 3 {a:?}, Helm 4 {b:?}")),
    }
    found
}

/// The paths (`.a.b[0]`) at which `a` and `b` differ.
fn diff_fields(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Mapping(ma), Value::Mapping(mb)) => {
            for (k, va) in ma {
                let p = format!("{path}.{}", k.as_str().unwrap_or("?"));
                match mb.get(k) {
                    Some(vb) => diff_fields(&p, va, vb, out),
                    None => out.push(format!("{p} (only Helm 3)")),
                }
            }
            for k in mb.keys().filter(|k| !ma.contains_key(*k)) {
                out.push(format!(
                    "{path}.{} (only Helm 4)",
                    k.as_str().unwrap_or("?")
                ));
            }
        }
        (Value::Sequence(sa), Value::Sequence(sb)) if sa.len() == sb.len() => {
            for (i, (va, vb)) in sa.iter().zip(sb).enumerate() {
                diff_fields(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a:?} vs {b:?}")),
        _ => {}
    }
}

/// One render to compare: a name, the working directory and the arguments.
struct Case {
    name: String,
    dir: PathBuf,
    args: Vec<String>,
}

/// `template RELEASE CHART --namespace NS -f VALUES... --include-crds`
fn template_args(release: &str, chart: &str, values: &[String]) -> Vec<String> {
    let mut args: Vec<String> = ["template", release, chart, "--namespace", "tm-test"]
        .map(String::from)
        .to_vec();
    for v in values {
        args.extend(["-f".to_string(), v.clone()]);
    }
    args.push("--include-crds".into());
    args
}

fn example_chart_cases() -> Result<Vec<Case>> {
    let example = workspace_root().join("fleet-repo-example");
    let mut cases = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(example.join("charts"))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    names.sort();
    assert!(names.len() >= 2, "fleet-repo-example/charts: {names:?}");
    for name in names {
        let chart = format!("charts/{name}");
        cases.push(Case {
            name: format!("{chart} (defaults)"),
            dir: example.clone(),
            args: template_args(&name, &chart, &[]),
        });
        // As the example fleet layers them: common.yaml, then one environment's file.
        let values_dir = example.join("values").join(&name);
        let mut files: Vec<String> = match std::fs::read_dir(&values_dir) {
            Ok(entries) => entries
                .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
                .collect::<Result<_>>()?,
            Err(_) => Vec::new(),
        };
        files.sort();
        let common = format!("values/{name}/common.yaml");
        for file in &files {
            let path = format!("values/{name}/{file}");
            let values = if file == "common.yaml" {
                vec![path]
            } else {
                vec![common.clone(), path]
            };
            cases.push(Case {
                name: format!("{chart} -f {}", values.join(" -f ")),
                dir: example.clone(),
                args: template_args(&name, &chart, &values),
            });
        }
    }
    Ok(cases)
}

fn test_chart_cases(work: &Path, chart: &TestChart, index: usize) -> Result<Vec<Case>> {
    let dir = work.join(format!("chart-{index}-{}", chart.name));
    chart.write_to(&dir)?;
    let mut cases = Vec::new();
    for (i, values) in chart.values.iter().enumerate() {
        let file = work.join(format!("values-{index}-{i}.yaml"));
        std::fs::write(&file, values)?;
        cases.push(Case {
            name: format!("charts::{} with {values:?}", chart.name),
            dir: work.to_path_buf(),
            args: template_args(
                chart.name,
                &dir.display().to_string(),
                &[file.display().to_string()],
            ),
        });
    }
    Ok(cases)
}

#[test]
fn helm_3_and_helm_4_render_the_same_objects_from_the_test_charts() -> Result<()> {
    let (helm3, helm4) = (helm3_bin()?, helm_bin()?);
    for (helm, version) in [(&helm3, HELM3_VERSION), (&helm4, HELM4_VERSION)] {
        let run = helm_run(helm, &["version", "--short"], &workspace_root())?;
        assert!(
            run.stdout.starts_with(&format!("{version}+")),
            "{} is not helm {version}: {run:?}",
            helm.display()
        );
    }

    let work = tempfile::tempdir()?;
    let mut cases = example_chart_cases()?;
    for (i, chart) in charts::ALL.iter().enumerate() {
        cases.extend(test_chart_cases(work.path(), chart, i)?);
    }

    // metrics-lite 0.4.0 as the upgrade test makes it: no Service, a dashboards ConfigMap.
    let upgraded = work.path().join("metrics-lite-0.4.0");
    copy_dir(
        &workspace_root().join("fleet-repo-example/charts/metrics-lite"),
        &upgraded,
    )?;
    let chart_yaml = std::fs::read_to_string(upgraded.join("Chart.yaml"))?;
    std::fs::write(
        upgraded.join("Chart.yaml"),
        chart_yaml.replace("version: 0.3.0", "version: 0.4.0"),
    )?;
    std::fs::remove_file(upgraded.join("templates/service.yaml"))?;
    std::fs::write(
        upgraded.join("templates/dashboards.yaml"),
        charts::METRICS_LITE_DASHBOARDS,
    )?;
    cases.push(Case {
        name: "metrics-lite 0.4.0 (upgrade test)".into(),
        dir: work.path().to_path_buf(),
        args: template_args("metrics-lite", &upgraded.display().to_string(), &[]),
    });

    // From a chart repository, latest and pinned.
    let d030 = package_metrics_lite(work.path(), "0.3.0")?;
    let d040 = package_metrics_lite(work.path(), "0.4.0")?;
    std::fs::write(
        work.path().join("repo/index.yaml"),
        index_yaml(&d030, &d040),
    )?;
    let server = HttpServer::start(&work.path().join("repo"))?;
    for version in [None, Some("0.3.0")] {
        let mut args = template_args("metrics", "metrics-lite", &[]);
        args.extend(["--repo".to_string(), server.url()]);
        if let Some(v) = version {
            args.extend(["--version".to_string(), v.to_string()]);
        }
        cases.push(Case {
            name: format!("metrics-lite from a repository, version {version:?}"),
            dir: work.path().to_path_buf(),
            args,
        });
    }

    let mut found: Vec<(String, String)> = Vec::new();
    let mut failed = Vec::new();
    let mut objects = 0;
    for case in &cases {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let a = render(&helm3, &args, &case.dir).with_context(|| case.name.clone())?;
        let b = render(&helm4, &args, &case.dir).with_context(|| case.name.clone())?;
        match &b {
            Outcome::Rendered(objs) => {
                assert!(!objs.is_empty(), "{}: Helm 4 rendered nothing", case.name);
                objects += objs.len();
            }
            Outcome::Failed(_) => failed.push(case.name.as_str()),
        }
        found.extend(
            differences(&a, &b)
                .into_iter()
                .map(|d| (case.name.clone(), d)),
        );
    }
    let expected: Vec<(String, String)> = KNOWN_DIFFERENCES
        .iter()
        .map(|(c, d)| (c.to_string(), d.to_string()))
        .collect();
    assert_eq!(
        found,
        expected,
        "differences between Helm 3 and Helm 4 over {} renders ({objects} objects)",
        cases.len()
    );
    assert_eq!(
        failed,
        ["charts::broken with \"{}\""],
        "only the broken chart fails"
    );
    Ok(())
}

/// The comparison names what differs: by object, by field, by order and by outcome.
#[test]
fn the_comparison_names_each_difference() -> Result<()> {
    let parse = |text: &str| -> Result<Outcome> { Ok(Outcome::Rendered(objects(text)?)) };
    let base = parse(
        "---\n# Source: c/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: n\ndata:\n  k: v\n\
         ---\n# Source: c/templates/b.yaml\napiVersion: v1\nkind: ClusterRole\nmetadata:\n  name: b\nrules: []\n",
    )?;
    assert_eq!(differences(&base, &base), Vec::<String>::new());
    let changed = parse(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: n\ndata:\n  k: w\n  extra: x\n\
         ---\napiVersion: v1\nkind: ClusterRole\nmetadata:\n  name: b\nrules: []\n",
    )?;
    assert_eq!(
        differences(&base, &changed),
        [
            r#"ConfigMap n/a: differs at .data.k: String("v") vs String("w"), .data.extra (only Helm 4)"#
        ]
    );
    let reordered = parse(
        "---\napiVersion: v1\nkind: ClusterRole\nmetadata:\n  name: b\nrules: []\n\
         ---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: n\ndata:\n  k: v\n",
    )?;
    assert_eq!(
        differences(&base, &reordered),
        [
            r#"order: Helm 3 ["ConfigMap n/a", "ClusterRole -/b"], Helm 4 ["ClusterRole -/b", "ConfigMap n/a"]"#
        ]
    );
    let one = parse(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: n\ndata:\n  k: v\n",
    )?;
    assert_eq!(
        differences(&base, &one),
        ["ClusterRole -/b: only Helm 3 renders it"]
    );
    let failed = Outcome::Failed("Error: x".into());
    assert_eq!(differences(&failed, &failed), Vec::<String>::new());
    assert_eq!(
        differences(&failed, &Outcome::Failed("Error: y".into())),
        [r#"error: Helm 3 "Error: x", Helm 4 "Error: y""#]
    );
    assert_eq!(differences(&failed, &one).len(), 1);
    Ok(())
}
