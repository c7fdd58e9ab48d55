//! The process figures of `/metrics`, read from `/proc/self` at each
//! scrape (Linux): resident memory, open file descriptors, CPU seconds,
//! under the names every Prometheus client library uses for them
//! (`process_resident_memory_bytes`, `process_open_fds`,
//! `process_cpu_seconds_total`), so existing dashboards find them.
//! Where `/proc` cannot be read, the figure is left out.

use std::fmt::Write;

/// Appends the process families to `out`.
pub fn render(out: &mut String) {
    let page = rustix::param::page_size() as u64;
    let ticks = rustix::param::clock_ticks_per_second().max(1) as f64;
    if let Some(rss) = resident_pages().map(|p| p * page) {
        family(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the process in bytes.",
            &rss.to_string(),
        );
    }
    if let Some(fds) = open_fds() {
        family(
            out,
            "process_open_fds",
            "gauge",
            "Open file descriptors of the process (sockets and files).",
            &fds.to_string(),
        );
    }
    if let Some(t) = cpu_ticks() {
        family(
            out,
            "process_cpu_seconds_total",
            "counter",
            "CPU time the process used, user and system, in seconds.",
            &format!("{:.2}", t as f64 / ticks),
        );
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str, value: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

/// The second field of /proc/self/statm.
fn resident_pages() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    statm.split_whitespace().nth(1)?.parse().ok()
}

fn open_fds() -> Option<usize> {
    // The directory's own descriptor, open while it is read, is not counted.
    Some(
        std::fs::read_dir("/proc/self/fd")
            .ok()?
            .count()
            .saturating_sub(1),
    )
}

/// utime + stime of /proc/self/stat (fields 14 and 15), in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses: the
    // fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is index 0
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_plausible_figures() {
        let mut out = String::new();
        super::render(&mut out);
        let value = |name: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {out}"))
        };
        assert!(value("process_resident_memory_bytes") > 1e6);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_cpu_seconds_total") >= 0.0);
    }
}
