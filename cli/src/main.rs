//! `shoal`: Swarm's commands against a shoal control plane.

use std::process::ExitCode;

use clap::Parser;
use shoal_cli::{commands, config};

fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    let cfg: config::CliConfig = shoal_settings::load_or_exit(&cli.config_args(), &cli.overrides());
    commands::run(cli, cfg)
}
