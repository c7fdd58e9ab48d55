//! Fuzz target: one WAMP message in msgpack (switchyard_fuzz::message).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        switchyard_fuzz::message(switchyard_proto::Serializer::MsgPack, data);
    });
}
