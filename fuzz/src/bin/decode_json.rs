//! Fuzz target: one WAMP message in json (switchyard_fuzz::message).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        switchyard_fuzz::message(switchyard_proto::Serializer::Json, data);
    });
}
