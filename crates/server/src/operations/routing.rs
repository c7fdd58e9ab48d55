//! The routing gauges of `/metrics`, read from the realms at each scrape:
//! subscriptions and registrations per realm (those of the router's own
//! sessions, such as the queue service's `switchyard.queue.*`, included). Read at scrape
//! time, they cost the hot path nothing.

use std::fmt::Write;
use std::sync::Weak;

use switchyard_router::{Realm, Router};

/// A gauge: name, help, and how to read it from a realm.
type Row = (&'static str, &'static str, fn(&Realm) -> usize);

/// Appends the routing gauges of every realm of `router` (nothing once the
/// router is gone: the source is held by the router's own metrics, so it
/// holds the router weakly).
pub fn render(router: &Weak<Router>, out: &mut String) {
    let Some(router) = router.upgrade() else {
        return;
    };
    let rows: [Row; 2] = [
        (
            "switchyard_subscriptions",
            "Subscriptions (distinct topic and match policy) in the realm, the router's own included.",
            |r| r.broker.count(),
        ),
        (
            "switchyard_registrations",
            "Registrations (distinct procedure and match policy) in the realm, the router's own included.",
            |r| r.dealer.count(),
        ),
    ];
    for (name, help, value) in rows {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for realm in router.realms() {
            let _ = writeln!(
                out,
                "{name}{{realm=\"{}\"}} {}",
                escape(realm.name()),
                value(realm)
            );
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
