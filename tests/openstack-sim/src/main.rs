//! `openstack-sim [ADDR]`: serves the OpenStack simulator until killed and prints its Keystone URL
//! (the `auth_url`) on stdout.
#![allow(missing_docs)]

use std::io::Write;

fn main() -> std::process::ExitCode {
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let sim = match openstack_sim::Sim::start_on(openstack_sim::SimOptions::default(), &bind) {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("openstack-sim: cannot bind {bind}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", sim.auth_url());
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}
