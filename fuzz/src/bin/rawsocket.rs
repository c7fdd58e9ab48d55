//! Fuzz target: switchyard_fuzz::rawsocket.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        switchyard_fuzz::rawsocket(data);
    });
}
