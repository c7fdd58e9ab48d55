//! The supervisor: one task per `[[process]]` starts the program in a
//! process group of its own, logs its output line by line under its name,
//! restarts it per its policy with a doubling backoff, gives up on a crash
//! loop, and obeys start/stop/restart requests (`api.rs`). On shutdown every
//! group gets SIGTERM, then SIGKILL after the process's `stop_timeout`, so
//! that nothing it forked outlives the router.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use rustix::process::{kill_process_group, test_kill_process_group, Pid, Signal};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::{ProcessConfig, RestartPolicy};

/// The log target of process output (exempt from the per-call-site rate
/// limit: it is one call site for every line of every process).
pub const OUTPUT_TARGET: &str = "switchyard::process::output";

/// A line of output longer than this is logged in pieces.
const MAX_LINE: usize = 8 << 10;

/// How often a stopping group is looked at while it has time left.
const POLL: Duration = Duration::from_millis(50);

/// Where a process stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Running,
    /// Waiting out the backoff before a restart.
    Backoff,
    /// Stopped on request, or never started (`autostart = false`).
    Stopped,
    /// Ended and not restarted (its policy says so).
    Exited,
    /// Left stopped after too many restarts inside the crash-loop window.
    CrashLoop,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Backoff => "backoff",
            Status::Stopped => "stopped",
            Status::Exited => "exited",
            Status::CrashLoop => "crash_loop",
        }
    }
}

/// A process's state, as `switchyard.process.list` shows it.
#[derive(Debug, Clone)]
pub struct State {
    pub status: Status,
    pub pid: Option<u32>,
    /// Times it was started again (automatically or on request).
    pub restarts: u64,
    /// How it last ended: "exit status 3", "signal 9", "cannot start: ...".
    pub last_exit: Option<String>,
    /// When `status` last changed.
    pub since: SystemTime,
}

/// Requests from the API; each is answered once it is carried out.
pub enum Control {
    Start(oneshot::Sender<()>),
    Stop(oneshot::Sender<()>),
    Restart(oneshot::Sender<()>),
}

/// One supervised process.
pub struct Managed {
    pub config: ProcessConfig,
    state: Mutex<State>,
    control: mpsc::UnboundedSender<Control>,
    /// Automatic restarts, for /metrics.
    pub restarts_total: AtomicU64,
}

impl Managed {
    pub fn state(&self) -> State {
        self.state.lock().clone()
    }

    /// Sends a request and waits until it is carried out; `false` if the
    /// supervisor has stopped.
    pub async fn request(&self, make: fn(oneshot::Sender<()>) -> Control) -> bool {
        let (tx, rx) = oneshot::channel();
        self.control.send(make(tx)).is_ok() && rx.await.is_ok()
    }

    fn set(&self, status: Status, pid: Option<u32>) {
        let mut s = self.state.lock();
        s.status = status;
        s.pid = pid;
        s.since = SystemTime::now();
    }
}

/// Every `[[process]]`, supervised.
pub struct Supervisor {
    processes: Vec<Arc<Managed>>,
    stop: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Supervisor {
    /// Starts supervising `configs` (those with `autostart` start now).
    pub fn start(configs: Vec<ProcessConfig>) -> Arc<Supervisor> {
        let stop = CancellationToken::new();
        let mut processes = Vec::new();
        let mut tasks = Vec::new();
        for config in configs {
            let (tx, rx) = mpsc::unbounded_channel();
            let m = Arc::new(Managed {
                config,
                state: Mutex::new(State {
                    status: Status::Stopped,
                    pid: None,
                    restarts: 0,
                    last_exit: None,
                    since: SystemTime::now(),
                }),
                control: tx,
                restarts_total: AtomicU64::new(0),
            });
            tasks.push(tokio::spawn(supervise(m.clone(), rx, stop.clone())));
            processes.push(m);
        }
        Arc::new(Supervisor {
            processes,
            stop,
            tasks: Mutex::new(tasks),
        })
    }

    pub fn processes(&self) -> &[Arc<Managed>] {
        &self.processes
    }

    pub fn find(&self, name: &str) -> Option<&Arc<Managed>> {
        self.processes.iter().find(|p| p.config.name == name)
    }

    /// Stops every process (SIGTERM to its group, SIGKILL after its
    /// `stop_timeout`) and waits until they are gone.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// What ended a run.
enum Ended {
    Exited(ExitStatus),
    /// Stopped on request (`then_start`: a restart).
    Stopped {
        then_start: bool,
    },
    Shutdown,
}

async fn supervise(
    m: Arc<Managed>,
    mut rx: mpsc::UnboundedReceiver<Control>,
    stop: CancellationToken,
) {
    let name = m.config.name.clone();
    let mut want_run = m.config.autostart;
    // Automatic restarts inside the crash-loop window.
    let mut recent: VecDeque<Instant> = VecDeque::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let answer = |waiting: &mut Vec<oneshot::Sender<()>>| {
        for w in waiting.drain(..) {
            let _ = w.send(());
        }
    };
    loop {
        if !want_run {
            answer(&mut waiting);
            tokio::select! {
                _ = stop.cancelled() => return,
                c = rx.recv() => match c {
                    None => return,
                    Some(Control::Start(r)) | Some(Control::Restart(r)) => {
                        want_run = true;
                        recent.clear();
                        waiting.push(r);
                    }
                    Some(Control::Stop(r)) => { let _ = r.send(()); }
                },
            }
            continue;
        }
        let ended = match spawn(&m.config) {
            Err(e) => {
                tracing::error!(process = %name, "cannot start process {name}: {e}");
                m.state.lock().last_exit = Some(format!("cannot start: {e}"));
                // A start request learns it at once (last_exit), not after
                // the backoff.
                answer(&mut waiting);
                None
            }
            Ok(mut child) => {
                let pid = child.id();
                m.set(Status::Running, pid);
                tracing::info!(process = %name, pid, "process {name} started");
                answer(&mut waiting);
                let ended = run(&m, &mut child, pid, &mut rx, &stop).await;
                let exit = match &ended {
                    (_, Some(status)) => describe(status),
                    (_, None) => "unknown".into(),
                };
                m.state.lock().last_exit = Some(exit.clone());
                Some((ended.0, exit))
            }
        };
        let failed = match ended {
            Some((Ended::Shutdown, exit)) => {
                tracing::info!(process = %name, "process {name} stopped ({exit})");
                m.set(Status::Stopped, None);
                return;
            }
            Some((Ended::Stopped { then_start }, exit)) => {
                tracing::info!(process = %name, "process {name} stopped on request ({exit})");
                m.set(Status::Stopped, None);
                if then_start {
                    m.state.lock().restarts += 1;
                } else {
                    want_run = false;
                }
                continue;
            }
            Some((Ended::Exited(status), exit)) => {
                if status.success() {
                    tracing::info!(process = %name, "process {name} ended ({exit})");
                } else {
                    tracing::warn!(process = %name, "process {name} ended ({exit})");
                }
                !status.success()
            }
            None => true,
        };
        let restart = match m.config.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => failed,
            RestartPolicy::Never => false,
        };
        if !restart {
            m.set(Status::Exited, None);
            want_run = false;
            continue;
        }
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > m.config.crash_loop.window)
        {
            recent.pop_front();
        }
        if recent.len() >= m.config.crash_loop.max_restarts as usize {
            tracing::error!(
                process = %name,
                "process {name} is crash-looping ({} restarts within {}): left stopped; \
                 switchyard.process.start starts it again",
                recent.len(),
                humantime::format_duration(m.config.crash_loop.window)
            );
            m.set(Status::CrashLoop, None);
            want_run = false;
            continue;
        }
        let delay = m.config.backoff.delay(recent.len());
        recent.push_back(now);
        m.set(Status::Backoff, None);
        tracing::info!(
            process = %name,
            "restarting process {name} in {}",
            humantime::format_duration(delay)
        );
        tokio::select! {
            _ = stop.cancelled() => {
                m.set(Status::Stopped, None);
                return;
            }
            _ = tokio::time::sleep(delay) => {}
            c = rx.recv() => match c {
                None => return,
                Some(Control::Start(r)) | Some(Control::Restart(r)) => waiting.push(r),
                Some(Control::Stop(r)) => {
                    m.set(Status::Stopped, None);
                    want_run = false;
                    waiting.push(r);
                }
            },
        }
        if want_run {
            m.state.lock().restarts += 1;
            m.restarts_total.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Waits for the running `child` to end, carrying out requests meanwhile.
async fn run(
    m: &Managed,
    child: &mut Child,
    pid: Option<u32>,
    rx: &mut mpsc::UnboundedReceiver<Control>,
    stop: &CancellationToken,
) -> (Ended, Option<ExitStatus>) {
    let group = pid
        .and_then(|p| i32::try_from(p).ok())
        .and_then(Pid::from_raw);
    let grace = m.config.stop_timeout;
    loop {
        tokio::select! {
            status = child.wait() => {
                // The leader is gone; what it forked goes with it.
                if let Some(g) = group {
                    let _ = kill_process_group(g, Signal::KILL);
                }
                let status = status.ok();
                return (Ended::Exited(status.unwrap_or_default()), status);
            }
            _ = stop.cancelled() => {
                let status = terminate(child, group, grace).await;
                return (Ended::Shutdown, status);
            }
            c = rx.recv() => match c {
                Some(Control::Start(r)) => { let _ = r.send(()); }
                Some(Control::Stop(r)) => {
                    let status = terminate(child, group, grace).await;
                    m.set(Status::Stopped, None);
                    let _ = r.send(());
                    return (Ended::Stopped { then_start: false }, status);
                }
                Some(Control::Restart(r)) => {
                    let status = terminate(child, group, grace).await;
                    // Answered once the new run has started.
                    let _ = m.control.send(Control::Start(r));
                    return (Ended::Stopped { then_start: true }, status);
                }
                None => {
                    let status = terminate(child, group, grace).await;
                    return (Ended::Shutdown, status);
                }
            },
        }
    }
}

/// SIGTERM to the group, then SIGKILL to whatever of it is left after
/// `grace`; returns the leader's exit status.
async fn terminate(child: &mut Child, group: Option<Pid>, grace: Duration) -> Option<ExitStatus> {
    let Some(g) = group else {
        let _ = child.start_kill();
        return child.wait().await.ok();
    };
    let _ = kill_process_group(g, Signal::TERM);
    let deadline = Instant::now() + grace;
    let status = tokio::time::timeout_at(deadline, child.wait())
        .await
        .ok()
        .and_then(Result::ok);
    // The leader may be gone while what it forked still runs.
    while Instant::now() < deadline && test_kill_process_group(g).is_ok() {
        tokio::time::sleep(POLL).await;
    }
    let _ = kill_process_group(g, Signal::KILL);
    match status {
        Some(s) => Some(s),
        None => child.wait().await.ok(),
    }
}

/// "exit status 3", "signal 15 (killed)".
fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}

/// Starts the program in a process group of its own, its output logged.
fn spawn(config: &ProcessConfig) -> std::io::Result<Child> {
    let mut cmd = Command::new(&config.command);
    cmd.args(&config.args)
        .envs(&config.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(dir) = &config.working_dir {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn()?;
    let name: Arc<str> = config.name.as_str().into();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(log_lines(out, name.clone(), "stdout"));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(log_lines(err, name, "stderr"));
    }
    Ok(child)
}

/// Logs what `r` yields, one event per line, as `[name] line`.
async fn log_lines<R: AsyncRead + Unpin>(mut r: R, name: Arc<str>, stream: &'static str) {
    let mut line: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    let emit = |line: &mut Vec<u8>| {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let text = String::from_utf8_lossy(line);
        tracing::info!(target: OUTPUT_TARGET, process = %name, stream, "[{name}] {text}");
        line.clear();
    };
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                emit(&mut line);
            } else {
                line.push(b);
                if line.len() >= MAX_LINE {
                    emit(&mut line);
                }
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line);
    }
}
