//! The `crmhooks` binary: a thin layer over the library crates.

mod check;
mod client;
mod demo;
mod key;
mod secrets;
mod serve;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: the server allocates per request, per event and per
/// delivery, and glibc's malloc/free/consolidate took about 15 % of its CPU under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "crmhooks",
    version,
    about = "SuperOffice-compatible contact webhooks: server, demo, receiver and client"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the dispatcher.
    Serve(serve::ServeArgs),
    /// Show the whole loop on this machine in seconds: server, receiver, webhook, contact events.
    Demo(demo::DemoArgs),
    /// Receive webhooks: verify signatures, print them, answer a chosen status.
    Listen(crmhooks_listen::ListenArgs),
    /// Grade a webhook receiver: drive it through what SuperOffice sends, check by check.
    CheckReceiver(check::CheckArgs),
    /// Work with contacts on a running server.
    #[command(subcommand)]
    Contact(client::ContactCmd),
    /// Work with webhook definitions on a running server.
    #[command(subcommand)]
    Webhook(client::WebhookCmd),
    /// Manage API keys on the database (no server needed): create, list, revoke.
    #[command(subcommand)]
    Key(key::KeyCmd),
    /// Master keys of the secrets stored encrypted: make one, rotate to a new one.
    #[command(subcommand)]
    Secrets(secrets::SecretsCmd),
    /// Measure throughput and latency end to end, with a raw baseline in the same run.
    Bench(crmhooks_bench::BenchArgs),
    /// The benchmark's relay floor (run by `bench` as a child process).
    #[command(hide = true)]
    BenchRelay(crmhooks_bench::RelayArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => rt.block_on(serve::run(args)),
        Command::Demo(args) => rt.block_on(demo::run(args)),
        Command::Listen(args) => rt.block_on(crmhooks_listen::run(args)),
        Command::CheckReceiver(args) => rt.block_on(check::run(args)),
        Command::Contact(c) => rt.block_on(client::run_contact(c)),
        Command::Webhook(c) => rt.block_on(client::run_webhook(c)),
        Command::Key(c) => rt.block_on(key::run(c)),
        Command::Secrets(c) => rt.block_on(secrets::run(c)),
        Command::Bench(args) => rt.block_on(crmhooks_bench::run(args)),
        Command::BenchRelay(args) => rt.block_on(crmhooks_bench::run_relay(args)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
