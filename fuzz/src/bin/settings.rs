//! Fuzz target: `broker_core::fuzzing::settings`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        broker_core::fuzzing::settings(data);
    });
}
