//! Dynoxide (a DynamoDB-compatible server, SQLite in memory) on a free 127.0.0.1 port, stopped by
//! the PID we started when dropped. Each renew run gets its own: the emulator slows down as its
//! database grows, and a run should not pay for the tables of the runs before it.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

pub struct Dynoxide {
    child: tokio::process::Child,
    pub endpoint: String,
}

impl Dynoxide {
    pub async fn start(path: &Path) -> Result<Self, String> {
        for _ in 0..3 {
            let port = paycycle_testkit::moto::free_port().map_err(|e| e.to_string())?;
            let mut child = tokio::process::Command::new(path)
                .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string(), "--log", "quiet"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("starting {}: {e} (make bench installs it)", path.display()))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                    return Ok(Self { child, endpoint: format!("http://127.0.0.1:{port}") });
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = child.kill().await;
        }
        Err("dynoxide did not start".into())
    }
}

impl Drop for Dynoxide {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
