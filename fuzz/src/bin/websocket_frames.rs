//! Fuzz target: switchyard_fuzz::websocket_frames.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        switchyard_fuzz::websocket_frames(data);
    });
}
