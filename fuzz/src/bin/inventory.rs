//! Fuzz target: `broker_core::fuzzing::inventory`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        broker_core::fuzzing::inventory(data);
    });
}
