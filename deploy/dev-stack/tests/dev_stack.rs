//! The README's run command, end to end: `tether-dev` brings up four healthy services, shows the
//! owner login once, stops cleanly on Ctrl-C, reuses its data on the next start, and refuses a bad
//! configuration naming the key.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

const SERVICES: [&str; 4] = ["IDENTITY", "TENANCY", "AUTHZ", "AUDIT"];

/// Four loopback ports that were free a moment ago.
fn free_ports() -> Vec<u16> {
    let listeners: Vec<_> = (0..4).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

struct DevStack {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl DevStack {
    fn start(data_dir: &std::path::Path, ports: &[u16]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tether-dev"));
        command.env_clear().env("TETHER_DATA_DIR", data_dir).env("TETHER_LOG", "warn");
        for (service, port) in SERVICES.iter().zip(ports) {
            command.env(format!("TETHER_{service}_LISTEN_ADDR"), format!("127.0.0.1:{port}"));
        }
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self { child, lines }
    }

    /// Stdout up to and including the banner's last line.
    fn banner(&self) -> String {
        let mut out = String::new();
        loop {
            let line = self.lines.recv_timeout(Duration::from_secs(60)).expect("banner within 60 s");
            out.push_str(&line);
            out.push('\n');
            if line.contains("Ctrl-C") {
                return out;
            }
        }
    }

    /// Sends SIGINT (Ctrl-C) and waits for a clean exit, at most 5 s.
    fn interrupt(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
        let sent = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "tether-dev exited with {status}");
                return;
            }
            assert!(sent.elapsed() < Duration::from_secs(5), "tether-dev did not stop within 5 s of Ctrl-C");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn all_serving(ports: &[u16]) {
    for port in ports {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap();
        let reply = HealthClient::new(channel).check(HealthCheckRequest { service: String::new() }).await.unwrap();
        assert_eq!(reply.get_ref().status, ServingStatus::Serving as i32, "port {port}");
    }
}

#[tokio::test]
async fn the_dev_stack_runs_four_healthy_services_and_restarts_on_its_data() {
    let data_dir = std::env::temp_dir().join(format!("tether-dev-{}", uuid::Uuid::new_v4().simple()));
    let ports = free_ports();

    let first = DevStack::start(&data_dir, &ports);
    let banner = first.banner();
    for port in &ports {
        assert!(banner.contains(&format!("http://127.0.0.1:{port}")), "{banner}");
    }
    assert!(banner.contains("owner@msp.example") && banner.contains("password:"), "{banner}");
    all_serving(&ports).await;
    first.interrupt();

    let second = DevStack::start(&data_dir, &ports);
    let banner = second.banner();
    assert!(banner.contains("owner@msp.example"), "{banner}");
    assert!(!banner.contains("generated"), "the password is shown only at the first start: {banner}");
    all_serving(&ports).await;
    second.interrupt();
    std::fs::remove_dir_all(data_dir).ok();
}

#[test]
fn a_bad_setting_stops_start_up_naming_the_key() {
    for (key, value, named) in [
        ("TETHER_TENANCY_LISTEN_ADDR", "nowhere", "TETHER_TENANCY_LISTEN_ADDR"),
        ("TETHER_AUTHZ_ROLE_PACK", "none", "TETHER_AUTHZ_ROLE_PACK"),
        ("TETHER_CONFIG_FILE", "/nonexistent/tether.env", "/nonexistent/tether.env"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_tether-dev"))
            .env_clear()
            .env(key, value)
            .env("TETHER_DATA_DIR", std::env::temp_dir().join(format!("tether-cfg-{}", uuid::Uuid::new_v4())))
            .output()
            .unwrap();
        assert!(!output.status.success(), "{key}={value} should stop start-up");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "stderr should name {named}: {stderr}");
    }
}
