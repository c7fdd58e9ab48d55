//! `baseline`: the round trip of a bare 64-byte TCP ping-pong over loopback
//! between two threads with blocking sockets, no WAMP and no async runtime.
//! It is the floor under any router's round trip on this machine.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use clap::Args;
use serde_json::json;

use crate::stats::{cpu_seconds, percentile};

#[derive(Args, Debug)]
pub struct BaselineArgs {
    /// Round trips to make.
    #[arg(long, default_value_t = 20_000)]
    pub round_trips: u64,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Also print the figures as one JSON line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &BaselineArgs) -> Result<i32, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let size = a.payload.max(1);
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; size];
        loop {
            if s.read_exact(&mut buf).is_err() {
                return Ok(());
            }
            s.write_all(&buf)?;
        }
    });
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let msg = vec![b'x'; size];
    let mut buf = vec![0u8; size];
    let mut lat = Vec::with_capacity(a.round_trips as usize);
    let cpu0 = cpu_seconds(None);
    let t0 = Instant::now();
    for _ in 0..a.round_trips {
        let t = Instant::now();
        s.write_all(&msg).map_err(|e| e.to_string())?;
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = match (cpu0, cpu_seconds(None)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    drop(s);
    let _ = echo.join();
    lat.sort_unstable();
    let p50 = percentile(&lat, 50.0) as f64 / 1000.0;
    let p99 = percentile(&lat, 99.0) as f64 / 1000.0;
    let mean = wall / a.round_trips.max(1) as f64 * 1e6;
    println!(
        "baseline: bare TCP loopback ping-pong of {size} B, 2 threads, blocking sockets: {} round trips, p50 {p50:.1} us, p99 {p99:.1} us, mean {mean:.1} us{}",
        a.round_trips,
        cpu.map(|c| format!("; CPU (both ends) {:.1} us per round trip", c / a.round_trips.max(1) as f64 * 1e6))
            .unwrap_or_default()
    );
    if a.json {
        println!(
            "{}",
            json!({
                "bench": "baseline",
                "round_trips": a.round_trips,
                "payload": size,
                "latency_p50_us": p50,
                "latency_p99_us": p99,
                "latency_mean_us": mean,
                "wall_s": wall,
            })
        );
    }
    Ok(0)
}
