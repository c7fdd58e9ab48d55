//! `flush`: the device's cost of one durable small write, the floor under a
//! durable commit (a job's push cannot be acknowledged sooner).
//!
//! Writes `--size` bytes at the next block of a file preallocated in `--dir`
//! (overwrites, so the file's size and extents do not change) and calls
//! `fdatasync` after each, `--writes` times; reports the median and p99 of
//! write + fdatasync. With `--baseline-p50-us`, also prints the floor of one
//! durable job at a time: one flush plus one loopback round trip.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use serde_json::json;

use crate::stats::percentile;

#[derive(Args, Debug)]
pub struct FlushArgs {
    /// Directory on the store's filesystem (a probe file is made and removed there).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// Synchronous writes to make.
    #[arg(long, default_value_t = 300)]
    pub writes: u64,
    /// Bytes per write.
    #[arg(long, default_value_t = 4096)]
    pub size: usize,
    /// Also print the figures as one JSON line.
    #[arg(long)]
    pub json: bool,
}

/// Blocks the probe file cycles over (the file is preallocated to this).
const BLOCKS: u64 = 256;

pub fn run(a: &FlushArgs) -> Result<i32, String> {
    let size = a.size.clamp(1, 1 << 20);
    let path = a
        .dir
        .join(format!(".switchyard-flush-probe.{}", std::process::id()));
    let result = probe(&path, size, a.writes.max(1));
    let _ = std::fs::remove_file(&path);
    let mut lat = result?;
    lat.sort_unstable();
    let p50 = percentile(&lat, 50.0) as f64 / 1000.0;
    let p99 = percentile(&lat, 99.0) as f64 / 1000.0;
    println!(
        "flush: {size} B write + fdatasync in {}: {} writes, p50 {p50:.1} us, p99 {p99:.1} us",
        a.dir.display(),
        lat.len()
    );
    if a.json {
        println!(
            "{}",
            json!({
                "bench": "flush",
                "writes": lat.len(),
                "size": size,
                "latency_p50_us": p50,
                "latency_p99_us": p99,
            })
        );
    }
    Ok(0)
}

fn probe(path: &PathBuf, size: usize, writes: u64) -> Result<Vec<u64>, String> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let block = vec![0x5au8; size];
    let stride = size.next_multiple_of(4096) as u64;
    // Preallocate (written and synced) so each probe write only changes data.
    for _ in 0..BLOCKS {
        f.write_all(&block).map_err(|e| e.to_string())?;
        let pad = stride as usize - size;
        if pad > 0 {
            f.write_all(&vec![0u8; pad]).map_err(|e| e.to_string())?;
        }
    }
    f.sync_all().map_err(|e| e.to_string())?;
    let mut lat = Vec::with_capacity(writes as usize);
    for i in 0..writes {
        f.seek(SeekFrom::Start((i % BLOCKS) * stride))
            .map_err(|e| e.to_string())?;
        let t = Instant::now();
        f.write_all(&block).map_err(|e| e.to_string())?;
        f.sync_data().map_err(|e| e.to_string())?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    Ok(lat)
}
