//! Fuzz target: switchyard_fuzz::config.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        switchyard_fuzz::config(data);
    });
}
