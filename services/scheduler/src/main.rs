use clap::Parser;
use shoal_scheduler::SchedulerConfig;
use shoal_settings::{ConfigArgs, Overrides, ServiceFlags, StateFlags};

/// shoal-scheduler: places pending tasks on nodes.
#[derive(Debug, Parser)]
#[command(name = "shoal-scheduler", version)]
struct Args {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    service: ServiceFlags,
    #[command(flatten)]
    state: StateFlags,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let flags = args.state.apply(args.service.apply(Overrides::new()));
    let cfg: SchedulerConfig = shoal_settings::load_or_exit(&args.config, &flags);
    shoal_grpc_host::launch(cfg, shoal_scheduler::run)
}
