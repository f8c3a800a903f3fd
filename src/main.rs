//! The `streamlr` binary: parse the command line and hand over to the library.

use clap::Parser;

/// mimalloc: records are allocated on the reader thread and freed on the learner thread, a
/// pattern glibc malloc handles poorly (measured in replay: see README, Benchmarks). Built with
/// its `no_thp` feature (it does not ask for transparent huge pages) and its `override` feature
/// (the binary exports `malloc` and `free`, so librdkafka allocates from it too): each ~40-70
/// MiB less peak RSS at the same speed (README, Memory).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = streamlr::cli::Cli::parse();
    match streamlr::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{e}`, not the chain (`{e:#}`): every error of the crate already says its cause
            // in its message, so the chain repeated it ("…: os error 2: os error 2").
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
