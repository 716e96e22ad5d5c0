//! The `ratelimit` binary: parses the command line, runs it, prints the result.
// The binary's whole job is to print reports to stdout and problems to stderr; the library
// part returns them as strings and never prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use ratelimit_cli::{Cli, Command, Progress};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs (e.g. a backend that cannot connect) go to stderr; the reports already say what
    // matters, so only errors are logged unless RUST_LOG asks for more.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    let bar = progress_bar(&cli);
    let mut progress = |step: Progress<'_>| {
        if let Some(bar) = &bar {
            match step {
                Progress::Start { backends } => bar.set_length(backends),
                Progress::Backend { name } => {
                    bar.set_message(name.to_owned());
                    bar.inc(1);
                }
                Progress::Finish => bar.finish_and_clear(),
            }
        }
    };
    match runtime.block_on(ratelimit_cli::run(&cli, &mut progress)) {
        Ok(outcome) => {
            for note in &outcome.notes {
                eprintln!("{note}");
            }
            print!("{}", outcome.stdout);
            if outcome.success {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(error) => {
            // Every message already masks credentials; this catches a driver's text too.
            eprintln!(
                "error: {}",
                ratelimit_core::redact::text(&error.to_string())
            );
            ExitCode::from(error.exit_code())
        }
    }
}

/// A bar for `cleanup`, drawn on stderr, only when a person watches stdout (not for JSON or
/// a pipe, where it would be noise).
fn progress_bar(cli: &Cli) -> Option<ProgressBar> {
    let Command::Cleanup(args) = &cli.command else {
        return None;
    };
    if args.json || !std::io::stdout().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(0);
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
        bar.set_style(style);
    }
    Some(bar)
}
