//! Running the `switchyard` binary as a client command: to completion
//! (`run`) or in the background (`Background`), with a clean environment.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A `switchyard` client command with a clean environment (no SWITCHYARD_*
/// variables from the caller).
pub fn cli(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SWITCHYARD_") {
            c.env_remove(k);
        }
    }
    c
}

/// Runs a command to completion (at most 15 s).
pub fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().expect("spawn switchyard");
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(out) => out.expect("wait"),
        Err(_) => {
            // SAFETY: kill(2) on the child we spawned (reaped by the thread).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("{c:?} did not finish within 15 s");
        }
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A long-running client command (subscribe, register): its standard error
/// is read line by line in a thread; killed when dropped.
pub struct Background {
    child: Child,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Background {
    pub fn spawn(mut c: Command) -> Background {
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn switchyard");
        let err = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Background {
            child,
            stderr: rx,
            seen: Vec::new(),
        }
    }

    /// Waits (at most 10 s) for a line on standard error containing `what`.
    pub fn wait_stderr(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.seen.iter().any(|l| l.contains(what)) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no \"{what}\" on standard error; got: {:?}; status {:?}",
                    self.seen,
                    self.child.try_wait()
                ),
            }
        }
    }

    /// Everything on standard error so far (until 200 ms without a line).
    pub fn all_stderr(&mut self) -> String {
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }

    /// Sends `sig` and waits for the exit code.
    pub fn stop(&mut self, sig: i32) -> i32 {
        // SAFETY: kill(2) on our own, not yet reaped child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        self.wait()
    }

    /// Waits (at most 10 s) for the exit code (-1 if killed by a signal).
    pub fn wait(&mut self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "client did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Standard output (read to its end), one JSON value per line.
    pub fn stdout_lines(&mut self) -> Vec<Json> {
        use std::io::Read;
        let mut out = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            s.read_to_string(&mut out).expect("read stdout");
        }
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }

    /// Waits (at most 10 s) for the command to exit; its standard output.
    pub fn output(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let mut out = String::new();
                if let Some(mut o) = self.child.stdout.take() {
                    let _ = std::io::Read::read_to_string(&mut o, &mut out);
                }
                return (status.code(), out);
            }
            assert!(
                Instant::now() < deadline,
                "the command did not exit; stderr: {:?}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
