//! `spacepulse`: the command line over the pipeline's crates.

/// `println!` that never panics: a reader that went away (a closed pipe, `| head`) must not
/// turn a running command into a crash; what it misses is lost, the command goes on.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `print!` that never panics (see `outln!`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that never panics (see `outln!`).
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod baselines;
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
            errln!("error: {msg}\nhint: spacepulse --help");
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
            errln!("error: cannot start the runtime: {e}");
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
            Command::Accounts(cmd) => server::accounts(cmd).await,
            Command::Tokens(cmd) => server::tokens(cmd),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("error: {e:#}");
            let class = classify(&e);
            if class == lake::Class::Internal {
                tracing::error!(error = %format!("{e:#}"), "internal error (a bug in spacepulse)");
            }
            if class == lake::Class::BadInput {
                errln!("hint: spacepulse --help");
            }
            ExitCode::from(class.exit_code())
        }
    }
}

/// Who must act on `e`: the first error in its chain that knows its class (a usage error of
/// this program's own is the caller's); an error no crate classified is outside trouble
/// (exit 1, never the usage code).
fn classify(e: &anyhow::Error) -> lake::Class {
    use lake::Classify;
    for cause in e.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return lake::Class::BadInput;
        }
        let class = None
            .or_else(|| cause.downcast_ref::<lake::Error>().map(|e| e.class()))
            .or_else(|| cause.downcast_ref::<ingest::Error>().map(|e| e.class()))
            .or_else(|| cause.downcast_ref::<jobs::Error>().map(|e| e.class()))
            .or_else(|| cause.downcast_ref::<query::Error>().map(|e| e.class()))
            .or_else(|| cause.downcast_ref::<datasets::Error>().map(|e| e.class()))
            .or_else(|| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .map(lake::error::io_class)
            });
        if let Some(class) = class {
            return class;
        }
    }
    lake::Class::Unavailable
}
