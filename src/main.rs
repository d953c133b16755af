//! The `arca` command. The server and the operator/KV commands arrive with the server issue;
//! until then the binary reports its version and what it is.

use std::process::ExitCode;

const USAGE: &str = "arca: a Raft-replicated secrets manager

usage: arca --version | --help

The server and client commands are not part of this build yet.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["--version"] | ["-V"] | ["version"] => {
            println!("arca {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        [] | ["--help"] | ["-h"] | ["help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        other => {
            eprintln!("arca: unknown command {:?}\n\n{USAGE}", other.join(" "));
            ExitCode::from(2)
        }
    }
}
