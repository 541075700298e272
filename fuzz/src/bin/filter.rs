//! Fuzz target: `broker_core::fuzzing::filter`.

fn main() {
    afl::fuzz!(|data: &[u8]| {
        broker_core::fuzzing::filter(data);
    });
}
