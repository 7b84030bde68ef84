//! helm's output is read as Kubernetes reads it (issue 10, item 7): YAML 1.1 scalars as
//! sigs.k8s.io/yaml resolves them. Every case is one object read twice, by the real
//! `kubectl` (`kubectl annotate --local -o json`, which parses a manifest with
//! sigs.k8s.io/yaml and prints it without contacting a server) and by tidemark's manifest
//! parser (`component::manifest::parse`, what the agent applies); the JSON must be the same,
//! and a document kubectl refuses must be refused by tidemark too.
//!
//! Numbers are compared as Kubernetes reads JSON numbers: integers within `int64` must be
//! integers on both sides (`1000`, never `1000.0`, which an integer field refuses), anything
//! else is compared as a float.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tidemark::component::manifest;
use tidemark_e2e::{
    CLUSTERAPI, Pass, SimProcess, WorkRepo, agent_once, charts, fleet_yaml, helm_wrapper,
    sim_manifest,
};

/// (name, fragment): the fragment is written below an object's identity.
const CASES: &[(&str, &str)] = &[
    // Octal, hex, binary (go-yaml v2: underscores dropped, then Go's ParseInt base 0).
    ("octal", "v: 0755\n"),
    ("octal 0o", "v: 0o755\n"),
    ("octal 0O", "v: 0O17\n"),
    ("octal negative", "v: -0755\n"),
    ("octal with 8 is a float", "v: 08\n"),
    ("octal with 9 and a point", "v: 0789.5\n"),
    ("octal zero zero", "v: 00\n"),
    ("0o without digits", "v: 0o\n"),
    ("0o8", "v: 0o8\n"),
    ("hex", "v: 0x1F\n"),
    ("hex upper prefix", "v: 0X1f\n"),
    ("hex signed", "v: -0x10\n"),
    ("hex plus", "v: +0x10\n"),
    ("hex bad digit", "v: 0xG\n"),
    ("hex without digits", "v: 0x\n"),
    ("hex float is text", "v: 0x1p3\n"),
    ("hex int64 max", "v: 0x7FFF_FFFF_FFFF_FFFF\n"),
    ("hex uint64 max", "v: 0xFFFFFFFFFFFFFFFF\n"),
    ("hex int64 min", "v: -0x8000000000000000\n"),
    ("binary", "v: 0b101\n"),
    ("binary upper", "v: 0B11\n"),
    ("binary negative", "v: -0b101\n"),
    ("binary with sign after prefix", "v: 0b-101\n"),
    ("binary plus after prefix", "v: 0b+101\n"),
    ("binary double negative", "v: -0b-101\n"),
    ("binary with underscore", "v: 0b1_0\n"),
    // Decimal integers.
    ("zero", "v: 0\n"),
    ("negative zero", "v: -0\n"),
    ("plus zero", "v: +0\n"),
    ("underscores", "v: 1_000_000\n"),
    ("double underscore", "v: 1__0\n"),
    ("trailing underscore", "v: 1_\n"),
    ("leading underscore", "v: _1\n"),
    ("int64 max", "v: 9223372036854775807\n"),
    ("int64 min", "v: -9223372036854775808\n"),
    ("beyond int64", "v: 9223372036854775808\n"),
    ("uint64 max", "v: 18446744073709551615\n"),
    ("beyond uint64", "v: 18446744073709551616\n"),
    ("below int64", "v: -9223372036854775809\n"),
    // Floats.
    ("exponent", "v: 1e3\n"),
    ("exponent upper", "v: 1E3\n"),
    ("exponent signed", "v: 1e+3\n"),
    ("negative exponent", "v: 1e-3\n"),
    ("point exponent", "v: 1.e3\n"),
    ("trailing point", "v: 1.\n"),
    ("leading point", "v: .5\n"),
    ("leading point exponent", "v: .5e3\n"),
    ("leading point underscore", "v: .1_5\n"),
    ("leading point bad underscore", "v: ._5\n"),
    ("leading point trailing underscore", "v: .5_\n"),
    ("signed leading point", "v: -.5\n"),
    ("plus leading point", "v: +.5\n"),
    ("plain float", "v: 1.5\n"),
    ("float underscores", "v: 1_000.5\n"),
    ("float integral", "v: 2.0\n"),
    ("negative zero float", "v: -0.0\n"),
    ("big integral float", "v: 1e20\n"),
    ("huge float", "v: 1e21\n"),
    ("float overflow is text", "v: 1e400\n"),
    ("float underflow", "v: 1e-400\n"),
    ("dangling exponent", "v: 12e\n"),
    ("version-like", "v: 1.2.3\n"),
    ("version 1.10", "v: 1.10\n"),
    ("inf words are text", "v: infinity\n"),
    ("plus inf word", "v: +inf\n"),
    ("nan mixed case is text", "v: .Nan\n"),
    ("lone point", "v: .\n"),
    ("lone sign", "v: +\n"),
    ("minus text", "v: -x\n"),
    // Sexagesimal and timestamps: text in go-yaml v2.
    ("sexagesimal", "v: 190:20:30\n"),
    ("sexagesimal float", "v: 20:30.15\n"),
    ("negative sexagesimal", "v: -1:20\n"),
    ("date", "v: 2001-12-14\n"),
    ("timestamp", "v: 2001-12-14t21:59:43.10-05:00\n"),
    ("timestamp space", "v: 2001-12-14 21:59:43.10\n"),
    ("not a date", "v: 2001-13-45\n"),
    // Booleans and null, per go-yaml v2's table.
    (
        "booleans true",
        "v: [y, Y, yes, Yes, YES, on, On, ON, true, True, TRUE]\n",
    ),
    (
        "booleans false",
        "v: [n, N, no, No, NO, off, Off, OFF, false, False, FALSE]\n",
    ),
    (
        "boolean mixed case is text",
        "v: [yES, nO, oN, oFF, tRUE, fALSE, yeS]\n",
    ),
    ("nulls", "v: [~, null, Null, NULL, '']\n"),
    ("null mixed case is text", "v: [nULL, nuLL]\n"),
    ("empty value", "v:\nw: 1\n"),
    // Quoting and block scalars: always text.
    (
        "quoted",
        "v: ['0755', \"0755\", 'yes', \"on\", '1e3', '~', \"null\"]\n",
    ),
    ("literal block", "v: |\n  0755\n"),
    ("folded block", "v: >-\n  yes\n"),
    ("multi-line plain", "v: a\n  b\n"),
    // Tags.
    ("tag str", "v: !!str 0755\n"),
    ("tag int quoted", "v: !!int '0755'\n"),
    ("tag int not an int", "v: !!int abc\n"),
    ("tag int of a float", "v: !!int 1.5\n"),
    ("tag float of an int", "v: !!float 2\n"),
    ("tag float of a uint", "v: !!float 18446744073709551615\n"),
    ("tag float exponent", "v: !!float 1e3\n"),
    ("tag bool", "v: !!bool \"yes\"\n"),
    ("tag bool of an int", "v: !!bool 1\n"),
    ("tag null", "v: !!null ~\n"),
    ("tag null of text", "v: !!null x\n"),
    ("tag str of null", "v: !!str ~\n"),
    ("tag timestamp", "v: !!timestamp 2001-12-14\n"),
    ("tag binary", "v: !!binary aGVsbG8=\n"),
    ("tag binary block", "v: !!binary |\n  aGVs\n  bG8=\n"),
    ("tag binary invalid", "v: !!binary '*'\n"),
    ("verbatim tag", "v: !<tag:yaml.org,2002:int> '12'\n"),
    ("custom tag", "v: !custom 5\n"),
    ("non-specific tag", "v: ! 12\n"),
    ("custom tag on a mapping", "v: !custom {a: 0755}\n"),
    // Values without a JSON form.
    ("nan", "v: .nan\n"),
    ("inf", "v: .inf\n"),
    ("negative inf", "v: -.Inf\n"),
    ("plus inf", "v: +.INF\n"),
    // Keys: resolved like values, then written as JSON keys.
    ("int keys", "v: {0755: a, 0x10: b, 1_0: c, -1: d}\n"),
    ("bool keys", "v: {y: a, n: b, on: c, Off: d}\n"),
    (
        "float keys",
        "v: {1.5: a, 1e6: b, 0.00001: c, 1.0: d, 1e100: e, 3.14159265358979: f}\n",
    ),
    ("infinite keys", "v: {.inf: a, -.inf: b}\n"),
    ("nan key", "v: {.nan: a}\n"),
    ("timestamp key", "v: {2001-12-14: a}\n"),
    ("quoted keys", "v: {'0755': a, 'y': b}\n"),
    ("null key", "v: {~: a}\n"),
    ("empty key", "v:\n  ? \n  : a\n"),
    ("uint64 key", "v: {18446744073709551615: a}\n"),
    ("sequence key", "v:\n  ? [a]\n  : b\n"),
    ("mapping key", "v:\n  ? {a: 1}\n  : b\n"),
    ("binary key", "v: {!!binary aGk=: a}\n"),
    ("alias key", "v: {k: &k x, *k : y}\n"),
    // Duplicate keys: the last wins.
    ("duplicate keys", "v:\n  a: 1\n  a: 2\n"),
    ("duplicate resolved keys", "v: {y: 1, true: 2, Yes: 3}\n"),
    // Merge keys, as go-yaml v2 applies them.
    ("merge", "b: &b {a: 2, c: 3}\nv: {<<: *b, a: 1}\n"),
    (
        "merge after a key overwrites it",
        "b: &b {a: 2, c: 3}\nv: {a: 1, <<: *b}\n",
    ),
    (
        "merge sequence",
        "b: &b {a: 2, c: 3}\nv: {<<: [{a: 5}, *b]}\n",
    ),
    ("merge inline", "v: {<<: {a: 0755}, b: 1}\n"),
    ("merge of a scalar", "v: {<<: 5}\n"),
    ("merge of a sequence of scalars", "v: {<<: [5]}\n"),
    ("merge tag", "v: {!!merge <<: {a: 1}}\n"),
    ("quoted merge key", "v: {'<<': {a: 1}}\n"),
    (
        "nested merge",
        "b: &b {<<: {x: 1}, y: 2}\nv: {<<: *b, z: 3}\n",
    ),
    // Anchors and aliases.
    ("alias", "a: &a [1, yes, 0755]\nv: *a\n"),
    ("redefined anchor", "a: &a 1\nb: &a 2\nv: *a\n"),
    ("unknown anchor", "v: *nope\n"),
    // Syntax errors.
    ("tab indentation", "v:\n  a: 1\n\tb: 2\n"),
    ("unclosed flow", "v: [1, 2\n"),
    ("bad indentation", "v:\n  a: 1\n b: 2\n"),
    // What charts write.
    (
        "configmap volume",
        "spec:\n  volumes:\n  - name: cfg\n    configMap:\n      name: cfg\n      defaultMode: 0755\n      \
         items:\n      - {key: run.sh, path: run.sh, mode: 0644}\n",
    ),
    (
        "labels and data",
        "data:\n  enabled: yes\n  port: 8080\n  ratio: 0.5\n  version: 1.10\n  quoted: \"on\"\n",
    ),
];

/// The object a case is written into.
fn document(fragment: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\n{fragment}")
}

/// kubectl's reading: `Ok(json)`, or `Err(message)` when it refuses the document.
fn kubectl_reads(dir: &Path, name: &str, text: &str) -> Result<Result<Value, String>> {
    let file = dir.join(format!("{}.yaml", name.replace(' ', "-")));
    std::fs::write(&file, text)?;
    // Removing an annotation the object does not have changes nothing but
    // `metadata.annotations: {}`; `--local` never contacts a server.
    let out = Command::new("kubectl")
        .args(["annotate", "--local", "-o", "json", "-f"])
        .arg(&file)
        .arg("tidemark.dev/probe-")
        .env("KUBECONFIG", dir.join("no-kubeconfig"))
        .output()
        .context("failed to run kubectl (it must be on PATH: scripts/setup-system.sh)")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if !stderr.contains("error parsing") {
            bail!("kubectl failed for another reason than the document: {stderr}");
        }
        return Ok(Err(stderr));
    }
    let mut json: Value = serde_json::from_slice(&out.stdout)?;
    if let Some(metadata) = json.get_mut("metadata").and_then(Value::as_object_mut)
        && metadata.get("annotations") == Some(&Value::Object(Default::default()))
    {
        metadata.remove("annotations");
    }
    Ok(Ok(json))
}

/// tidemark's reading, through the parser the agent applies from.
fn tidemark_reads(text: &str) -> Result<Value, String> {
    match manifest::parse(text) {
        Ok(objects) if objects.len() == 1 => Ok(objects[0].body.clone()),
        Ok(objects) => Err(format!("{} objects", objects.len())),
        Err(e) => Err(e.to_string()),
    }
}

/// JSON equality with numbers compared as Kubernetes reads them.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            (None, None) => x.as_f64() == y.as_f64(),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|other| same(v, other)))
        }
        _ => a == b,
    }
}

#[test]
fn helm_output_is_read_as_kubectl_reads_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cases: Vec<(&str, String)> = CASES
        .iter()
        .map(|(name, fragment)| (*name, document(fragment)))
        .collect();
    // A "billion laughs": go-yaml v2 refuses excessive aliasing, and so must tidemark.
    let mut laughs = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let refs = vec![format!("*l{}", i - 1); 10].join(", ");
        laughs.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
    }
    cases.push(("excessive aliasing", document(&laughs)));

    // kubectl takes ~60 ms a case: four at a time.
    let readings: Vec<Result<Result<Value, String>>> = std::thread::scope(|scope| {
        let chunks: Vec<_> = cases
            .chunks(cases.len().div_ceil(4))
            .map(|chunk| {
                let dir = dir.path();
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|(name, text)| kubectl_reads(dir, name, text))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks
            .into_iter()
            .flat_map(|t| {
                t.join()
                    .unwrap_or_else(|_| vec![Err(anyhow::anyhow!("a kubectl thread panicked"))])
            })
            .collect()
    });

    let mut failures = Vec::new();
    let (mut agreed, mut refused) = (0, 0);
    for ((name, text), kubectl) in cases.iter().zip(readings) {
        let kubectl = kubectl?;
        let tidemark = tidemark_reads(text);
        match (&kubectl, &tidemark) {
            (Ok(k), Ok(t)) if same(k, t) => agreed += 1,
            (Err(_), Err(_)) => refused += 1,
            _ => failures.push(format!(
                "{name}:\n  document: {text:?}\n  kubectl:  {}\n  tidemark: {}",
                show(&kubectl),
                show(&tidemark)
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases read differently:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    // The table has both kinds of case; neither can silently vanish.
    assert!(
        agreed > 100 && refused > 15,
        "{agreed} agreed, {refused} refused"
    );
    Ok(())
}

fn show(reading: &Result<Value, String>) -> String {
    match reading {
        Ok(v) => v.to_string(),
        Err(e) => format!("refused: {e}"),
    }
}

/// The chart [`charts::YAML11`] through the agent, the real helm and the sim: the
/// Deployment's `defaultMode: 0755` is stored as 493 (a YAML 1.2 reading sends the string
/// `"0755"`), and the values file's `extra: no` keeps the optional ConfigMap out (a YAML 1.2
/// reading hands helm the string `"no"`, which a template's `if` takes as true).
#[test]
fn a_chart_written_for_yaml_1_1_is_applied_as_kubectl_would_apply_it() -> Result<()> {
    let repo = WorkRepo::new()?;
    repo.write("fleet.yaml", &fleet_yaml(&["canary"]))?;
    charts::YAML11.write_to(&repo.path().join("charts/yaml11"))?;
    repo.write("values/yaml11.yaml", "extra: no\n")?;
    let mut cluster = sim_manifest(CLUSTERAPI, "1.28.9", &[("general", "1.28.9")]);
    cluster.push_str(
        "  components:
    - name: yaml11
      chart: {path: charts/yaml11}
      namespace: yaml11
      valuesFiles: [values/yaml11.yaml]
",
    );
    repo.write("clusters/sim.yaml", &cluster)?;
    let rev = repo.commit("yaml11")?;
    repo.tag_light("wave/canary", &rev)?;

    let sim = SimProcess::start(&[
        "--version",
        "1.28.9",
        "--node-groups",
        "general=2",
        "--speed",
        "20",
    ])?;
    let dir = tempfile::tempdir()?;
    let helm = helm_wrapper(dir.path())?;
    let run = agent_once(repo.path(), &sim, &helm, dir.path(), &[])?;
    assert_eq!(run.code, Some(0), "{run:?}");
    let pass = Pass::parse(&run.stdout);
    assert_eq!(pass.phase, "Converged", "{pass:?}");

    let deployment: Value = serde_json::from_str(&sim.kubectl(&[
        "get",
        "deployment",
        "-n",
        "yaml11",
        "yaml11",
        "-o",
        "json",
    ])?)?;
    let config_map = &deployment["spec"]["template"]["spec"]["volumes"][0]["configMap"];
    assert_eq!(config_map["defaultMode"], 493, "{config_map}");
    assert_eq!(config_map["items"][0]["mode"], 448, "{config_map}");
    assert!(
        sim.kubectl(&["get", "configmap", "-n", "yaml11", "yaml11-scripts"])
            .is_ok()
    );
    assert!(
        sim.kubectl(&["get", "configmap", "-n", "yaml11", "yaml11-extra"])
            .is_err(),
        "`extra: no` in the values file is false for helm, so for tidemark too"
    );
    Ok(())
}
