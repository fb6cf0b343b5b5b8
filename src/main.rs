//! `spacepulse`: the command line over the pipeline's crates.

mod cli;
mod commands;
mod config;
mod demo;
mod metrics;
mod pipeline;
mod run;
mod server;
mod sql;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, LogFormat};

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_env("SPACEPULSE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,spacepulse=info,ingest=info,lake=info,datasets=info,jobs=info,query=info,deltalake_core=error,buoyant_kernel=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

/// An error the user can fix (a bad flag value or input): exit code 2, like clap's.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Flags over variables over the config file over the built-in defaults.
fn parse() -> Result<Cli, String> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut cmd = Cli::command();
    if let Some((path, named)) = config::config_path(&args)
        && (named || path.exists())
    {
        let values = config::load(&path, &config::known_vars(&cmd))?;
        cmd = config::apply(cmd, &values);
    }
    let matches = cmd.get_matches_from(args);
    Cli::from_arg_matches(&matches).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(msg) => {
            eprintln!("error: {msg}\nhint: spacepulse --help");
            return ExitCode::from(2);
        }
    };
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Ingest(args) => commands::ingest(args).await,
            Command::Lake(cmd) => commands::lake(cmd).await,
            Command::Datasets(cmd) => commands::datasets(cmd).await,
            Command::Jobs(cmd) => metrics::jobs(cmd).await,
            Command::Campaigns(cmd) => metrics::campaigns(cmd).await,
            Command::Sql(args) => sql::sql(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Serve(args) => server::serve(args).await,
            Command::Run(args) => run::run(args).await,
            Command::Accounts(cmd) => server::accounts(cmd),
            Command::Tokens(cmd) => server::tokens(cmd),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let usage = e.downcast_ref::<UsageError>().is_some()
                || matches!(
                    e.downcast_ref::<ingest::Error>(),
                    Some(ingest::Error::Usage(_) | ingest::Error::Input { .. })
                )
                || matches!(
                    e.downcast_ref::<lake::Error>(),
                    Some(lake::Error::BadLocation { .. } | lake::Error::Registry(_))
                )
                || matches!(e.downcast_ref::<jobs::Error>(), Some(jobs::Error::Usage(_)));
            if usage {
                eprintln!("hint: spacepulse --help");
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
