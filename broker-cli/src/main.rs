//! The `broker` command line. It parses, calls broker-core and prints; the logic lives in the library.
#![forbid(unsafe_code)]

mod app;
mod cli;
mod logging;
mod manual;
mod output;
mod remote;
mod report;
mod scenarios;
#[cfg(feature = "serve")]
mod serve;
mod store;
mod supervise;
mod targets;
mod terminal;

fn main() -> std::process::ExitCode {
    app::main()
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
