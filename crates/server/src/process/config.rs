//! `[[process]]`: a program the router keeps running beside itself (a queue
//! worker, a backend that registers procedures): its command line,
//! environment, working directory, when it is restarted, how fast, and
//! when a crash loop makes the router give up. Checked here so that
//! `switchyard check-config` reports a bad entry with its line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// One `[[process]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// Unique among the processes: `A-Z a-z 0-9 _ - .`, up to 64 characters.
    pub name: String,
    /// The program (looked up in `PATH` when it has no `/`).
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Added to (or replacing) the router's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Default: the router's working directory.
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default)]
    pub backoff: Backoff,
    #[serde(default)]
    pub crash_loop: CrashLoop,
    /// How long a stopped process has after SIGTERM before its process
    /// group gets SIGKILL.
    #[serde(default = "default_stop_timeout", with = "humantime_serde")]
    pub stop_timeout: Duration,
    /// Start it with the router (default); `false` leaves it stopped until
    /// `switchyard.process.start`.
    #[serde(default = "yes")]
    pub autostart: bool,
}

/// `restart = "always" | "on-failure" | "never"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Whenever it ends, even with status 0.
    Always,
    /// When it ends with a non-zero status or a signal (the default).
    #[default]
    OnFailure,
    /// Never: it runs once.
    Never,
}

impl RestartPolicy {
    pub fn name(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

/// `backoff = { initial = "1s", max = "30s" }`: the wait before a restart,
/// doubled for every restart inside the crash-loop window, capped at `max`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    #[serde(default = "default_initial", with = "humantime_serde")]
    pub initial: Duration,
    #[serde(default = "default_max", with = "humantime_serde")]
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: default_initial(),
            max: default_max(),
        }
    }
}

impl Backoff {
    /// The wait before a restart when `recent` restarts happened inside the
    /// crash-loop window.
    pub fn delay(&self, recent: usize) -> Duration {
        let factor = 1u32 << recent.min(20);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// `crash_loop = { max_restarts = 5, window = "60s" }`: more than
/// `max_restarts` automatic restarts inside `window` and the process is left
/// stopped (ERROR in the log, `switchyard_process_crash_looping` = 1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrashLoop {
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
}

impl Default for CrashLoop {
    fn default() -> Self {
        CrashLoop {
            max_restarts: default_max_restarts(),
            window: default_window(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_stop_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_initial() -> Duration {
    Duration::from_secs(1)
}
fn default_max() -> Duration {
    Duration::from_secs(30)
}
fn default_max_restarts() -> u32 {
    5
}
fn default_window() -> Duration {
    Duration::from_secs(60)
}

/// Whether `name` may name a process (it appears in procedure arguments,
/// log lines and metric labels).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

impl ProcessConfig {
    /// What is wrong with this entry (`field: problem`).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !valid_name(&self.name) {
            p.push(format!(
                "name: {:?} must be 1 to 64 characters of A-Z a-z 0-9 _ - .",
                self.name
            ));
        }
        if self.command.trim().is_empty() {
            p.push("command: must not be empty".into());
        }
        if self.backoff.initial.is_zero() {
            p.push("backoff.initial: must be more than zero".into());
        }
        if self.backoff.max < self.backoff.initial {
            p.push("backoff.max: must be at least backoff.initial".into());
        }
        if self.crash_loop.max_restarts == 0 {
            p.push("crash_loop.max_restarts: must be at least 1".into());
        }
        if self.crash_loop.window.is_zero() {
            p.push("crash_loop.window: must be more than zero".into());
        }
        if self.stop_timeout.is_zero() {
            p.push("stop_timeout: must be more than zero".into());
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                p.push(format!("env: {k:?} is not a variable name"));
            }
        }
        p
    }
}

/// Problems of the whole `[[process]]` list: each entry's, and names used
/// twice. `(index, message)` pairs.
pub fn problems(list: &[&ProcessConfig]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        for problem in p.problems() {
            out.push((i, format!("process[{i}].{problem}")));
        }
        if list[..i].iter().any(|q| q.name == p.name) {
            out.push((i, format!("process[{i}].name: {:?} is used twice", p.name)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        assert_eq!(b.delay(0), Duration::from_millis(100));
        assert_eq!(b.delay(1), Duration::from_millis(200));
        assert_eq!(b.delay(3), Duration::from_millis(800));
        assert_eq!(b.delay(4), Duration::from_millis(1000));
        assert_eq!(b.delay(500), Duration::from_millis(1000));
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("pdf-worker.1"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
