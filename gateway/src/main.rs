//! `hookstream-gateway`: see `--help`.

use clap::Parser;
use hookstream_gateway::settings::Settings;

// glibc's allocator was the largest single cost under load (a fifth of the gateway's CPU in
// malloc, free and heap consolidation); mimalloc's thread-local heaps suit the many small,
// short-lived allocations of request handling.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = Settings::parse();
    hookstream_common::init_logging(settings.log_json);
    hookstream_gateway::listen::raise_open_files_limit();
    // Panics inside the JSONata engine are caught and recorded as failed attempts; this
    // sends their report to the structured log instead of raw stderr.
    std::panic::set_hook(Box::new(|info| tracing::error!(panic = %info, "panic")));
    match hookstream_gateway::server::run(settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookstream-gateway: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
