//! The `hopgate` binary: parse the command line, dispatch, map failures to exit codes
//! (0 ok, 1 runtime error, 78 configuration error, as sysexits' `EX_CONFIG`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use hopgate_config::{Config, ConfigError, IdentitySource, LogFormat, SpiffeId, TrustDomain};
use hopgate_proxy::Proxy;
use hopgate_proxy::telemetry::stdout::{LogLine, stdout};
use hopgate_proxy::tls::{Svid, TrustBundles};
use hopgate_proxy::token::{Minter, OriginVerifier};

// The `outln!` and `errln!` macros: before the modules that print with them.
#[macro_use]
mod output;

mod audit_cmd;
mod audit_trace;
mod cli;
mod demo;
mod dev_ca;
mod iptables;
mod policy_cmd;
mod probe;
mod token_cmd;

use cli::{AuditCommand, Cli, Command, DevCaCommand, IptablesCommand, PolicyCommand, TokenCommand};

/// jemalloc, with its background thread returning freed memory to the system. With glibc's
/// malloc, a sidecar that had held 10,000 connections kept 260 MiB resident after they closed,
/// with 1.4 MiB in use: the freed pages sat between live allocations, where glibc returns
/// nothing until `malloc_trim`. jemalloc gives them back within about ten seconds
/// (docs/performance.md, "Connection and stream floods").
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `EX_CONFIG` from sysexits.h: the configuration is wrong.
pub(crate) const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { file } => check_config(&file),
        Command::Demo { otlp, serve } => demo(demo::DemoOptions { otlp, serve }),
        Command::Policy(PolicyCommand::Check { dir }) => policy_cmd::check(&dir),
        Command::Policy(PolicyCommand::Explain(args)) => policy_cmd::explain(&args),
        Command::Policy(PolicyCommand::Test(args)) => policy_cmd::test(&args),
        Command::Token(TokenCommand::Inspect(args)) => token_cmd::run(&args),
        Command::Audit(AuditCommand::Verify(args)) => audit_cmd::verify(&args),
        Command::Audit(AuditCommand::Trace(args)) => audit_trace::run(&args),
        Command::DevCa(DevCaCommand::Init(args)) => dev_ca_init(&args),
        Command::DevCa(DevCaCommand::Issue(args)) => dev_ca_issue(&args),
        Command::Iptables(IptablesCommand::Apply { rules, binaries }) => {
            iptables::apply(&rules, &binaries)
        }
        Command::Iptables(IptablesCommand::Remove { binaries }) => iptables::remove(&binaries),
        Command::Iptables(IptablesCommand::Print { rules }) => iptables::print(&rules),
        Command::Probe(args) => probe::run(&args),
    }
}

fn run(path: &Path) -> ExitCode {
    let config = match hopgate_config::load(path) {
        Ok(config) => config,
        Err(err) => return report_config_error(path, &err),
    };
    stdout().configure(config.telemetry().audit());
    init_logging(config.telemetry().log_format());
    // On one core (a sidecar's usual CPU limit, or a pinned process) a single-threaded runtime
    // does the same work without cross-thread wake-ups.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut builder = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve(config));
    hopgate_proxy::telemetry::audit::flush_stdout();
    code
}

async fn serve(config: Config) -> ExitCode {
    let proxy = match Proxy::build(&config).await {
        Ok(proxy) => proxy,
        Err(err) => {
            tracing::error!(error = %err, "cannot start");
            eprintln!("error: {err}");
            return if err.is_config() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            };
        }
    };
    let identity = proxy.identity();
    let policies = proxy.policies();
    let shutdown = shutdown_signal();
    // SIGHUP re-reads the SVID, bundles and policies, as the file watchers do on their own.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    tokio::spawn(async move {
        let Ok(mut hup) = hangup else {
            tracing::error!("cannot install the SIGHUP handler; reloads follow file changes only");
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading identity and policies");
            // The reload reads files: keep it off the runtime's workers. A failure keeps the
            // last good identity and is logged and counted by the store itself.
            let identity = std::sync::Arc::clone(&identity);
            let policies = policies.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let _ = identity.reload();
                if let Some(policies) = policies {
                    let _ = policies.reload();
                }
            })
            .await;
        }
    });
    proxy.run(shutdown).await;
    ExitCode::SUCCESS
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not when the
/// future is first polled, so a signal right after the listeners are announced still drains.
fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = signals else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
    }
}

fn demo(options: demo::DemoOptions) -> ExitCode {
    // The steps print to stdout; the sidecars' own log lines go to stderr, warnings only.
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOPGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(demo::run(options)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HOPGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Log lines share stdout with the audit records, through the same non-blocking buffer: a
    // stalled reader must not stall a worker thread on a log line either.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(LogLine::default);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn check_config(path: &Path) -> ExitCode {
    let config = match hopgate_config::load(path) {
        Ok(config) => config,
        Err(err) => return report_config_error(path, &err),
    };
    let mut problems: Vec<String> = Vec::new();
    // The collector's CA must hold certificates that can be roots.
    if let Err(err) = hopgate_proxy::telemetry::trace::check_export(config.telemetry()) {
        problems.push(err.to_string());
    }
    if let IdentitySource::WorkloadApi(api) = config.identity().source() {
        // The agent may not be up where the config is checked (a CI job, an image build).
        eprintln!(
            "note: identity.workload_api: the socket `{}` is checked at run time, not now (startup waits up to {:?} for an SVID)",
            api.socket(),
            api.initial_timeout()
        );
    }
    if let IdentitySource::Files(files) = config.identity().source() {
        match Svid::load(files.cert(), files.key()) {
            Err(err) => problems.push(format!("identity.svid: {err}")),
            // The outbound side signs hop tokens with the SVID key: it must be a kind it can.
            Ok(svid) if config.outbound().is_some() => {
                if let Err(err) = Minter::new(&svid, config.token().ttl()) {
                    problems.push(format!("identity.svid: {err}"));
                }
            }
            // The audit seals are signed with the SVID key too, by the same signer.
            Ok(svid) if config.telemetry().audit().sign() => {
                if let Err(err) = Minter::new(&svid, config.token().ttl()) {
                    problems.push(format!(
                        "telemetry.audit.sign: the SVID's key cannot sign the audit seals: {err}"
                    ));
                }
            }
            Ok(_) => {}
        }
        if let Err(err) = TrustBundles::load(files.bundles()) {
            problems.push(format!("identity.bundles: {err}"));
        }
    }
    if let Some(policy) = config.policy() {
        let default_action = config.intent().default_action();
        match hopgate_policy::PolicySnapshot::load(policy.dir(), default_action) {
            Ok(snapshot) => {
                for warning in snapshot.warnings() {
                    eprintln!("warning: policy.dir: {warning}");
                }
            }
            Err(err) => problems.push(format!("policy.dir: {err}")),
        }
    }
    let token = config.token();
    for (i, issuer) in token.origin_issuers().iter().enumerate() {
        if let Err(err) = OriginVerifier::load(std::slice::from_ref(issuer), token.leeway()) {
            problems.push(format!("token.origin.issuers[{i}].jwks_file: {err}"));
        }
    }
    if problems.is_empty() {
        println!("{}: ok", path.display());
        ExitCode::SUCCESS
    } else {
        for problem in &problems {
            eprintln!("error: {problem}");
        }
        eprintln!("{}: {} problem(s)", path.display(), problems.len());
        ExitCode::from(EXIT_CONFIG)
    }
}

fn report_config_error(path: &Path, err: &ConfigError) -> ExitCode {
    match err {
        ConfigError::Invalid(errors) => {
            for error in errors {
                eprintln!("error: {error}");
            }
            eprintln!("{}: {} problem(s)", path.display(), errors.len());
        }
        ConfigError::Read { .. } => eprintln!("error: {err}"),
    }
    ExitCode::from(EXIT_CONFIG)
}

fn dev_ca_init(args: &cli::DevCaInit) -> ExitCode {
    let result = TrustDomain::parse(&args.trust_domain)
        .with_context(|| format!("--trust-domain `{}`", args.trust_domain))
        .and_then(|td| dev_ca::init(&args.dir, &td).map_err(anyhow::Error::from));
    match result {
        Ok(files) => {
            println!("{files}");
            ExitCode::SUCCESS
        }
        Err(err) => fail(&err),
    }
}

fn dev_ca_issue(args: &cli::DevCaIssue) -> ExitCode {
    let result = SpiffeId::parse(&args.spiffe_id)
        .with_context(|| format!("SPIFFE ID `{}`", args.spiffe_id))
        .and_then(|id| {
            let ttl = dev_ca::parse_ttl(&args.ttl)?;
            let dns = args
                .dns
                .iter()
                .map(|name| dev_ca::parse_dns(name))
                .collect::<Result<Vec<_>, _>>()?;
            let options = dev_ca::IssueOptions {
                out: args.out.as_deref(),
                ttl,
                dns: &dns,
                force: args.force,
            };
            Ok(dev_ca::issue(&args.dir, &id, &options)?)
        });
    match result {
        Ok(files) => {
            println!("{files}");
            ExitCode::SUCCESS
        }
        Err(err) => fail(&err),
    }
}

/// Bad input (a malformed ID, a foreign trust domain, a bad ttl or DNS name) exits 78; anything
/// else (an existing CA or SVID, no CA, an I/O error) 1.
fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("error: {err:#}");
    let code = if let Some(err) = err.downcast_ref::<dev_ca::DevCaError>() {
        err.exit_code()
    } else if err
        .downcast_ref::<hopgate_config::SpiffeIdError>()
        .is_some()
    {
        EXIT_CONFIG
    } else {
        1
    };
    ExitCode::from(code)
}
