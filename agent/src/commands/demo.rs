//! `tidemark demo`: see `crate::demo`.

use std::process::ExitCode;

use anyhow::Context;
use tidemark_schema::Duration;

use crate::cli::DemoArgs;
use crate::demo::{self, DemoConfig};

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let DemoArgs {
        fleet,
        speed,
        nodes_per_group,
        timeout,
        helm_bin,
        soak,
    } = args;
    let timeout: Duration = timeout.parse().context("--timeout")?;
    let soak: Duration = soak.parse().context("--soak")?;
    if !fleet.join("fleet.yaml").is_file() {
        anyhow::bail!(
            "{} is not a fleet repo (no fleet.yaml); run from the repository root or pass --fleet",
            fleet.display()
        );
    }
    let binary = std::env::current_exe().context("cannot find the tidemark binary")?;
    let helm_bin = helm_bin.unwrap_or_else(default_helm);
    let helm = crate::component::helm::Helm {
        bin: helm_bin,
        timeout: std::time::Duration::from_secs(120),
        credentials: Default::default(),
    };
    let runtime = super::runtime()?;
    // Before anything starts: the demo renders every component with helm.
    let version = runtime.block_on(crate::process::run_checked(
        &crate::process::Invocation::new(&helm.bin, std::time::Duration::from_secs(20))
            .args(["version", "--short"]),
    ));
    match version {
        Ok(out) => println!(
            "tidemark demo: rendering with {} ({})",
            helm.bin.display(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        Err(e) => anyhow::bail!(
            "the demo needs helm and `{}` does not run ({}); run scripts/demo.sh (it provisions \
             the official helm into .tools/helm/), or pass --helm-bin",
            helm.bin.display(),
            crate::status::describe(&e)
        ),
    }
    let settings = crate::converge::Settings {
        health_wait: std::time::Duration::from_secs(5),
        crd_wait: std::time::Duration::from_secs(30),
        drift_interval: std::time::Duration::from_secs(600),
    };
    let config = DemoConfig {
        fleet,
        speed,
        nodes_per_group,
        timeout: timeout.as_std(),
        binary,
        helm,
        settings,
        soak: soak.as_std(),
    };
    runtime.block_on(demo::run(config))?;
    Ok(ExitCode::SUCCESS)
}

/// `helm` on PATH, else the helm that `scripts/setup-helm.sh` provisions into this
/// repository (run from its root).
fn default_helm() -> std::path::PathBuf {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("helm").is_file()));
    if on_path {
        "helm".into()
    } else {
        std::path::PathBuf::from(".tools/helm/v4.1.4/helm")
            .canonicalize()
            .unwrap_or_else(|_| ".tools/helm/v4.1.4/helm".into())
    }
}
