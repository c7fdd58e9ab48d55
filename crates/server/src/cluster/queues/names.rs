//! The JetStream names of the queues of a cluster (docs/CLUSTER.md, "Queues in cluster mode"):
//!
//! | what | name |
//! |---|---|
//! | a realm's queue log (stream) | `SWYQ_<prefix>_<realm>` |
//! | its one subject | `<prefix>.<escaped realm>.queues.log` |
//! | the API requests to the dispatching node | `<prefix>.<escaped realm>.queues.api` |
//! | the ownership bucket (KV) | `SWYQ_OWNERS_<prefix>`, key `<realm>` |
//!
//! In stream, bucket and key names every byte outside `A-Z a-z 0-9 -` becomes `_` and two hex
//! digits (so `realm1` stays `realm1`, `com.example` is `com_2Eexample`): names stay valid and
//! two realms never share one.

use super::super::subject;

/// `s` with every byte outside `[A-Za-z0-9-]` as `_XX`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// The stream holding realm `realm`'s queue log.
pub fn stream(prefix: &str, realm: &str) -> String {
    format!("SWYQ_{}_{}", escape(prefix), escape(realm))
}

/// The subject of realm `realm`'s queue log.
pub fn log_subject(prefix: &str, realm: &str) -> String {
    subject::realm_rpc(prefix, realm, "queues", "log")
}

/// Where the `switchyard.queue.*` calls of realm `realm` reach its dispatching node.
pub fn api_subject(prefix: &str, realm: &str) -> String {
    subject::realm_rpc(prefix, realm, "queues", "api")
}

/// The KV bucket of the queues' ownership leases.
pub fn owners_bucket(prefix: &str) -> String {
    format!("SWYQ_OWNERS_{}", escape(prefix))
}

/// Realm `realm`'s key in [`owners_bucket`].
pub fn owner_key(realm: &str) -> String {
    escape(realm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_distinct() {
        assert_eq!(stream("switchyard", "realm1"), "SWYQ_switchyard_realm1");
        assert_eq!(stream("sy.a", "com.x y"), "SWYQ_sy_2Ea_com_2Ex_20y");
        assert_ne!(owner_key("a.b"), owner_key("a_2Eb"));
        assert_eq!(log_subject("sy", "realm1"), "sy.realm1.queues.log");
        assert_eq!(api_subject("sy", "a.b"), "sy.a~2Eb.queues.api");
    }
}
