//! The binary, started on its own the way the README describes.

// Test code: a failed set-up or assertion should panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Without `TETHER_SERVICE_TOKEN` authz-svc could not follow identity's and tenancy's change
/// streams and would stay NOT_SERVING for ever; it must refuse to start, naming the key.
#[test]
fn the_binary_refuses_to_start_without_the_service_token() {
    let data = std::env::temp_dir().join(format!("tether-authz-startup-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_authz-svc"))
        .env_clear()
        .env("TETHER_DATA_DIR", &data)
        .env("TETHER_AUTHZ_LISTEN_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("authz-svc started without TETHER_SERVICE_TOKEN instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("TETHER_SERVICE_TOKEN"), "the error names the key: {stderr}");
    let _ = std::fs::remove_dir_all(data);
}
