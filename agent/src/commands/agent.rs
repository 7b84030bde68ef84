//! `tidemark agent`: the control loop (or one pass with `--once`), through the runner.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use tidemark_schema::Duration;

use crate::cli::{AgentArgs, PlanArgs};
use crate::config::{fleet_source, pass_ctx};
use crate::keys;
use crate::runner::admin::{self, AdminState};
use crate::runner::lease::{self, LeaseConfig};
use crate::runner::metrics::Metrics;
use crate::runner::{self, Observers};

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let AgentArgs {
        plan:
            PlanArgs {
                desired: source_args,
                kubeconfig,
                status_namespace,
                components,
            },
        interval,
        once,
        identity,
        lease_duration,
        metrics_addr,
        report_ref,
    } = args;
    let source = fleet_source(&source_args)?;
    let interval: Duration = interval.parse().context("--interval")?;
    let lease_duration: Duration = lease_duration.parse().context("--lease-duration")?;
    let (helm, settings) = components.settings()?;
    let repo = source_args.repo;
    super::runtime()?.block_on(async move {
        let client = crate::k8s::client(kubeconfig.as_deref()).await?;
        let identity = identity.unwrap_or_else(lease::default_identity);
        let config = runner::Config {
            interval: interval.as_std(),
            lease: LeaseConfig {
                namespace: status_namespace.clone(),
                name: keys::LEASE_NAME.into(),
                identity: identity.clone(),
                duration: lease_duration.as_std(),
            },
            clock_offset: jiff::SignedDuration::ZERO,
        };
        let reporter = report_ref.then(|| crate::status::Reporter::new(source.clone()));
        let mut ctx = pass_ctx(
            source,
            client,
            status_namespace,
            kubeconfig,
            helm,
            settings,
            &identity,
        );
        ctx.reporter = reporter;
        if once {
            match runner::run_once(&ctx, &config).await {
                Ok(report) => {
                    println!("phase: {}\nmessage: {}", report.phase, report.message);
                    for step in &report.executed {
                        println!("executed: {step}");
                    }
                }
                Err(why) => println!("phase: Waiting\nmessage: {why}"),
            }
            return Ok(ExitCode::SUCCESS);
        }
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = {
            let prefixed = registry.sub_registry_with_prefix("tidemark");
            ctx.renderer.register(prefixed);
            Metrics::register(prefixed)
        };
        let admin_state = Arc::new(AdminState {
            registry,
            ready: AtomicBool::new(false),
        });
        let bound = admin::serve(metrics_addr, admin_state.clone())
            .await
            .with_context(|| format!("failed to serve health and metrics on {metrics_addr}"))?;
        tracing::info!(addr = %bound, "serving /healthz, /readyz and /metrics");
        // A fleet repo on this machine triggers a pass as soon as its refs change.
        let trigger = Arc::new(tokio::sync::Notify::new());
        let _watcher = runner::watch_local_repo(&repo, trigger.clone());
        let stop = runner::stop_on_signal().context("failed to listen for SIGTERM")?;
        let observers = Observers {
            metrics: Some(&metrics),
            admin: Some(&admin_state),
            on_pass: None,
        };
        runner::run(&ctx, &config, observers, trigger, stop).await;
        Ok(ExitCode::SUCCESS)
    })
}
