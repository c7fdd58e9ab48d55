//! `switchyard-bench`: a load generator for Switchyard (or any WAMP router).
//!
//! * `pubsub`: N subscriber sessions on one topic, one publisher publishing
//!   M acknowledged events with K in flight; reports deliveries/s and checks
//!   that every subscriber got every event, once and in order.
//! * `pubsub-nats`: the same fan-out against a NATS core server, each
//!   publish acknowledged by a PING round trip (see `nats.rs`).
//! * `rpc`: one callee echoing its arguments, C caller sessions with K calls
//!   in flight each until M calls are done; reports calls/s and round-trip
//!   latency percentiles.
//! * `queue`: durable job queue, P producers pushing with W in flight and C
//!   workers running the jobs; jobs/s and enqueue latencies (bench/queue/).
//! * `sessions`: sessions established per second (N sessions, C handshakes
//!   at once); `cycles`: connect-subscribe-leave cycles per second.
//! * `idle`: the router's resident memory per idle session.
//! * `baseline`: a bare TCP ping-pong over loopback, the machine's floor.
//! * `flush`: a small write + fdatasync, the disk's floor under a durable commit.
//! * `crash`: the SIGKILL-under-load queue test, repeated (scripts/crash-test.sh).
//! * `soak`: sessions churning for minutes (scripts/soak.sh).
//! * `storm`: healthy throughput with and without subscribers that stop
//!   reading (scripts/soak.sh).
//! * `summarize`: medians and spread of the JSON lines of several runs.
//!
//! With `--server-pid`, the router's CPU time (utime+stime from
//! `/proc/PID/stat`) over the measured window is reported too.

mod baseline;
mod crash;
mod flush;
mod idle;
mod lean;
mod lean_pub;
mod lean_sub;
mod nats;
mod pubsub;
mod queue;
mod rpc;
mod sessions;
mod soak;
mod stats;
mod storm;

use clap::{Args, Parser, Subcommand, ValueEnum};
use switchyard_client::Serializer;

#[derive(Parser)]
#[command(
    name = "switchyard-bench",
    version,
    about = "Load generator for WAMP routers"
)]
struct Cli {
    /// Tokio worker threads of the load generator (1 = current-thread runtime).
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    /// Confine the load generator (all its threads) to this CPU.
    #[arg(long, global = true)]
    pin_cpu: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// PubSub fan-out: 1 publisher -> N subscribers.
    Pubsub(pubsub::PubsubArgs),
    /// The same fan-out against a NATS core server (PUB+PING as the acknowledged publish).
    PubsubNats(nats::NatsArgs),
    /// RPC: C callers -> 1 echo callee.
    Rpc(rpc::RpcArgs),
    /// Bare TCP ping-pong over loopback (no WAMP): the machine's floor.
    Baseline(baseline::BaselineArgs),
    /// A small write + fdatasync (median): the disk's floor under a durable commit.
    Flush(flush::FlushArgs),
    /// Print the median (and min..max) of each figure over JSON result lines.
    Summarize(stats::SummarizeArgs),
    /// Sessions established per second: N sessions, C handshakes at once.
    Sessions(sessions::SessionsArgs),
    /// Connect-subscribe-leave cycles per second, W at once.
    Cycles(sessions::CyclesArgs),
    /// Router memory per idle session: open N sessions, compare its RSS.
    Idle(idle::IdleArgs),
    /// Durable job queue: P producers push, C workers run the jobs.
    Queue(queue::QueueArgs),
    /// SIGKILL the router under queue load, restart, drain, count; N times.
    Crash(crash::CrashArgs),
    /// Sessions churning (connect, subscribe, publish, call, leave).
    Soak(soak::SoakArgs),
    /// Healthy throughput with and without subscribers that stop reading.
    Storm(storm::StormArgs),
}

/// Options shared by the load subcommands.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Router URL: ws://host:port/path, rs://host:port, tcp://host:port or unix:/path.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Realm to join.
    #[arg(long, default_value = "realm1")]
    pub realm: String,
    /// Serializer.
    #[arg(long, value_enum, default_value_t = Ser::Json)]
    pub serializer: Ser,
    /// Payload size in bytes (one string argument of this length).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// PID of the router, to report its CPU time over the measured window;
    /// several (comma-separated, e.g. the nodes of a cluster and their NATS
    /// server) report the sum.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Also print the figures as one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Give up after this many seconds (the run then reports what it saw).
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

/// A serializer name on the command line.
#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum Ser {
    Json,
    Msgpack,
    Cbor,
}

impl From<Ser> for Serializer {
    fn from(s: Ser) -> Self {
        match s {
            Ser::Json => Serializer::Json,
            Ser::Msgpack => Serializer::MsgPack,
            Ser::Cbor => Serializer::Cbor,
        }
    }
}

fn main() {
    let cli = Cli::parse();
    if let Some(cpu) = cli.pin_cpu {
        if let Err(e) = pin_to_cpu(cpu) {
            eprintln!("cannot pin to CPU {cpu}: {e}");
            std::process::exit(1);
        }
    }
    match &cli.cmd {
        Cmd::Summarize(a) => std::process::exit(stats::summarize(a)),
        Cmd::Baseline(a) => std::process::exit(match baseline::run(a) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        }),
        Cmd::Flush(a) => std::process::exit(match flush::run(a) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        }),
        _ => {}
    }
    let rt = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async {
        match cli.cmd {
            Cmd::Pubsub(a) => pubsub::run(a).await,
            Cmd::PubsubNats(a) => nats::run(a).await,
            Cmd::Rpc(a) => rpc::run(a).await,
            Cmd::Idle(a) => idle::run(a).await,
            Cmd::Sessions(a) => sessions::run_sessions(a).await,
            Cmd::Cycles(a) => sessions::run_cycles(a).await,
            Cmd::Queue(a) => queue::run(a).await,
            Cmd::Crash(a) => crash::run(a).await,
            Cmd::Soak(a) => soak::run(a).await,
            Cmd::Storm(a) => storm::run(a).await,
            Cmd::Summarize(_) | Cmd::Baseline(_) | Cmd::Flush(_) => Ok(0),
        }
    });
    match code {
        Ok(c) => std::process::exit(c),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

/// Sets this thread's CPU affinity (threads started later inherit it).
fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "CPU number too large",
        ));
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside
    // it (cpu < CPU_SETSIZE), and sched_setaffinity reads size_of bytes.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
