//! `idle`: the router's memory per idle session. Opens N sessions (HELLO →
//! WELCOME, then nothing), and reports the growth of the router's resident
//! memory (VmRSS from `/proc/PID/status`) divided by N.

use std::time::Duration;

use clap::Args;
use serde_json::json;
use switchyard_client::Session;

use crate::{stats::group, Ser};

#[derive(Args, Debug)]
pub struct IdleArgs {
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    #[arg(long, default_value = "realm1")]
    pub realm: String,
    #[arg(long, value_enum, default_value_t = Ser::Json)]
    pub serializer: Ser,
    /// Sessions to open (mind the open-file limit: each one is a socket here
    /// and one in the router).
    #[arg(long, default_value_t = 4000)]
    pub sessions: usize,
    /// The router's PID (required: its memory is what is measured).
    #[arg(long)]
    pub server_pid: u32,
    /// Also print the figures as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// After measuring, keep every session open until this file exists
    /// (so that several generators' sessions are held at the same time,
    /// as `bench/idle-cluster.sh` does), at most `--hold-max` seconds.
    #[arg(long)]
    pub hold_file: Option<std::path::PathBuf>,
    /// The longest `--hold-file` wait, in seconds; past it the run fails.
    #[arg(long, default_value_t = 600)]
    pub hold_max: u64,
}

/// The resident memory of a process in bytes.
fn rss_bytes(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| format!("no VmRSS in /proc/{pid}/status"))
}

pub async fn run(a: IdleArgs) -> Result<i32, String> {
    measure(&a).await.map(|()| 0)
}

async fn measure(a: &IdleArgs) -> Result<(), String> {
    let before = rss_bytes(a.server_pid)?;
    let mut sessions = Vec::with_capacity(a.sessions);
    while sessions.len() < a.sessions {
        let batch = (a.sessions - sessions.len()).min(200);
        let joins = (0..batch).map(|_| Session::connect(&a.url, &a.realm, a.serializer.into()));
        for s in futures_util::future::join_all(joins).await {
            sessions.push(s.map_err(|e| format!("connect: {e}"))?);
        }
    }
    // Let the router settle (writers idle, buffers released).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = rss_bytes(a.server_pid)?;
    let per = after.saturating_sub(before) as f64 / a.sessions as f64;
    println!(
        "idle {} {:?}: {} sessions: router RSS {} KiB -> {} KiB = {} bytes per idle session",
        a.url,
        a.serializer,
        group(a.sessions as f64),
        before / 1024,
        after / 1024,
        group(per)
    );
    if a.json {
        println!(
            "{}",
            json!({"scenario": "idle", "url": a.url, "sessions": a.sessions,
                   "rss_before": before, "rss_after": after, "bytes_per_session": per})
        );
    }
    if let Some(path) = &a.hold_file {
        hold(path, Duration::from_secs(a.hold_max)).await?;
        // Every session must still be up when the hold ends: a router that
        // dropped idle sessions would otherwise pass unseen.
        let gone = sessions.iter().filter(|s| s.is_closed()).count();
        if gone > 0 {
            return Err(format!(
                "{gone} of {} sessions were closed while held",
                sessions.len()
            ));
        }
    }
    drop(sessions);
    Ok(())
}

/// Waits until `path` exists, polling, for at most `max`.
async fn hold(path: &std::path::Path, max: Duration) -> Result<(), String> {
    let end = tokio::time::Instant::now() + max;
    while !path.exists() {
        if tokio::time::Instant::now() >= end {
            return Err(format!(
                "{} did not appear within {} s",
                path.display(),
                max.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
