//! Command-line interface.

/// Sends one request through the SDK client (failover, the token, the retry budget of the
/// command's scope) and yields the reply message: `rpc!(client, kv.put(req)).await?`.
macro_rules! rpc {
    ($client:expr, $service:ident . $method:ident ($req:expr)) => {
        $client.sdk().unary($req, |mut s, r| async move { s.$service.$method(r).await })
    };
}

mod audit;
mod auth;
mod client;
mod dev;
mod harden;
mod kv;
mod operator;
mod output;
mod policy;
mod rotation;
mod snapshot;
mod token;
mod watch;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub use client::{Client, Scope};

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
    /// One JSON value per line (arrays: one element per line), for log shippers and `jq`.
    Jsonl,
}

#[derive(Parser)]
#[command(name = "arca", version, about = "Arca: a Raft-replicated secrets manager")]
pub struct Args {
    /// Address of a node's client API. Several, comma-separated, let a command fail over
    /// between members; commands about one node (status, unseal, seal, init, join,
    /// generate-root, rekey) talk to the first only.
    #[arg(long, global = true, env = "ARCA_ADDR", default_value = "https://127.0.0.1:8200")]
    pub addr: String,
    /// CA certificate (PEM) that signed the node's certificate.
    #[arg(long, global = true, env = "ARCA_CACERT")]
    pub cacert: Option<PathBuf>,
    /// Token for authenticated requests. Default: the one `arca login` stored in ~/.arca-token.
    #[arg(long, global = true, env = "ARCA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Client certificate (PEM) to present, for `arca login cert`.
    #[arg(long, global = true, env = "ARCA_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, env = "ARCA_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
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
        /// Log line format (the level is the config's `log_level`, or `RUST_LOG`).
        #[arg(long, value_enum, env = "ARCA_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
    },
    /// Seal status and health of the node at ARCA_ADDR.
    Status,
    /// Cluster administration.
    #[command(subcommand)]
    Operator(operator::OperatorCommand),
    /// Versioned key/value secrets.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Tokens: create, look up, renew, revoke, capabilities.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Path policies (Vault HCL).
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Log in with an auth method; prints the token and stores it in ~/.arca-token.
    #[command(subcommand)]
    Login(auth::LoginCommand),
    /// AppRole roles, role ids and secret ids.
    #[command(subcommand)]
    Approle(auth::AppRoleCommand),
    /// TLS-certificate and JWT login configuration.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// The audit trail: list, tail, export, verify, hash.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Automatic rotation: set, now, status, disable; command rotator functions.
    #[command(subcommand)]
    Rotation(rotation::RotationCommand),
    /// Streams committed changes under the prefixes (paths, versions; never values) until
    /// interrupted. `--after SEQ` resumes after a position a previous watch printed.
    Watch {
        #[arg(required = true)]
        prefixes: Vec<String>,
        #[arg(long)]
        after: Option<u64>,
    },
    /// Run next to an application: log in, render secrets into files (templates) or the
    /// application's environment (exec mode), and render again the moment they change.
    Agent {
        /// Agent configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Log line format.
        #[arg(long, value_enum, env = "ARCA_LOG_FORMAT", default_value = "text")]
        log_format: LogFormat,
    },
    /// Development helpers: a local cluster, certificates.
    #[command(subcommand)]
    Dev(dev::DevCommand),
}

pub async fn run(args: Args) -> CliResult {
    let token = args.token.clone().or_else(stored_token);
    let identity = args.client_cert.as_deref().zip(args.client_key.as_deref());
    let connect = |scope| Client::connect(&args.addr, args.cacert.as_deref(), token.as_deref(), identity, scope);
    let client = || connect(Scope::Cluster);
    match args.command {
        Command::Server { config, dev, log_format } => {
            if dev {
                dev::server_dev(&args.addr, log_format).await
            } else {
                let path = config.expect("clap requires --config without --dev");
                let config = arca_server::Config::load(&path)?;
                init_logging(&config.log_level, log_format);
                harden::harden(!config.disable_mlock);
                Ok(arca_server::run(config, arca_server::wait_for_signal()).await?)
            }
        }
        Command::Status => operator::status(&connect(Scope::Node).await?, args.format).await,
        Command::Operator(cmd) if cmd.is_local() => operator::run_local(cmd, args.format),
        Command::Operator(cmd) => {
            let scope = if cmd.is_about_one_node() { Scope::Node } else { Scope::Cluster };
            operator::run(cmd, &connect(scope).await?, args.format).await
        }
        Command::Kv(cmd) => kv::run(cmd, &client().await?, args.format).await,
        Command::Token(cmd) => token::run(cmd, &client().await?, args.format).await,
        Command::Policy(cmd) => policy::run(cmd, &client().await?, args.format).await,
        Command::Login(cmd) => auth::login(cmd, &client().await?, args.format).await,
        Command::Approle(cmd) => auth::approle(cmd, &client().await?, args.format).await,
        Command::Auth(cmd) => auth::auth(cmd, &client().await?, args.format).await,
        Command::Audit(cmd) => audit::run(cmd, &client().await?, args.format).await,
        Command::Rotation(cmd) => rotation::run(cmd, &client().await?, args.format).await,
        Command::Watch { prefixes, after } => watch::run(&client().await?, prefixes, after, args.format).await,
        Command::Agent { config, log_format } => {
            let config = arca_agent::Config::load(&config).map_err(|e| CliError::usage(e.to_string()))?;
            init_logging("info", log_format);
            match arca_agent::run(config).await {
                Ok(0) => Ok(()),
                Ok(code) => Err(CliError { message: String::new(), code: u8::try_from(code).unwrap_or(1) }),
                Err(e @ arca_agent::Error::Config(_)) => Err(CliError::usage(e.to_string())),
                Err(e) => Err(CliError::new(e.to_string())),
            }
        }
        Command::Dev(cmd) => dev::run(cmd).await,
    }
}

/// Where `arca login` keeps the token: `~/.arca-token`.
fn token_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".arca-token"))
}

/// The token `arca login` stored, used when ARCA_TOKEN and --token are absent.
fn stored_token() -> Option<String> {
    let text = std::fs::read_to_string(token_file()?).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

/// Writes the token to ~/.arca-token, readable by the user only.
fn store_token(token: &str) -> CliResult {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = token_file().ok_or_else(|| CliError::new("HOME is not set; cannot store the token (use --no-store)"))?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
        // An existing file keeps its old mode through `open`; tighten it explicitly.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        f.write_all(token.as_bytes())
    };
    write().map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))
}

/// One line from stdin, for values kept off the command line (tokens, secret ids).
fn read_stdin_line(what: &str) -> CliResult<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| CliError::new(format!("reading the {what} from stdin: {e}")))?;
    Ok(line.trim().to_string())
}

/// Parses a duration flag: `30s`, `15m`, `1h`, `1h30m`, `7d`; absent: 0 (the server's default).
fn parse_duration(flag: &str, value: Option<&str>) -> CliResult<u64> {
    let Some(s) = value else { return Ok(0) };
    arca_core::parse_duration_secs(s).map_err(|e| CliError::usage(format!("{flag}: {e}")))
}

/// How the server writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line (timestamp, level, target, span fields, message), for log
    /// shippers.
    Json,
}

/// Arca's own crates: a bare `log_level` applies to these.
const OWN_CRATES: &[&str] =
    &["arca", "arca_server", "arca_core", "arca_raft", "arca_storage", "arca_crypto", "arca_client", "arca_agent"];

/// The filter a configured level means. A bare level (`info`) is Arca's own events at that
/// level, the libraries' at WARN and openraft's and rustls's at ERROR, so an operator's console is not
/// filled with openraft's routine protocol races ("vote changed", "membership_log_id changed;
/// ignore", "remove all replication", which it logs at INFO and WARN); Arca logs what an
/// operator acts on (joins, removals, refusals, seal state) itself. At `debug` and `trace` the
/// libraries speak at INFO. A full filter (`info,openraft=debug`) is taken as written.
pub fn log_filter(level: &str) -> String {
    let level = level.trim();
    let bare = ["error", "warn", "info", "debug", "trace", "off"].contains(&level.to_ascii_lowercase().as_str());
    if !bare {
        return level.to_string();
    }
    let libraries = if matches!(level.to_ascii_lowercase().as_str(), "debug" | "trace") { "info" } else { "warn" };
    let libraries =
        if level.eq_ignore_ascii_case("error") || level.eq_ignore_ascii_case("off") { level } else { libraries };
    // rustls warns about what a peer sent (an IP address as the server name, from wrk and
    // other OpenSSL clients, one line per connection): at WARN any client could write to the
    // log once per TLS handshake. The node's own account of a failed handshake is at debug.
    let quieter: &[&str] = if libraries == "warn" { &["openraft=error", "rustls=error"] } else { &[] };
    std::iter::once(libraries.to_string())
        .chain(quieter.iter().map(|q| q.to_string()))
        .chain(OWN_CRATES.iter().map(|c| format!("{c}={level}")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Logs to stderr; `RUST_LOG` overrides the configured level.
pub fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_filter(level)));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_level_quiets_the_libraries() {
        let f = log_filter("info");
        assert!(
            f.starts_with("warn,openraft=error,rustls=error,")
                && f.contains("arca_raft=info")
                && f.contains("arca=info"),
            "{f}"
        );
        assert!(log_filter("debug").starts_with("info,") && log_filter("debug").contains("arca_core=debug"));
        assert!(log_filter("error").starts_with("error,"));
        assert_eq!(log_filter("info,openraft=debug"), "info,openraft=debug");
        for level in ["info", "debug", "warn", "error", "off", "trace"] {
            assert!(tracing_subscriber::EnvFilter::try_new(log_filter(level)).is_ok(), "{level}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("--ttl", Some("30s")).ok(), Some(30));
        assert_eq!(parse_duration("--ttl", Some("15m")).ok(), Some(900));
        assert_eq!(parse_duration("--ttl", Some("2d")).ok(), Some(172800));
        assert_eq!(parse_duration("--ttl", None).ok(), Some(0));
        assert!(parse_duration("--ttl", Some("1w")).unwrap_err().message.starts_with("--ttl: invalid duration unit"));
    }
}
