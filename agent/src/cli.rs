//! Command-line arguments (clap derive only; turned into validated values by the commands).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// tidemark: upgrade Kubernetes clusters from a fleet git repository.
#[derive(Debug, Parser)]
#[command(name = "tidemark", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TIDEMARK_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// Log filter, as RUST_LOG (e.g. `info`, `tidemark=debug`).
    #[arg(long, global = true, default_value = "warn", env = "TIDEMARK_LOG")]
    pub log: String,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Output format of reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// `file:line:col: field: message` lines.
    Text,
    /// A JSON document.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a fleet repo (a directory, or a git URL whose default branch is checked):
    /// schema, references, version skew, waves, selectors. Exit 0 valid, 1 invalid,
    /// 2 could not read.
    Validate(ValidateArgs),
    /// Print the JSON Schema of fleet-repo documents.
    Schema,
    /// Print the resolved desired state of one cluster and the commit it comes from.
    Desired(DesiredArgs),
    /// Run the whole loop on this machine: simulated clusters for the example fleet, one
    /// agent each, an upgrade rolled out wave by wave.
    #[cfg(feature = "sim")]
    Demo(DemoArgs),
    /// Run the control loop for this cluster (or one pass with --once).
    Agent(AgentArgs),
    /// Show the steps the agent would take next for one cluster, and why, without doing
    /// anything.
    Plan(PlanCommand),
    /// Show the fleet by wave: each cluster's phase, versions, whether it runs its wave
    /// tag's commit, and how long ago its agent reported. Exit 1 when any cluster is
    /// Blocked or Failed.
    Status(StatusArgs),
    /// Move a wave's tag to the commit the previous wave's tag names, once every cluster of
    /// the previous wave has applied it and stayed Converged for that wave's soak.
    /// Exit 0 promoted (or nothing to do), 1 refused.
    Promote(PromoteArgs),
    /// Print the ClusterRole one cluster's agent needs: the kinds its components render at
    /// every wave tag (rendered with helm, no cluster needed), what health reads, the rules
    /// of the Roles its components render, and the agent's own needs.
    Rbac(RbacArgs),
    /// Run a simulated Kubernetes cluster on 127.0.0.1 (for tests and the demo), or talk to
    /// its simulated cloud (`tidemark sim ctl ...`).
    #[cfg(feature = "sim")]
    Sim(SimArgs),
}

/// `tidemark plan`
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Which cluster and fleet repo.
    #[command(flatten)]
    pub desired: DesiredArgs,
    /// Kubeconfig of the cluster; default `KUBECONFIG`, `~/.kube/config` or in-cluster.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace whose annotations hold the agent's status.
    #[arg(
        long,
        env = "TIDEMARK_STATUS_NAMESPACE",
        default_value = "tidemark-system"
    )]
    pub status_namespace: String,
    /// How components are rendered and checked.
    #[command(flatten)]
    pub components: ComponentArgs,
}

/// `tidemark plan`: the agent's view of one cluster, or (`--offline`) git's view of many.
#[derive(Debug, Args)]
pub struct PlanCommand {
    /// The cluster, its fleet repo and how components render.
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Planning from git alone.
    #[command(flatten)]
    pub offline: OfflineArgs,
}

/// `tidemark plan --offline`.
#[derive(Debug, Args)]
pub struct OfflineArgs {
    /// From git alone, no cluster: the route of every selected cluster (`--all`, `--wave`,
    /// or `--selector`) if its wave tag moved to `--to`. Exit 1 when a cluster would be
    /// Blocked or held by a pre-flight finding.
    #[arg(long)]
    pub offline: bool,
    /// With --offline: every cluster of the fleet.
    #[arg(long, requires = "offline")]
    pub all: bool,
    /// With --offline: the clusters of this wave.
    #[arg(long, requires = "offline", conflicts_with = "all")]
    pub wave: Option<String>,
    /// With --offline: the commit the wave tags would move to (a commit id, a branch or a
    /// tag); default the followed branch.
    #[arg(long, requires = "offline")]
    pub to: Option<String>,
    /// With --offline: the time maintenance windows are judged at (RFC 3339); default now.
    #[arg(long, requires = "offline")]
    pub at: Option<String>,
    /// With --offline: output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// `tidemark rbac`
#[derive(Debug, Args)]
pub struct RbacArgs {
    /// Which cluster and fleet repo.
    #[command(flatten)]
    pub desired: DesiredArgs,
    /// Name of the ClusterRole printed.
    #[arg(long, default_value = "tidemark")]
    pub name: String,
    /// Namespace of the agent's status record and Lease.
    #[arg(
        long,
        env = "TIDEMARK_STATUS_NAMESPACE",
        default_value = "tidemark-system"
    )]
    pub status_namespace: String,
    /// How components are rendered.
    #[command(flatten)]
    pub components: ComponentArgs,
}

/// Rendering and checking helm components.
#[derive(Clone, Debug, Args)]
pub struct ComponentArgs {
    /// The `helm` executable that renders components (`helm template`).
    #[arg(long, env = "TIDEMARK_HELM_BIN", default_value = "helm")]
    pub helm_bin: PathBuf,
    /// Longest one `helm template` may take.
    #[arg(long, env = "TIDEMARK_HELM_TIMEOUT", default_value = "2m")]
    pub helm_timeout: String,
    /// How often applied components are compared with their render, and drift (objects
    /// edited or deleted by hand) corrected.
    #[arg(long, env = "TIDEMARK_DRIFT_INTERVAL", default_value = "10m")]
    pub drift_interval: String,
    /// Longest a pass waits for an applied component to become healthy before reporting
    /// it Progressing (it fails only after its own `timeout`, default 5m).
    #[arg(long, env = "TIDEMARK_COMPONENT_WAIT", default_value = "30s")]
    pub component_wait: String,
    /// Credentials of private chart repositories and OCI registries: a YAML file mapping
    /// repository URLs to the files holding user names, passwords or tokens, CA bundles
    /// (README, "Private charts"). It names files only; they are read at every render.
    #[arg(long, env = "TIDEMARK_CHART_CREDENTIALS")]
    pub chart_credentials: Option<PathBuf>,
    /// Also sweep every kind the API server lists for objects labelled for a component,
    /// to prune (and check the ownership of) objects no inventory records: applied by a
    /// release before inventories, or by a pass that died before recording them. Needs
    /// `list` on every kind; without it, prune reads only the inventoried objects by name.
    #[arg(long, env = "TIDEMARK_PRUNE_SCAN")]
    pub prune_scan: bool,
}

impl ComponentArgs {
    /// The helm executable and how component steps wait, or which flag is wrong.
    pub fn settings(
        &self,
    ) -> anyhow::Result<(crate::component::helm::Helm, crate::converge::Settings)> {
        use anyhow::Context;
        let Self {
            helm_bin,
            helm_timeout,
            drift_interval,
            component_wait,
            chart_credentials,
            prune_scan,
        } = self;
        let dur = |v: &str, flag: &str| -> anyhow::Result<std::time::Duration> {
            Ok(v.parse::<tidemark_schema::Duration>()
                .with_context(|| format!("--{flag}"))?
                .as_std())
        };
        let credentials = match chart_credentials {
            None => Default::default(),
            Some(path) => crate::config::chart_credentials(path).context("--chart-credentials")?,
        };
        let helm = crate::component::helm::Helm {
            bin: helm_bin.clone(),
            timeout: dur(helm_timeout, "helm-timeout")?,
            credentials,
        };
        let settings = crate::converge::Settings {
            health_wait: dur(component_wait, "component-wait")?,
            crd_wait: std::time::Duration::from_secs(60),
            drift_interval: dur(drift_interval, "drift-interval")?,
            prune_scan: *prune_scan,
        };
        Ok((helm, settings))
    }
}

/// `tidemark demo`
#[cfg(feature = "sim")]
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The fleet repo to roll out (a directory; it is copied, not changed).
    #[arg(long, default_value = "fleet-repo-example")]
    pub fleet: PathBuf,
    /// Time factor of the simulated clusters.
    #[arg(long, default_value_t = 40.0)]
    pub speed: f64,
    /// Nodes per node group.
    #[arg(long, default_value_t = 2)]
    pub nodes_per_group: u32,
    /// Give up after this long.
    #[arg(long, default_value = "110s")]
    pub timeout: String,
    /// The `helm` executable that renders components (`helm template`); default `helm`
    /// on PATH, else `.tools/helm/v4.1.4/helm` (provisioned by `scripts/setup-helm.sh`).
    #[arg(long, env = "TIDEMARK_HELM_BIN")]
    pub helm_bin: Option<PathBuf>,
    /// Clone the demo's fleet repo (its two commits and wave tags) into this new directory
    /// at the end, e.g. to compare `plan --offline` with what the agents did.
    #[arg(long)]
    pub keep_repo: Option<PathBuf>,
    /// The soak of every wave in the demo (the example fleet's are 10m and 1h); waves are
    /// promoted with `tidemark promote`'s rules once the previous wave soaked this long.
    #[arg(long, default_value = "3s")]
    pub soak: String,
}

/// `tidemark agent`
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Which cluster, which fleet repo, which cluster API server.
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Time between passes.
    #[arg(long, env = "TIDEMARK_INTERVAL", default_value = "30s")]
    pub interval: String,
    /// Run one pass, print its phase and message, and exit.
    #[arg(long)]
    pub once: bool,
    /// This replica's identity in the leader-election Lease (default: pod or host name
    /// and process id).
    #[arg(long, env = "TIDEMARK_IDENTITY")]
    pub identity: Option<String>,
    /// How long the Lease stays valid without renewal; a standby replica takes over after.
    #[arg(long, env = "TIDEMARK_LEASE_DURATION", default_value = "15s")]
    pub lease_duration: String,
    /// Address of /healthz, /readyz and /metrics (port 0 picks a free port; see the log).
    #[arg(long, env = "TIDEMARK_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
    /// Also publish the status record to the fleet repo as `refs/tidemark/status/<cluster>`
    /// (on each change of phase or revision, and every 10 minutes), with the git
    /// credentials of the fetch: `tidemark status --from-git` and `tidemark promote` then
    /// need read access to git alone. The agent needs push rights to that ref namespace.
    #[arg(long, env = "TIDEMARK_REPORT_REF")]
    pub report_ref: bool,
}

/// Which fleet, and where its clusters' status records are read: kubeconfig contexts, or
/// the status refs agents publish to git with `--report-ref`.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// The fleet repo: URL (`https://`, `ssh://`, `git://`, `file://`, scp-like) or path.
    #[arg(long, env = "TIDEMARK_REPO")]
    pub repo: String,
    /// Branch holding fleet.yaml and the cluster manifests; default the remote's HEAD.
    #[arg(long, env = "TIDEMARK_BRANCH")]
    pub branch: Option<String>,
    /// Kubeconfig file whose contexts are read (repeat for several); default the files in
    /// KUBECONFIG, else ~/.kube/config. A cluster is matched to its manifest by the
    /// `tidemark.dev/cluster` annotation its agent writes.
    #[arg(long = "kubeconfig", value_name = "FILE")]
    pub kubeconfigs: Vec<PathBuf>,
    /// Context to read (repeat for several); default every context of the files.
    #[arg(long = "context", value_name = "NAME")]
    pub contexts: Vec<String>,
    /// Read the records from `refs/tidemark/status/*` in the fleet repo (agents run with
    /// `--report-ref`) instead of the clusters: read access to git is all it needs.
    #[arg(long, conflicts_with_all = ["kubeconfigs", "contexts"])]
    pub from_git: bool,
    /// How long one cluster may take to answer before it is shown unreachable.
    #[arg(long, default_value = "5s")]
    pub timeout: String,
    /// Namespace whose annotations hold each agent's status.
    #[arg(
        long,
        env = "TIDEMARK_STATUS_NAMESPACE",
        default_value = "tidemark-system"
    )]
    pub status_namespace: String,
    /// Git access.
    #[command(flatten)]
    pub git: GitArgs,
}

/// Output format of `status` and `promote`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ViewFormat {
    /// A table for people.
    Text,
    /// A JSON document.
    Json,
    /// A YAML document.
    Yaml,
}

/// `tidemark status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Which fleet and where its records are read.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = ViewFormat::Text)]
    pub output: ViewFormat,
    /// Redraw every --interval until interrupted.
    #[arg(long)]
    pub watch: bool,
    /// Time between redraws with --watch.
    #[arg(long, default_value = "5s")]
    pub interval: String,
    /// Print the promotion log (refs/tidemark/promotions), newest first, instead.
    #[arg(long, conflicts_with = "watch")]
    pub history: bool,
    /// Most promotions --history prints.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

/// `tidemark promote`
#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The wave whose tag moves.
    pub wave: String,
    /// Which fleet and where its records are read.
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// For the first wave: the commit (or a ref the fleet repo has) to move to; default
    /// the head of the branch.
    #[arg(long, value_name = "REV")]
    pub to: Option<String>,
    /// Print the decision only; move nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Sign the tag with this SSH private key (OpenSSH format, no passphrase), as `git
    /// tag -s` with gpg.format=ssh does; agents with --allowed-signers accept it when the
    /// key is listed there.
    #[arg(long, value_name = "FILE", env = "TIDEMARK_SIGN_KEY")]
    pub sign_key: Option<PathBuf>,
    /// Promote during a freeze window of fleet.yaml; needs --reason, recorded in the log.
    #[arg(long, requires = "reason")]
    pub override_freeze: bool,
    /// Why the freeze is overridden.
    #[arg(long, requires = "override_freeze")]
    pub reason: Option<String>,
    /// How far an agent's clock may be from this machine's: soak is judged on the agents'
    /// own times, and a clock up to this far behind cannot shorten it.
    #[arg(long, default_value = "30s")]
    pub clock_skew: String,
    /// Who promotes, `Name <email>`, recorded in the tag and the log; default git's
    /// user.name and user.email, else the login name.
    #[arg(long, env = "TIDEMARK_PROMOTED_BY")]
    pub by: Option<String>,
    /// Output format of the decision.
    #[arg(long, short = 'o', value_enum, default_value_t = ViewFormat::Text)]
    pub output: ViewFormat,
}

/// `tidemark sim`: a simulated cluster on 127.0.0.1.
///
/// By default one self-managed cluster: its Cluster API objects are in itself. With
/// `--management-kubeconfig`, a management cluster holds the Cluster API objects (Cluster,
/// KubeadmControlPlane, MachineDeployments, Machines, the `<cluster>-kubeconfig` Secret) of the
/// workload cluster written to `--kubeconfig`, and of one more workload cluster per
/// `--workload NAME=PATH` (each like the first: same versions, node groups and topology).
/// All run in this one process; `tidemark sim ctl` through a workload's kubeconfig acts on that
/// cluster, through the management's it shows every cluster.
#[cfg(feature = "sim")]
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SimArgs {
    /// `ctl`: ask the simulated cloud for something.
    #[command(subcommand)]
    pub command: Option<SimCommand>,
    /// Where to write the sim's kubeconfig.
    #[arg(long, default_value = "sim.kubeconfig")]
    pub kubeconfig: PathBuf,
    /// Initial control-plane version.
    #[arg(long, default_value = "1.28.9")]
    pub version: String,
    /// Node groups and their node counts.
    #[arg(long, default_value = "general=3")]
    pub node_groups: String,
    /// Initial kubelet versions of groups not at --version, e.g. `gpu=1.27.16`.
    #[arg(long)]
    pub node_versions: Option<String>,
    /// Time factor (20 makes rollouts 20 times faster).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Injected faults, e.g. `latency=20ms,error-rate=0.05` (see the sim's docs).
    #[arg(long)]
    pub faults: Option<String>,
    /// Seed of names and fault decisions (a failing run can be replayed).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Cluster name (names the KubeadmControlPlane and MachineDeployments).
    #[arg(long, default_value = "sim")]
    pub cluster_name: String,
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// What pods do: `run` (scheduled, started, Ready after a while) or `pending` (no
    /// scheduler, no kubelet: they stay Pending, no workload ever becomes available).
    #[arg(long, default_value = "run")]
    pub pods: tidemark_sim::PodLifecycle,
    /// An aggregated API that is registered but never available, by APIService name
    /// (`v1beta1.metrics.k8s.io`): listed in discovery, its group-version answers 503.
    /// Repeatable.
    #[arg(long = "unavailable-api-service")]
    pub unavailable_api_services: Vec<String>,
    /// Also run a management cluster holding the Cluster API objects, and write its
    /// kubeconfig here (without: the cluster is self-managed).
    #[arg(long)]
    pub management_kubeconfig: Option<PathBuf>,
    /// Another workload cluster of the management cluster, `NAME=KUBECONFIG-PATH`
    /// (repeatable; needs --management-kubeconfig).
    #[arg(long = "workload", requires = "management_kubeconfig")]
    pub workloads: Vec<String>,
    /// Versions of the Cluster API groups served: `v1beta2` (v1beta1 and v1beta2, v1beta2
    /// stored and preferred, as Cluster API 1.11) or `v1beta1` (v1beta1 only).
    #[arg(long, default_value = "v1beta2")]
    pub capi_api: tidemark_sim::CapiApi,
    /// The cluster is built from a ClusterClass: `Cluster.spec.topology.version` drives the
    /// control plane and the MachineDeployments.
    #[arg(long)]
    pub topology: bool,
}

/// `tidemark sim ctl`
#[cfg(feature = "sim")]
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// `upgrade-control-plane [VERSION]`, `upgrade-node-group [GROUP [VERSION]]`,
    /// `replace-node [NODE [VERSION]]`, `state`, `faults [SPEC]`; missing arguments come from
    /// TIDEMARK_TARGET_VERSION, TIDEMARK_NODE_GROUP and TIDEMARK_NODE_NAME.
    Ctl {
        /// Kubeconfig of the sim.
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: PathBuf,
        /// The request and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `tidemark validate`
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Directory of a fleet repo, or a git remote (URL, path of a git repo).
    #[arg(default_value = ".")]
    pub repo: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Branch to check when REPO is a git remote; default the remote's HEAD.
    #[arg(long)]
    pub branch: Option<String>,
    /// Also check that every wave tag is signed by a key in this allowed-signers file, as
    /// `agent --allowed-signers` requires (REPO must then be a git repository).
    #[arg(long)]
    pub allowed_signers: Option<PathBuf>,
    /// Also render every component of every cluster with helm, at the default branch and
    /// at its wave tag, for the declared control-plane version: report render errors, APIs
    /// that version no longer serves, and objects two components render.
    #[arg(long)]
    pub render: bool,
    /// The `helm` executable for --render.
    #[arg(long, env = "TIDEMARK_HELM_BIN", default_value = "helm")]
    pub helm_bin: PathBuf,
    /// How many `helm template` processes --render runs at once (default: one per CPU).
    #[arg(long)]
    pub render_concurrency: Option<usize>,
    /// Git access.
    #[command(flatten)]
    pub git: GitArgs,
}

/// `tidemark desired`
#[derive(Debug, Args)]
pub struct DesiredArgs {
    /// The fleet repo: URL (`https://`, `ssh://`, `git://`, `file://`, scp-like) or path.
    #[arg(long, env = "TIDEMARK_REPO")]
    pub repo: String,
    /// Identity selector of this cluster's manifest, e.g. `cluster=prod-eu-1` (required,
    /// except by `plan --offline`, where it selects clusters by their labels).
    #[arg(long, env = "TIDEMARK_SELECTOR")]
    pub selector: Option<String>,
    /// Branch to follow; default the remote's HEAD.
    #[arg(long, env = "TIDEMARK_BRANCH")]
    pub branch: Option<String>,
    /// Follow a wave tag only when it is an annotated tag signed with SSH (namespace `git`)
    /// by a key in this file (the `ssh-keygen` allowed-signers format). Clusters without a
    /// wave follow the branch and are not affected.
    #[arg(long, env = "TIDEMARK_ALLOWED_SIGNERS")]
    pub allowed_signers: Option<PathBuf>,
    /// Git access.
    #[command(flatten)]
    pub git: GitArgs,
}

/// How to reach the fleet repo. Secrets come from files or environment variables, never
/// from flags (they would show in `ps`).
#[derive(Debug, Args)]
pub struct GitArgs {
    /// Directory of the bare git cache.
    #[arg(long, env = "TIDEMARK_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// User name for HTTP(S) auth (with a token, e.g. `x-access-token`) or SSH.
    #[arg(long, env = "TIDEMARK_GIT_USERNAME")]
    pub git_username: Option<String>,
    /// File holding the HTTP(S) password or token.
    #[arg(long, env = "TIDEMARK_GIT_PASSWORD_FILE")]
    pub git_password_file: Option<PathBuf>,
    /// HTTP(S) password or token, from the environment only.
    #[arg(skip = std::env::var("TIDEMARK_GIT_PASSWORD").ok())]
    pub git_password_env: Option<String>,
    /// SSH private key file.
    #[arg(long, env = "TIDEMARK_GIT_SSH_KEY")]
    pub git_ssh_key: Option<PathBuf>,
    /// known_hosts file the SSH server's key must be in.
    #[arg(long, env = "TIDEMARK_GIT_KNOWN_HOSTS")]
    pub git_known_hosts: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
