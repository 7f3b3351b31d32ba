//! `hookstream-operator`: see `--help`.

use clap::Parser;
use hookstream_operator::settings::Settings;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = Settings::parse();
    hookstream_common::init_logging(settings.log_json);
    match hookstream_operator::server::run(settings).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hookstream-operator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
