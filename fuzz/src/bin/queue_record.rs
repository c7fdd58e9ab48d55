//! Fuzz target: switchyard_fuzz::queue_record.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        switchyard_fuzz::queue_record(data);
    });
}
