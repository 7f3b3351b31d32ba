//! `hookstream-transform-worker`: evaluates JSONata transforms for the gateway in a process
//! of its own, under the memory cap the gateway gives it (see
//! `hookstream_transform::sandbox`). The gateway starts it; it is not run by hand.

fn main() -> std::process::ExitCode {
    hookstream_transform::sandbox::worker_main()
}
