//! `awx-sim [ADDR] [--aap25]`: serves the AWX simulator until killed and prints its URL on stdout.
#![allow(missing_docs)]

use std::io::Write;

fn main() -> std::process::ExitCode {
    let mut bind = "127.0.0.1:0".to_owned();
    let mut options = awx_sim::SimOptions::default();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--aap25" => options.aap25 = true,
            other => bind = other.to_owned(),
        }
    }
    let sim = match awx_sim::Sim::start_on(options, &bind) {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("awx-sim: cannot bind {bind}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", sim.url());
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}
