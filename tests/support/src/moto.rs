//! moto's server on a free 127.0.0.1 port, from the project's `.venv` (made by `make bootstrap`),
//! started through `tools/scripts/moto_serialized.py` so conditional writes are atomic.
//!
//! With `PAYCYCLE_MOTO_ENDPOINT` set (the Makefile starts one server per test run), every test
//! shares that server and isolates itself by table/bus/queue names; otherwise each
//! [`MotoServer::start`] spawns its own. A spawned server is killed by the PID we started, on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::KitError;

/// Environment variable naming an already running moto server to share.
pub const SHARED_ENDPOINT_VAR: &str = "PAYCYCLE_MOTO_ENDPOINT";

#[derive(Debug)]
pub struct MotoServer {
    child: Option<Child>,
    endpoint: String,
}

/// How to start moto: `PAYCYCLE_MOTO_SERVER` (an executable taking `-H`/`-p`) if set, else the
/// project's launcher `tools/scripts/moto_serialized.py` with `.venv/bin/python` — moto with
/// DynamoDB's write atomicity (see that file for why plain `moto_server` is not enough).
pub fn moto_command() -> (PathBuf, Vec<PathBuf>) {
    if let Some(path) = std::env::var_os("PAYCYCLE_MOTO_SERVER") {
        return (PathBuf::from(path), Vec::new());
    }
    let root = crate::repo_root();
    (root.join(".venv/bin/python"), vec![root.join("tools/scripts/moto_serialized.py")])
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl MotoServer {
    /// The shared server if `PAYCYCLE_MOTO_ENDPOINT` is set, else a new one.
    pub fn shared_or_start() -> Result<Self, KitError> {
        match std::env::var(SHARED_ENDPOINT_VAR) {
            Ok(endpoint) if !endpoint.is_empty() => Ok(Self { child: None, endpoint }),
            _ => Self::start(),
        }
    }

    /// Spawns a new moto server on a free port and waits until it accepts connections.
    pub fn start() -> Result<Self, KitError> {
        let (exe, prefix) = moto_command();
        if !exe.exists() {
            return Err(KitError::Moto(format!(
                "{} not found: run `make bootstrap` (it creates .venv with moto)",
                exe.display()
            )));
        }
        let mut last_error = String::new();
        // A port picked free can be taken before moto binds it; try a few.
        for _ in 0..3 {
            let port = free_port().map_err(|e| KitError::Moto(format!("no free port: {e}")))?;
            let mut command = Command::new(&exe);
            command
                .args(&prefix)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            die_with_parent(&mut command);
            let mut child = command.spawn().map_err(|e| KitError::Moto(format!("spawning {}: {e}", exe.display())))?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!("moto_server exited with {status} on port {port}");
                    break;
                }
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Ok(Self { child: Some(child), endpoint: format!("http://{addr}") });
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = format!("moto_server did not listen on {addr} within 30 s");
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Err(KitError::Moto(last_error))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The PID of the server this handle started (None when sharing one).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// An SDK config pointed at this server with fixed test credentials and Seoul's region.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        sdk_config_for(&self.endpoint).await
    }
}

/// An SDK config for a moto endpoint: static test credentials, `ap-northeast-2`.
pub async fn sdk_config_for(endpoint: &str) -> aws_config::SdkConfig {
    let credentials = aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "paycycle-testkit");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("ap-northeast-2"))
        .credentials_provider(credentials)
        .endpoint_url(endpoint)
        .load()
        .await
}

/// If we are killed before `Drop` runs (SIGKILL, a signal during start-up), the kernel sends the
/// server SIGTERM (Linux `PR_SET_PDEATHSIG`), so no emulator outlives the process that started it.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child being set up.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

impl Drop for MotoServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // Child::kill signals exactly the PID we spawned.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
