//! The `shopfront` binary: parses the command line and runs it (see `shopfront --help`).
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    shopfront::cli::main()
}
