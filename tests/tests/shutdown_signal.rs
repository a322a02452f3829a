//! SIGTERM stops every service within 5 s, and calls in flight complete instead of being cut:
//! each service has a health Watch stream open, which receives NOT_SERVING and then ends
//! cleanly. This file holds one test because it signals its own process.

use std::time::{Duration, Instant};

mod stack;

use tether_tests::TestDatabase;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_calls_and_stops_within_five_seconds() {
    // Installed before anything else, so the signal can never take the default action (exit).
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();

    let db = TestDatabase::fresh().await;
    let running = stack::start_all(&db, Some(tether_runtime::shutdown::signal)).await;
    let mut watches = Vec::new();
    for service in &running {
        service.wait_serving().await;
        let mut health = HealthClient::new(service.channel().await);
        let mut stream = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert_eq!(first.status, ServingStatus::Serving as i32, "{}", service.name);
        watches.push((service.name, stream));
    }

    let sent = Instant::now();
    let status = std::process::Command::new("kill").arg("-TERM").arg(std::process::id().to_string()).status().unwrap();
    assert!(status.success());
    sigterm.recv().await;

    for (name, mut stream) in watches {
        let last = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap().unwrap();
        assert_eq!(last.map(|m| m.status), Some(ServingStatus::NotServing as i32), "{name}: told it is going away");
        let end = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap();
        assert!(matches!(end, Ok(None)), "{name}: the in-flight call should end cleanly, got {end:?}");
    }
    for service in running {
        let name = service.name;
        tokio::time::timeout(Duration::from_secs(5), service.join()).await.unwrap().unwrap();
        assert!(sent.elapsed() < Duration::from_secs(5), "{name} took {:?} to stop", sent.elapsed());
    }
}
