//! `pgbroadcast-bench`, which `pgbroadcast bench ARGS` runs with ARGS: see
//! the library ([`pgbroadcast_bench`]).

use std::process::ExitCode;

use clap::Parser;
use pgbroadcast::config::LogFormat;
use pgbroadcast_bench::BenchCli;

/// Measure a server: WebSocket clients, writes through routed tables,
/// commit → client latency, deliveries/s, losses, server CPU and memory.
#[derive(Debug, Parser)]
#[command(name = "pgbroadcast bench", bin_name = "pgbroadcast bench", version)]
struct Cli {
    #[command(flatten)]
    bench: BenchCli,

    /// Log format on stderr: `text` (coloured only on a terminal, and not
    /// when NO_COLOR is set) or `json` (one object per line, for log shippers).
    #[arg(
        long,
        env = "PGBROADCAST_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    pgbroadcast::logging::init(cli.log_format);
    match pgbroadcast_bench::main(cli.bench).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %pgbroadcast::error_chain(&err), "pgbroadcast bench failed");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn duration_flags_take_units_and_bare_seconds() {
        for args in [
            ["pgbroadcast bench", "--duration=5s"],
            ["pgbroadcast bench", "--duration=7"],
            ["pgbroadcast bench", "--live-timeout=1.5m"],
        ] {
            if let Err(err) = Cli::try_parse_from(args) {
                panic!("{args:?}: {err}");
            }
        }
    }

    #[test]
    fn log_format_is_accepted_after_the_options_or_a_subcommand() {
        for args in [
            &["pgbroadcast bench", "--log-format", "json"][..],
            &["pgbroadcast bench", "floor", "--log-format", "json"],
        ] {
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.log_format, LogFormat::Json, "{args:?}");
        }
    }
}
