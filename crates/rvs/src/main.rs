//! The `rvs` binary. For now it dispatches `rvs lab`; the daemon (`rvs run`)
//! and administration (`rvs adm`) join it.

pub mod lab;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("lab") => match lab::main(&args[1..]) {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => {
                eprintln!("rvs lab: {e:#}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: rvs lab [OPTIONS]   (rvs lab --help)");
            ExitCode::from(2)
        }
    }
}
