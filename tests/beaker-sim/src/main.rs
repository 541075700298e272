//! `beaker-sim [ADDR]`: serves the Beaker hub simulator until killed and prints its hub URL on
//! stdout.
#![allow(missing_docs)]

fn main() -> std::process::ExitCode {
    sim_http::serve_until_killed("beaker-sim", |bind| {
        // The simulator lives as long as the process: leaked, not dropped (which would stop it).
        let sim = Box::leak(Box::new(beaker_sim::Sim::start_on(
            beaker_sim::SimOptions::default(),
            bind,
        )?));
        Ok(sim.url())
    })
}
