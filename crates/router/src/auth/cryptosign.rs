//! WAMP-Cryptosign for the router: the key parsing and the check of an
//! AUTHENTICATE signature are the shared computations of
//! [`switchyard_proto::auth::cryptosign`] (the client answers with the same
//! module). The challenge itself is drawn in `auth/mod.rs`.

pub use switchyard_proto::auth::cryptosign::{check, parse_pubkey};
