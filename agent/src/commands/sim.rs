//! `tidemark sim` and `tidemark sim ctl`: the simulated cluster of `sim/`.

use std::process::ExitCode;

use anyhow::Context;
use tidemark_sim::{FaultSpec, SimConfig};

use crate::cli::{SimArgs, SimCommand};

/// Prints `text` and a newline. A reader that went away (`tidemark sim ctl state | head`) ends
/// the output quietly, as it does for any Unix tool; other write errors are errors, not
/// panics (`println!` panics on both).
fn print_out(text: &str) -> anyhow::Result<ExitCode> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(anyhow::Error::new(e).context("failed to write to stdout")),
    }
}

pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let SimArgs {
        command,
        kubeconfig,
        version,
        node_groups,
        node_versions,
        speed,
        faults,
        seed,
        cluster_name,
        port,
        pods,
        unavailable_api_services,
        management_kubeconfig,
        workloads,
        capi_api,
        topology,
    } = args;
    if let Some(SimCommand::Ctl { kubeconfig, args }) = command {
        let out = super::runtime()?
            .block_on(tidemark_sim::ctl(&kubeconfig, &args))
            .context("sim ctl")?;
        return print_out(out.trim_end());
    }
    let config = SimConfig {
        version,
        node_groups: SimConfig::parse_node_groups(&node_groups).context("--node-groups")?,
        node_versions: match node_versions {
            Some(v) => SimConfig::parse_node_versions(&v).context("--node-versions")?,
            None => Vec::new(),
        },
        speed,
        faults: match faults {
            Some(f) => f.parse::<FaultSpec>().context("--faults")?,
            None => FaultSpec::default(),
        },
        seed,
        cluster_name,
        port,
        pods,
        unavailable_api_services,
        capi_api,
        topology,
        ..SimConfig::default()
    };
    let Some(management_kubeconfig) = management_kubeconfig else {
        super::runtime()?
            .block_on(tidemark_sim::run_until_signal(config, kubeconfig))
            .context("sim")?;
        return Ok(ExitCode::SUCCESS);
    };
    // The management cluster: one node of its own, no faults, Cluster API's versions.
    let management = SimConfig {
        cluster_name: "management".into(),
        node_groups: vec![("general".into(), 1)],
        node_versions: Vec::new(),
        faults: FaultSpec::default(),
        port: 0,
        topology: false,
        unavailable_api_services: Vec::new(),
        ..config.clone()
    };
    let mut clusters = vec![(config.clone(), kubeconfig)];
    for w in &workloads {
        let (name, path) = w
            .split_once('=')
            .filter(|(n, p)| !n.is_empty() && !p.is_empty())
            .with_context(|| format!("--workload {w:?}: expected NAME=KUBECONFIG-PATH"))?;
        clusters.push((
            SimConfig {
                cluster_name: name.to_string(),
                port: 0,
                seed: config.seed.wrapping_add(clusters.len() as u64),
                ..config.clone()
            },
            path.into(),
        ));
    }
    super::runtime()?
        .block_on(tidemark_sim::run_managed_until_signal(
            (management, management_kubeconfig),
            clusters,
        ))
        .context("sim")?;
    Ok(ExitCode::SUCCESS)
}
