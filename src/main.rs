//! The `shopfront` binary: parses the command line and runs it (see `shopfront --help`).
//!
//! The benchmarks (`shopfront bench …`) live here, not in the `shopfront` library that the
//! tests and anything embedding the service link: the library's command line hands `bench …`
//! back to [`bench::run`].
#![forbid(unsafe_code)]

mod bench;

fn main() -> std::process::ExitCode {
    shopfront::cli::main(bench::run)
}
