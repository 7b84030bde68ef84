//! `tidemark sim` and `tidemark sim ctl`: the simulated cluster of `sim/`.

use std::process::ExitCode;

use anyhow::Context;
use tidemark_sim::{FaultSpec, SimConfig};

use crate::cli::{SimArgs, SimCommand};

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
    } = args;
    if let Some(SimCommand::Ctl { kubeconfig, args }) = command {
        let out = super::runtime()?
            .block_on(tidemark_sim::ctl(&kubeconfig, &args))
            .context("sim ctl")?;
        println!("{}", out.trim_end());
        return Ok(ExitCode::SUCCESS);
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
        ..SimConfig::default()
    };
    super::runtime()?
        .block_on(tidemark_sim::run_until_signal(config, kubeconfig))
        .context("sim")?;
    Ok(ExitCode::SUCCESS)
}
