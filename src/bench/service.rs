//! `shopfront serve` in a child process, as benchmarks run it: its own process, so its memory
//! and CPU are its own, started exactly as an operator starts it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::json;

/// A running `shopfront serve`, killed when dropped.
pub(super) struct Service {
    child: tokio::process::Child,
    pub pid: u32,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    storage: PathBuf,
}

impl Service {
    /// Starts `shopfront serve` on `database_url` on a free local port, rate limits off, and
    /// waits until it answers `/health/ready`. `env` adds settings.
    pub async fn start(database_url: &str, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let storage = std::env::temp_dir().join(format!("shopfront-bench-{port}"));
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("SHOPFRONT_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("SHOPFRONT_RATE_LIMIT_PER_IP", "0")
            .env("SHOPFRONT_RATE_LIMIT_PER_USER", "0")
            .env("SHOPFRONT_RATE_LIMIT_LOGIN", "0")
            .env("SHOPFRONT_STORAGE_DIR", &storage)
            .env("SHOPFRONT_LOG", "warn")
            .env_remove("SHOPFRONT_TELEGRAM_BOT_TOKEN")
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().context("cannot start `shopfront serve`")?;
        let pid = child.id().context("the service has no pid")?;
        let service = Self {
            child,
            pid,
            base: format!("http://127.0.0.1:{port}"),
            storage,
        };
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(response) = client
                .get(format!("{}/health/ready", service.base))
                .send()
                .await
            {
                if response.status().is_success() {
                    return Ok(service);
                }
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("the service did not become ready within 60 s");
            }
            // Polling a child process's readiness: nothing to await but its answer.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Logs `email` in and returns the access token.
    pub async fn log_in(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let login: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(login["access_token"]
            .as_str()
            .context("no access token")?
            .to_owned())
    }

    /// The service's resident memory, in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid)
    }

    /// Stops the service (SIGKILL: a benchmark's scratch database is dropped anyway).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.storage);
    }
}

/// Resident memory of process `pid`, in KiB.
pub(super) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}
