//! The README's run command, end to end: `tether-dev` brings up four healthy services, shows the
//! owner login once, stops cleanly on Ctrl-C, reuses its data on the next start (a TOTP secret
//! enrolled before a restart still checks after it), and refuses a bad configuration naming the
//! key.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

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
    /// `tether-dev` on `ports`, up to its banner (`extra` adds settings). A port that was free
    /// when picked can be taken before the stack binds it (any outgoing connection on this
    /// machine may land on it), so a start that fails before its banner is tried again, on the
    /// same ports when `retry_same` (a restart on its data), else on fresh ones.
    fn start(
        data_dir: &std::path::Path,
        ports: &[u16],
        extra: &[(&str, &str)],
        retry_same: bool,
    ) -> (Self, Vec<u16>, String) {
        let mut ports = ports.to_vec();
        for attempt in 1..=5 {
            let mut command = Command::new(env!("CARGO_BIN_EXE_tether-dev"));
            command.env_clear().env("TETHER_DATA_DIR", data_dir).env("TETHER_LOG", "warn");
            for (key, value) in extra {
                command.env(key, value);
            }
            for (service, port) in SERVICES.iter().zip(&ports) {
                command.env(format!("TETHER_{service}_LISTEN_ADDR"), format!("127.0.0.1:{port}"));
            }
            let mut stack = Self::spawn(command);
            if let Some(banner) = stack.banner() {
                return (stack, ports, banner);
            }
            let _ = stack.child.wait();
            assert!(attempt < 5, "tether-dev did not start in 5 attempts");
            if retry_same {
                std::thread::sleep(Duration::from_millis(500));
            } else {
                // A first start: what the failed attempt wrote (an owner whose generated password
                // was never shown) goes with it.
                let _ = std::fs::remove_dir_all(data_dir);
                ports = free_ports();
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn spawn(mut command: Command) -> Self {
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

    /// Stdout up to and including the banner's last line; `None` if the process ended first.
    fn banner(&self) -> Option<String> {
        let mut out = String::new();
        loop {
            let line = match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("no banner within 60 s: {out}"),
            };
            out.push_str(&line);
            out.push('\n');
            if line.contains("Ctrl-C") {
                return Some(out);
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

/// Every service answers SERVING within 60 s of the banner (authz-svc first loads identity's
/// and tenancy's snapshots, so it turns SERVING a moment after the others).
async fn all_serving(ports: &[u16]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for port in ports {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap();
        let mut health = HealthClient::new(channel);
        loop {
            let reply = health.check(HealthCheckRequest { service: String::new() }).await.unwrap();
            if reply.get_ref().status == ServingStatus::Serving as i32 {
                break;
            }
            assert!(Instant::now() < deadline, "port {port} not SERVING within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn the_dev_stack_runs_four_healthy_services_and_restarts_on_its_data() {
    let data_dir = std::env::temp_dir().join(format!("tether-dev-{}", uuid::Uuid::new_v4().simple()));
    let (first, ports, banner) = DevStack::start(&data_dir, &free_ports(), &[], false);
    for port in &ports {
        assert!(banner.contains(&format!("http://127.0.0.1:{port}")), "{banner}");
    }
    assert!(banner.contains("owner@msp.example") && banner.contains("password:"), "{banner}");
    all_serving(&ports).await;
    let password = owner_password(&banner);
    let secret = two_factor::enroll_owner(ports[0], &password).await;
    first.interrupt();

    let (second, _, banner) = DevStack::start(&data_dir, &ports, &[], true);
    assert!(banner.contains("owner@msp.example"), "{banner}");
    assert!(!banner.contains("generated"), "the password is shown only at the first start: {banner}");
    all_serving(&ports).await;
    two_factor::log_in_with_code(ports[0], &password, &secret).await;
    second.interrupt();
    std::fs::remove_dir_all(data_dir).ok();
}

/// The generated owner password the first start's banner shows.
fn owner_password(banner: &str) -> String {
    let after = banner.split("password: ").nth(1).expect("a generated password in the banner");
    after.split_whitespace().next().unwrap().to_owned()
}

mod two_factor {
    //! The owner turns on TOTP through identity's API, and logs in with it after a restart (the
    //! secret is encrypted with the key the dev stack keeps in its data dir).

    use std::time::Duration;

    use identity_svc::domain::totp;
    use tether_proto::identity::v1::{
        self as pb, complete_second_factor_request::Code, identity_service_client::IdentityServiceClient,
        login_outcome::Outcome,
    };
    use tonic::{Request, transport::Channel};

    async fn client(port: u16) -> IdentityServiceClient<Channel> {
        IdentityServiceClient::new(
            Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap(),
        )
    }

    /// The owner's login outcome; retried while the owner's membership is still on its way to
    /// tenancy-svc (a first start).
    async fn login(client: &mut IdentityServiceClient<Channel>, password: &str) -> Outcome {
        let request =
            || pb::LoginRequest { email: "owner@msp.example".into(), password: password.into(), ..Default::default() };
        for _ in 0..100 {
            if let Ok(reply) = client.login(request()).await {
                return reply.into_inner().outcome.unwrap().outcome.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("the owner could not log in");
    }

    fn bearer<T>(token: &str, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }

    fn code(secret: &str, offset: i64) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        totp::code_at(&totp::base32_decode(secret).unwrap(), now / totp::STEP_SECONDS + offset)
    }

    /// Enrolls the owner in TOTP; returns the secret.
    pub async fn enroll_owner(port: u16, password: &str) -> String {
        let mut client = client(port).await;
        let Outcome::Session(session) = login(&mut client, password).await else { panic!("expected a session") };
        let token = &session.session_token;
        let begun = client
            .begin_totp_enrollment(bearer(token, pb::BeginTotpEnrollmentRequest::default()))
            .await
            .unwrap()
            .into_inner();
        let confirm = pb::ConfirmTotpEnrollmentRequest { totp_code: code(&begun.secret, 0), ..Default::default() };
        client.confirm_totp_enrollment(bearer(token, confirm)).await.unwrap();
        begun.secret
    }

    /// Logs the owner in with the password and a code of `secret`.
    pub async fn log_in_with_code(port: u16, password: &str, secret: &str) {
        let mut client = client(port).await;
        let Outcome::SecondFactorRequired(challenge) = login(&mut client, password).await else {
            panic!("expected the second factor to be asked")
        };
        // The next step's code: the current one may be the step the enrollment used up.
        let complete = pb::CompleteSecondFactorRequest {
            challenge_token: challenge.challenge_token,
            code: Some(Code::TotpCode(code(secret, 1))),
        };
        let done = client.complete_second_factor(complete).await.expect("the code is accepted after a restart");
        assert!(matches!(done.into_inner().outcome.unwrap().outcome, Some(Outcome::Session(_))));
    }
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

mod otlp {
    //! A stand-in OTLP collector: keeps the trace ids of the spans it is sent.

    use std::sync::{Arc, Mutex};

    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    };

    #[derive(Clone, Default)]
    pub struct Collector {
        pub spans: Arc<Mutex<Vec<(String, String, String)>>>,
    }

    #[tonic::async_trait]
    impl TraceService for Collector {
        async fn export(
            &self,
            request: tonic::Request<ExportTraceServiceRequest>,
        ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
            let mut spans = self.spans.lock().unwrap();
            for resource_spans in &request.get_ref().resource_spans {
                let service = resource_spans
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref())
                    .map(|v| format!("{:?}", v.value))
                    .unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        spans.push((hex::encode(&span.trace_id), span.name.clone(), service.clone()));
                    }
                }
            }
            Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
        }
    }

    pub async fn start() -> (Collector, String) {
        let collector = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (collector, format!("http://{addr}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector_in_the_callers_trace() {
    let (collector, endpoint) = otlp::start().await;
    let data_dir = std::env::temp_dir().join(format!("tether-otlp-{}", uuid::Uuid::new_v4().simple()));
    let (stack, ports, _) =
        DevStack::start(&data_dir, &free_ports(), &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)], false);

    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", ports[2])).unwrap().connect().await.unwrap();
    let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
    request.metadata_mut().insert("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01").parse().unwrap());
    HealthClient::new(channel).check(request).await.unwrap();
    // Ctrl-C flushes the exporter before the process exits; the collector keeps serving meanwhile.
    tokio::task::spawn_blocking(move || stack.interrupt()).await.unwrap();

    let spans = collector.spans.lock().unwrap().clone();
    let span = spans.iter().find(|(id, _, _)| id == trace_id);
    let (_, name, service) = span.unwrap_or_else(|| panic!("no span of trace {trace_id} among {spans:?}"));
    assert_eq!(name, "/grpc.health.v1.Health/Check");
    assert!(service.contains("tether-dev"), "service.name: {service}");
    std::fs::remove_dir_all(data_dir).ok();
}
