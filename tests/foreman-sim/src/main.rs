//! `foreman-sim [ADDR]`: serves the Foreman simulator until killed and prints its URL (the
//! `foreman_url`) on stdout; log in as `alice` / `alice-password`.
#![allow(missing_docs)]

fn main() -> std::process::ExitCode {
    sim_http::serve_until_killed("foreman-sim", |bind| {
        // The simulator lives as long as the process: leaked, not dropped (which would stop it).
        let sim = Box::leak(Box::new(foreman_sim::Sim::start_on(
            foreman_sim::SimOptions::default(),
            bind,
        )?));
        Ok(sim.url())
    })
}
