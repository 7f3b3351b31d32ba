//! `hookstream-gateway`: see `--help`.

use clap::Parser;
use hookstream_gateway::settings::Settings;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = Settings::parse();
    hookstream_gateway::server::init_logging(settings.log_json);
    match hookstream_gateway::server::run(settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookstream-gateway: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
