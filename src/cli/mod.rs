//! Command-line interface.

mod client;
mod dev;
mod kv;
mod operator;
mod output;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use client::Client;

/// A failed command: the one line printed after `error: `, and the exit code.
pub struct CliError {
    pub message: String,
    pub code: u8,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> Self {
        CliError { message: message.into(), code: 1 }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        CliError { message: message.into(), code: 2 }
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        let msg = s.message();
        // A gRPC status carries its own readable message; transport failures carry less.
        CliError::new(if msg.is_empty() { format!("{:?}", s.code()) } else { msg.to_string() })
    }
}

impl From<arca_server::Error> for CliError {
    fn from(e: arca_server::Error) -> Self {
        match e {
            arca_server::Error::Config(_) => CliError::usage(e.to_string()),
            other => CliError::new(other.to_string()),
        }
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Parser)]
#[command(name = "arca", version, about = "Arca: a Raft-replicated secrets manager")]
pub struct Args {
    /// Address of a node's client API.
    #[arg(long, global = true, env = "ARCA_ADDR", default_value = "https://127.0.0.1:8200")]
    pub addr: String,
    /// CA certificate (PEM) that signed the node's certificate.
    #[arg(long, global = true, env = "ARCA_CACERT")]
    pub cacert: Option<PathBuf>,
    /// Token for authenticated requests.
    #[arg(long, global = true, env = "ARCA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub format: Format,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a node.
    Server {
        /// Node configuration file (TOML).
        #[arg(long, required_unless_present = "dev")]
        config: Option<PathBuf>,
        /// One initialized, unsealed node in a temporary directory, for trying Arca out.
        #[arg(long, conflicts_with = "config")]
        dev: bool,
    },
    /// Seal status and health of the node at ARCA_ADDR.
    Status,
    /// Cluster administration.
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// Versioned key/value secrets.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Tokens.
    #[command(subcommand)]
    Token(operator::TokenCommand),
    /// Development helpers: a local cluster, certificates.
    #[command(subcommand)]
    Dev(dev::DevCommand),
}

pub async fn run(args: Args) -> CliResult {
    let client = || Client::connect(&args.addr, args.cacert.as_deref(), args.token.as_deref());
    match args.command {
        Command::Server { config, dev } => {
            if dev {
                dev::server_dev(&args.addr).await
            } else {
                let path = config.expect("clap requires --config without --dev");
                let config = arca_server::Config::load(&path)?;
                init_logging(&config.log_level);
                Ok(arca_server::run(config, arca_server::wait_for_signal()).await?)
            }
        }
        Command::Status => operator::status(&client().await?, args.format).await,
        Command::Operator(cmd) => operator::run(cmd, &client().await?, args.format).await,
        Command::Kv(cmd) => kv::run(cmd, &client().await?, args.format).await,
        Command::Token(cmd) => operator::token(cmd, &client().await?, args.format).await,
        Command::Dev(cmd) => dev::run(cmd).await,
    }
}

/// Logs to stderr; `RUST_LOG` overrides the configured level.
pub fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}
