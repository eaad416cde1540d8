//! The `ecs-renewd` command line: parses arguments, sets up logging, runs one subcommand and
//! turns its result into an exit code (0 ok, 1 runtime failure, 78 bad configuration).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

mod bench;
mod demo;

use ecs_renewd::cloud::credentials::Environment;
use ecs_renewd::commands::{self, Failure};
use ecs_renewd::{LogFormat, init_logging};
use ecs_wire::clock::SystemClock;

#[derive(Parser)]
#[command(
    name = "ecs-renewd",
    version,
    about = "Keeps Alibaba Cloud ECS subscription instances from expiring"
)]
struct Cli {
    /// Log format: json or text (default: json when stdout is not a terminal).
    #[arg(long, global = true, value_parser = parse_log_format)]
    log_format: Option<LogFormat>,

    #[command(subcommand)]
    command: Command,
}

/// `ecs-renewd ledger …`.
#[derive(Subcommand)]
enum LedgerCommand {
    /// Copy the SQLite ledger (the daemon stopped) into an empty PostgreSQL database.
    Copy {
        #[command(flatten)]
        config: ConfigArg,
        /// The target: libpq key=value pairs or a postgresql:// URI.
        #[arg(long, required_unless_present = "to_file", conflicts_with = "to_file")]
        to: Option<String>,
        /// The target read from a file (mode 0600: a password inside stays out of `ps` and
        /// the shell's history).
        #[arg(long)]
        to_file: Option<PathBuf>,
    },
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    text.parse()
}

/// Where the config file is.
#[derive(clap::Args)]
struct ConfigArg {
    /// The config file.
    #[arg(long, env = "ECS_RENEWD_CONFIG", default_value = ecs_renewd::config::DEFAULT_PATH)]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: passes on the cron schedule, retries when due, admin HTTP, SIGHUP reload.
    Run {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Exit 0 when the daemon's /healthz answers (for container health checks).
    Healthcheck {
        /// The URL (default: http://127.0.0.1:<port of ECS_RENEWD_ADMIN_LISTEN or 9469>/healthz).
        #[arg(long)]
        url: Option<String>,
    },
    /// Check the config file (and every account's credentials); exit 0 or 78.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Show what a pass would do, sorted by expiry; changes nothing.
    Plan {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run one reconcile pass and exit: 0 when everything succeeded, 1 otherwise.
    Once {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show each instance's expiry, policy, decision, last outcome and next retry.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Work on the ledger itself.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Show the ledger's money-moving records.
    History {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this instance.
        #[arg(long)]
        instance: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The main job without an Alibaba Cloud account: the daemon against the built-in emulator
    /// on a fast clock, about a minute, then a summary.
    Demo {
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Where to keep the ledger (default: a new directory under $ECS_RENEWD_STATE_DIR or the temp dir).
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Measure API calls, pass time, memory and CPU at fleet scale against the emulator.
    Bench {
        /// Fleet sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = vec![1000usize, 10000, 100000])]
        sizes: Vec<usize>,
        /// Latency per call, in milliseconds.
        #[arg(long, default_value_t = 30)]
        latency_ms: u64,
        /// Calls per second per (account, region, action).
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        /// Seconds to idle after the pass; idle RSS is read at the end, idle CPU and wake-ups
        /// over all of it but the first 30 s.
        #[arg(long, default_value_t = 90)]
        idle_seconds: u64,
        /// Also run each size with the ledger in PostgreSQL (a fresh database on this server:
        /// libpq key=value pairs without dbname), compared with the SQLite run.
        #[arg(long)]
        postgres: Option<String>,
    },
    /// Serve the ECS emulator (for tests, the demo and policy rehearsal).
    Emulator {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9470")]
        listen: SocketAddr,
        /// Fleet file (TOML); without it, one account with key "emulator"/"emulator-secret".
        #[arg(long)]
        fleet: Option<PathBuf>,
        /// Generate this many more instances in the first account (ten regions).
        #[arg(long, default_value_t = 0)]
        generate: usize,
    },
}

fn main() -> ExitCode {
    ecs_renewd::tune_allocator();
    let cli = Cli::parse();
    // The demo narrates what the daemon does; its logs stay off unless RUST_LOG asks.
    let default_filter = if matches!(cli.command, Command::Demo { .. }) {
        "off"
    } else {
        "info"
    };
    init_logging(cli.log_format, default_filter);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("ecs-renewd: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(try_main(cli.command)) {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("ecs-renewd: {failure}");
            ExitCode::from(failure.exit_code())
        }
    }
}

async fn try_main(command: Command) -> Result<ExitCode, Failure> {
    let env = Environment::from_process();
    let mut stdout = std::io::stdout();
    match command {
        Command::Demo { seconds, state_dir } => {
            let options = demo::DemoOptions {
                seconds,
                state_dir,
                ..Default::default()
            };
            demo::run(options, &env, &mut stdout).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            sizes,
            latency_ms,
            rate,
            idle_seconds,
            postgres,
        } => {
            let options = bench::BenchOptions {
                sizes,
                latency: std::time::Duration::from_millis(latency_ms),
                rate,
                idle: std::time::Duration::from_secs(idle_seconds),
                postgres,
            };
            bench::run(options, &mut stdout).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config } => {
            commands::run::run(&config.config, env).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { url } => {
            commands::run::healthcheck(url, &env).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => {
            commands::check_config::run(&config.config, &env, &mut stdout).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Once { config, json } => run_once(&config.config, &env, json, &mut stdout).await,
        Command::Ledger {
            command:
                LedgerCommand::Copy {
                    config,
                    to,
                    to_file,
                },
        } => {
            let target = match (to, to_file) {
                (Some(url), _) => commands::ledger::Target::Url(url),
                (None, Some(path)) => commands::ledger::Target::File(path),
                (None, None) => unreachable!("clap requires --to or --to-file"),
            };
            commands::ledger::run_copy(&config.config, &env, target, &mut stdout).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config, json } => {
            commands::status::run_status(&config.config, &env, json, &mut stdout)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::History {
            config,
            instance,
            json,
        } => {
            commands::status::run_history(
                &config.config,
                &env,
                instance.as_deref(),
                json,
                &mut stdout,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { config, json } => {
            let complete = commands::plan::run(
                &config.config,
                &env,
                Arc::new(SystemClock),
                json,
                &mut stdout,
            )
            .await?;
            Ok(exit_code(complete))
        }
        Command::Emulator {
            listen,
            fleet,
            generate,
        } => run_emulator(listen, fleet, generate).await,
    }
}

/// `once`: one pass, stopped early (no new ECS call) by SIGTERM or SIGINT.
async fn run_once(
    config: &std::path::Path,
    env: &Environment,
    json: bool,
    stdout: &mut std::io::Stdout,
) -> Result<ExitCode, Failure> {
    let cancel = tokio_util::sync::CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        wait_for_stop_signal().await;
        tracing::warn!("stop signal: no new ECS call starts; the one in flight finishes");
        stop.cancel();
    });
    let ok = commands::once::run(config, env, Arc::new(SystemClock), cancel, json, stdout).await?;
    Ok(exit_code(ok))
}

/// 0 when everything went well, 1 when something needs a look.
fn exit_code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn run_emulator(
    listen: SocketAddr,
    fleet: Option<PathBuf>,
    generate: usize,
) -> Result<ExitCode, Failure> {
    use ecs_emulator::{self as emulator, EmulatorConfig, settings::GeneratorSpec};
    let mut config = match &fleet {
        Some(path) => EmulatorConfig::load(path).map_err(Failure::config)?,
        None => EmulatorConfig::single_account("emulator", "emulator-secret"),
    };
    if generate > 0 {
        config.generate.push(GeneratorSpec {
            count: generate,
            account: None,
            regions: [
                "cn-hangzhou",
                "cn-beijing",
                "cn-shanghai",
                "cn-shenzhen",
                "cn-hongkong",
                "ap-southeast-1",
                "ap-northeast-1",
                "us-west-1",
                "eu-central-1",
                "eu-west-1",
            ]
            .map(String::from)
            .to_vec(),
            expiry_spread: "60d".into(),
            expired_share: 0.02,
            postpaid_share: 0.1,
            auto_renew_share: 0.2,
            not_renewal_share: 0.05,
            tags: Default::default(),
            monthly_price: 100.0,
            id_prefix: "i-gen".into(),
            seed: 1,
        });
    }
    if !listen.ip().is_loopback() {
        tracing::warn!(%listen, "the emulator listens beyond loopback; its keys are test keys, but anyone who can reach it can use them");
    }
    let handle = emulator::start(config, listen).await.map_err(|e| match e {
        emulator::StartError::Fleet(e) => Failure::config(e),
        other => Failure::runtime(other),
    })?;
    let instances = handle.with_world(|w| w.instance_count());
    tracing::info!(addr = %handle.addr, instances, "ECS emulator listening; control API under /_emulator/");
    println!(
        "ECS emulator listening on {} ({instances} instances); control API under /_emulator/",
        handle.url()
    );
    wait_for_stop_signal().await;
    handle.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
