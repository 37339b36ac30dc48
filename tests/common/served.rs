//! The real binary serving: a `wharf serve` command a test prepares, started with its standard
//! error piped, its address read from the listening line, and the rest of its log collected by a
//! thread until it exits. Dropping a [`Served`] kills the process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The wharf binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_wharf");

/// A running `wharf serve`, its address, and its log.
pub struct Served {
    pub child: Child,
    pub addr: String,
    pub log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Served {
    /// `wharf serve --config CONFIG`, not told of any systemd socket, with no standard input.
    pub fn command(config: &std::path::Path) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null());
        command
    }

    /// Starts `command` and waits for its listening line (text or JSON log).
    pub fn spawn(mut command: Command) -> Served {
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut log = String::new();
        let addr = loop {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "wharf exited:\n{log}"
            );
            log.push_str(&line);
            if let Some(i) = line.find("wharf is listening addr=") {
                break line[i + 24..].split_whitespace().next().unwrap().to_owned();
            }
            // [log] format = "json"
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                if event["message"] == "wharf is listening" {
                    break event["addr"].as_str().unwrap().to_owned();
                }
            }
        };
        let log = Arc::new(Mutex::new(log));
        let sink = log.clone();
        // Line by line, so a test can read the log while wharf runs; through the BufReader, which
        // may hold lines read ahead with the listening line.
        let reader = std::thread::spawn(move || {
            let mut line = String::new();
            while stderr.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().push_str(&line);
                line.clear();
            }
        });
        Served {
            child,
            addr,
            log,
            reader: Some(reader),
        }
    }

    /// Sends a signal by name (`HUP`, `TERM`) with the shell's builtin kill: no procps needed.
    pub fn signal(&self, name: &str) {
        let status = Command::new("sh")
            .args(["-c", &format!("kill -{name} {}", self.child.id())])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit (up to a generous deadline); the exit code and the whole log.
    pub async fn wait(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "wharf did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        let log = self.log.lock().clone();
        (status.code(), log)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
