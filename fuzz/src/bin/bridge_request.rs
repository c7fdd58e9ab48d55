//! Fuzz target: switchyard_fuzz::bridge_request.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        switchyard_fuzz::bridge_request(data);
    });
}
