//! Serves a sim until Ctrl-C:
//! `cargo run -p tidemark-sim --example serve -- [KUBECONFIG] [SPEED] [run|pending]`.

#[tokio::main]
async fn main() -> Result<(), tidemark_sim::Error> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "/tmp/sim.kubeconfig".into());
    let speed = args.next().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let pods = match args.next() {
        Some(p) => p.parse()?,
        None => tidemark_sim::PodLifecycle::Run,
    };
    let config = tidemark_sim::SimConfig {
        speed,
        pods,
        node_groups: vec![("general".into(), 3), ("gpu".into(), 2)],
        ..Default::default()
    };
    tidemark_sim::run_until_signal(config, path.into()).await
}
