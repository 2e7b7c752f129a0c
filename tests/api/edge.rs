//! The HTTP edge under abuse: slow, large and unauthenticated bodies hold no memory and are cut
//! off; silent connections are closed; body limits hold for chunked bodies too. Clients here
//! speak raw HTTP/1.1 over TCP, as an attacker's script would, since an HTTP client library
//! would not send a body this slowly or stop half-way.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::helpers::{eventually, spawn_app_with, TestDb};

/// How a raw request ended, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The server answered with this status.
    Answered(u16),
    /// The server closed (or reset) the connection without an answer we could read.
    Closed,
    /// Still open at the test's deadline: nobody cut it off.
    StillOpen,
}

/// Sends `head` (request line and headers), then the body: `fast` bytes at once, then 1 KiB
/// every 100 ms, until the server answers or closes, up to `declared` bytes or `deadline`.
/// Returns how it ended and when, counted from the start.
async fn trickle(
    address: SocketAddr,
    head: String,
    fast: usize,
    declared: usize,
    deadline: Instant,
) -> (Ending, Duration) {
    let started = Instant::now();
    let Ok(stream) = TcpStream::connect(address).await else {
        return (Ending::Closed, started.elapsed());
    };
    let (mut reader, mut writer) = stream.into_split();
    if writer.write_all(head.as_bytes()).await.is_err() {
        return (Ending::Closed, started.elapsed());
    }
    let chunk = vec![b'-'; 64 * 1024];
    let mut sent = 0;
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let step = if sent < fast { 64 * 1024 } else { 1024 }.min(declared - sent);
        let write = async {
            if step == 0 {
                std::future::pending::<()>().await;
            }
            if sent >= fast {
                // The pace is the behaviour under test: a slow sender, not a wait for an event.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            writer.write_all(&chunk[..step]).await
        };
        tokio::select! {
            read = reader.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return (Ending::Closed, started.elapsed()),
                Ok(n) => {
                    received.extend_from_slice(&buffer[..n]);
                    if let Some(status) = status_of(&received) {
                        return (Ending::Answered(status), started.elapsed());
                    }
                }
            },
            written = write => match written {
                Ok(()) => sent += step,
                // The server stopped reading: its answer (if any) is on the way.
                Err(_) => {
                    let rest = tokio::time::timeout(Duration::from_secs(2), reader.read_to_end(&mut received)).await;
                    let ending = match (rest, status_of(&received)) {
                        (_, Some(status)) => Ending::Answered(status),
                        _ => Ending::Closed,
                    };
                    return (ending, started.elapsed());
                }
            },
            _ = tokio::time::sleep_until(deadline) => return (Ending::StillOpen, started.elapsed()),
        }
    }
}

/// The status of an HTTP/1.1 response whose status line has arrived.
fn status_of(received: &[u8]) -> Option<u16> {
    let line_end = received.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&received[..line_end]).ok()?;
    line.split(' ').nth(1)?.parse().ok()
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `shopfront serve` in its own process, so its memory is its own (tests share this one).
struct Server {
    child: Child,
    address: SocketAddr,
}

impl Server {
    async fn start(db: &TestDb, env: &[(&str, &str)]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(env!("CARGO_BIN_EXE_shopfront"));
        command
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("SHOPFRONT_HTTP_ADDR", address.to_string())
            .env("SHOPFRONT_LOG", "error")
            .env(
                "SHOPFRONT_STORAGE_DIR",
                std::env::temp_dir().join("shopfront-test-files"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("start shopfront serve");
        let server = Server { child, address };
        // A child process announces nothing we can await: poll its liveness probe.
        let client = reqwest::Client::new();
        let url = format!("http://{address}/health/live");
        let up = eventually(Duration::from_secs(60), || {
            let request = client.get(&url).send();
            async move { request.await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        assert!(up, "shopfront serve answers on {address}");
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The attack: 50 clients post multi-megabyte uploads with made-up credentials and an
/// `Idempotency-Key`, send most of the body at once and trickle the rest; 50 more trickle a
/// body to the public log-in. Buffering bodies before authentication, or waiting for slow ones
/// forever, would hold hundreds of megabytes and every connection. The server must answer the
/// uploads 401 without reading them, cut the trickles off at the body-read timeout (408), and
/// stay within a small memory budget throughout.
#[tokio::test]
async fn slow_large_unauthenticated_bodies_hold_no_memory_and_are_cut_off() {
    const CLIENTS: usize = 50;
    const DECLARED: usize = 8 * 1024 * 1024;
    const SENT_AT_ONCE: usize = 6 * 1024 * 1024;
    let db = TestDb::empty().await;
    let server = Server::start(
        &db,
        &[
            ("SHOPFRONT_BODY_READ_TIMEOUT_SECONDS", "2"),
            ("SHOPFRONT_IDLE_TIMEOUT_SECONDS", "5"),
            // The limits would refuse most of this flood; the body rules must hold without.
            ("SHOPFRONT_RATE_LIMIT_PER_IP", "0"),
            ("SHOPFRONT_RATE_LIMIT_PER_USER", "0"),
            ("SHOPFRONT_RATE_LIMIT_LOGIN", "0"),
            ("SHOPFRONT_RATE_LIMIT_UPLOAD", "0"),
        ],
    )
    .await;
    let pid = server.pid();
    // Warm up: the first requests allocate what every later one reuses.
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let _ = client
            .post(format!("http://{}/api/v1/auth/login", server.address))
            .json(&serde_json::json!({"email": "a@example.com", "password": "x"}))
            .send()
            .await;
    }
    let baseline = rss_kib(pid);
    assert!(baseline > 0, "VmRSS of the server is readable");

    let peak = Arc::new(AtomicU64::new(baseline));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let (peak, stop) = (peak.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                // A sampling interval: memory has no event to await.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut uploads = Vec::new();
    let mut logins = Vec::new();
    for n in 0..CLIENTS {
        let head = format!(
            "POST /api/v1/orders/{}/receipts HTTP/1.1\r\nHost: shopfront\r\n\
             Authorization: Bearer forged-{n}\r\nIdempotency-Key: flood-{n}\r\n\
             Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {DECLARED}\r\n\r\n",
            uuid::Uuid::now_v7()
        );
        uploads.push(tokio::spawn(trickle(
            server.address,
            head,
            SENT_AT_ONCE,
            DECLARED,
            deadline,
        )));
        let head = "POST /api/v1/auth/login HTTP/1.1\r\nHost: shopfront\r\n\
                    Content-Type: application/json\r\nContent-Length: 500000\r\n\r\n"
            .to_owned();
        logins.push(tokio::spawn(trickle(
            server.address,
            head,
            0,
            500_000,
            deadline,
        )));
    }
    let mut upload_endings = Vec::new();
    for upload in uploads {
        upload_endings.push(upload.await.expect("upload client"));
    }
    let mut login_endings = Vec::new();
    for login in logins {
        login_endings.push(login.await.expect("login client"));
    }
    stop.store(true, Ordering::Relaxed);
    sampler.await.expect("sampler");
    let grown_kib = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    assert!(
        grown_kib < 64 * 1024,
        "the server grew by {} MiB under {CLIENTS} slow uploads of {} MiB",
        grown_kib / 1024,
        SENT_AT_ONCE / (1024 * 1024)
    );

    for (ending, after) in &upload_endings {
        assert!(
            matches!(ending, Ending::Answered(401) | Ending::Closed),
            "an unauthenticated upload ended {ending:?} after {after:?}"
        );
        assert!(
            *after < Duration::from_secs(10),
            "{ending:?} after {after:?}"
        );
    }
    assert!(
        upload_endings
            .iter()
            .any(|(ending, _)| *ending == Ending::Answered(401)),
        "{upload_endings:?}"
    );
    for (ending, after) in &login_endings {
        assert!(
            matches!(ending, Ending::Answered(408) | Ending::Closed),
            "a trickled log-in ended {ending:?} after {after:?}"
        );
        assert!(
            (Duration::from_millis(1500)..Duration::from_secs(10)).contains(after),
            "a trickled log-in was cut off after {after:?}, not at the 2 s timeout"
        );
    }
    assert!(
        login_endings
            .iter()
            .any(|(ending, _)| *ending == Ending::Answered(408)),
        "{login_endings:?}"
    );
    drop(server);
}

/// A connection that sends nothing, or sends a request and then keeps the connection open
/// without another, is closed after the idle timeout instead of holding a socket and a task
/// for ever. (A client trickling its *headers* is not cut off by the service: hyper's header
/// timeout is not reachable through poem; the reverse proxy in front must bound that.)
#[tokio::test]
async fn silent_connections_are_closed_after_the_idle_timeout() {
    let mut settings = shopfront::config::ServeSettings::for_tests();
    settings.edge.idle_timeout_seconds = 1;
    let app = spawn_app_with(settings).await;
    let address: SocketAddr = app
        .address
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    for opening in ["", "GET /health/live HTTP/1.1\r\nHost: shop\r\n\r\n"] {
        let started = Instant::now();
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream.write_all(opening.as_bytes()).await.expect("write");
        let mut buffer = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buffer)).await;
        assert!(closed.is_ok(), "{opening:?}: still open after 10 s");
        assert!(
            started.elapsed() >= Duration::from_millis(800),
            "{opening:?}: closed after {:?}, before the idle timeout",
            started.elapsed()
        );
    }
    app.stop().await;
}

/// A chunked body (no `Content-Length` to refuse it by) is cut off once it passes its route's
/// limit: 413, and the handler never sees it.
#[tokio::test]
async fn a_chunked_body_over_its_route_limit_is_413() {
    let app = spawn_app_with(shopfront::config::ServeSettings::for_tests()).await;
    let address: SocketAddr = app
        .address
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    // One 2 MiB chunk, sent as fast as the server takes it.
    let head = "POST /api/v1/auth/login HTTP/1.1\r\nHost: shopfront\r\n\
                Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n200000\r\n"
        .to_owned();
    let size = 0x20_0000;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (ending, _) = trickle(address, head, size, size, deadline).await;
    assert_eq!(ending, Ending::Answered(413));
    app.stop().await;
}
