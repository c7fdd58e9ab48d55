//! Fuzz target: switchyard_fuzz::uri.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        switchyard_fuzz::uri(data);
    });
}
