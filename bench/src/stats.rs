//! CPU accounting from /proc, percentiles, number formatting, and the
//! `summarize` subcommand.

use std::io::BufRead;

use clap::Args;
use serde_json::{Map, Value as Json};

/// Seconds of CPU (user + system) used so far by process `pid` (`None` =
/// this process), from `/proc/PID/stat`.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let tck = if tck > 0 { tck as f64 } else { 100.0 };
    Some((utime + stime) / tck)
}

/// The CPU seconds of all of `pids` (None if there are none, or one is gone).
fn servers_cpu(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu_seconds(Some(*p))).sum()
}

/// CPU meters for the router (if a PID was given) and this process.
pub struct CpuMeter {
    pids: Vec<u32>,
    server0: Option<f64>,
    client0: Option<f64>,
}

/// CPU seconds used over a window.
pub struct CpuUsed {
    pub server: Option<f64>,
    pub client: Option<f64>,
}

impl CpuMeter {
    /// Meters the sum of the CPU time of `pids` (none: no server figure).
    pub fn start(pids: &[u32]) -> Self {
        CpuMeter {
            pids: pids.to_vec(),
            server0: servers_cpu(pids),
            client0: cpu_seconds(None),
        }
    }

    pub fn stop(&self) -> CpuUsed {
        let server = match self.server0 {
            Some(s0) => servers_cpu(&self.pids).map(|s1| s1 - s0),
            None => None,
        };
        let client = match (self.client0, cpu_seconds(None)) {
            (Some(c0), Some(c1)) => Some(c1 - c0),
            _ => None,
        };
        CpuUsed { server, client }
    }
}

/// The `p`-th percentile (0..=100) of sorted samples (nearest rank).
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `1234567.8` -> `"1,234,568"`.
pub fn group(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.abs().to_string();
    let digits = s.as_bytes();
    let lead = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    let mut out = String::from_utf8_lossy(&digits[..lead.min(digits.len())]).into_owned();
    for chunk in digits[lead.min(digits.len())..].chunks(3) {
        out.push(',');
        out.push_str(&String::from_utf8_lossy(chunk));
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

#[derive(Args)]
pub struct SummarizeArgs {
    /// A file of JSON result lines (other lines are skipped); `-` for stdin.
    pub file: String,
    /// A label printed at the start of the summary line.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Also print the medians as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// The figures summarized, in print order.
const FIGURES: &[&str] = &[
    "bytes_per_session",
    "deliveries_per_s",
    "publishes_per_s",
    "calls_per_s",
    "sessions_per_s",
    "cycles_per_s",
    "latency_p50_us",
    "latency_p99_us",
    "latency_mean_us",
    "server_cpu_s",
    "deliveries_per_server_cpu_s",
    "calls_per_server_cpu_s",
    "server_us_per_session",
    "server_us_per_cycle",
    "client_us_per_session",
    "client_us_per_cycle",
    "client_cpu_s",
    "wall_s",
    "lost",
    "errors",
];

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Prints `label: figure median (min..max) ...` over the runs in a file.
pub fn summarize(a: &SummarizeArgs) -> i32 {
    let reader: Box<dyn BufRead> = if a.file == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        match std::fs::File::open(&a.file) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => {
                eprintln!("cannot open {}: {e}", a.file);
                return 1;
            }
        }
    };
    let runs: Vec<Map<String, Json>> = reader
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| match serde_json::from_str::<Json>(&l) {
            Ok(Json::Object(m)) => Some(m),
            _ => None,
        })
        .collect();
    if runs.is_empty() {
        println!("{}: no results", a.label);
        return 1;
    }
    let mut parts = vec![format!("{} runs", runs.len())];
    let mut out = Map::new();
    out.insert("label".into(), Json::from(a.label.clone()));
    out.insert("runs".into(), Json::from(runs.len()));
    for key in FIGURES {
        let mut xs: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.get(*key).and_then(Json::as_f64))
            .collect();
        if xs.is_empty() {
            continue;
        }
        xs.sort_by(f64::total_cmp);
        let (med, lo, hi) = (median(&xs), xs[0], xs[xs.len() - 1]);
        let fmt = |x: f64| {
            if x.abs() >= 100.0 || x.fract() == 0.0 {
                group(x)
            } else {
                format!("{x:.3}")
            }
        };
        parts.push(format!("{key} {} ({}..{})", fmt(med), fmt(lo), fmt(hi)));
        let mut fig = Map::new();
        fig.insert("median".into(), Json::from(med));
        fig.insert("min".into(), Json::from(lo));
        fig.insert("max".into(), Json::from(hi));
        out.insert((*key).into(), Json::Object(fig));
    }
    println!("{}: {}", a.label, parts.join("; "));
    if a.json {
        println!("{}", Json::Object(out));
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 50.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn grouping() {
        assert_eq!(group(1234567.4), "1,234,567");
        assert_eq!(group(999.0), "999");
        assert_eq!(group(1000.0), "1,000");
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[1.0, 2.0, 10.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 3.0, 10.0]), 2.5);
    }

    #[test]
    fn reads_own_cpu() {
        assert!(cpu_seconds(None).is_some());
    }
}
