//! Fuzz target: switchyard_fuzz::bridge_signature.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        switchyard_fuzz::bridge_signature(data);
    });
}
