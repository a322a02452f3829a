//! What every port tells a caller about itself, whoever the caller is: reflection describes the
//! one service that port serves, and a request body that does not decode is the caller's fault
//! (INVALID_ARGUMENT with a reason), never an INTERNAL.

mod stack;

use prost::bytes::{Buf, BufMut};
use tether_tests::{RunningService, TestDatabase};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

/// Each service, its gRPC name, and one unary RPC whose request's field 1 is a string.
const SERVICES: [(&str, &str, &str); 4] = [
    ("identity", "tether.identity.v1.IdentityService", "Login"),
    ("tenancy", "tether.tenancy.v1.TenancyService", "GetTenant"),
    ("authz", "tether.authz.v1.AuthzService", "Check"),
    ("audit", "tether.audit.v1.AuditService", "GetEvent"),
];

fn grpc_name(service: &RunningService) -> &'static str {
    SERVICES.iter().find(|(n, ..)| *n == service.name).unwrap().1
}

async fn reflect(channel: Channel, request: MessageRequest) -> Result<MessageResponse, Status> {
    let request = ServerReflectionRequest { host: String::new(), message_request: Some(request) };
    let mut replies =
        ServerReflectionClient::new(channel).server_reflection_info(tokio_stream::iter([request])).await?.into_inner();
    let reply = replies.message().await?.expect("one reply");
    match reply.message_response.expect("a reply body") {
        MessageResponse::ErrorResponse(e) => Err(Status::new(Code::from_i32(e.error_code), e.error_message)),
        other => Ok(other),
    }
}

#[tokio::test]
async fn each_port_describes_only_the_service_it_serves() {
    let db = TestDatabase::fresh().await;
    let running = stack::start_all(&db, None::<fn() -> std::future::Ready<()>>).await;
    for service in &running {
        let own = grpc_name(service);
        let listed = reflect(service.channel().await, MessageRequest::ListServices(String::new())).await.unwrap();
        let MessageResponse::ListServicesResponse(list) = listed else { panic!("{}: not a list", service.name) };
        let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        let mut expected = vec![own, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"];
        expected.sort();
        assert_eq!(names, expected, "{} lists what it does not serve", service.name);

        // Its own API is described; another service's is not there to be looked up.
        let found = reflect(service.channel().await, MessageRequest::FileContainingSymbol(own.into())).await;
        assert!(matches!(found, Ok(MessageResponse::FileDescriptorResponse(_))), "{}: {found:?}", service.name);
        for (_, other, _) in SERVICES.iter().filter(|(_, n, _)| *n != own) {
            let looked_up =
                reflect(service.channel().await, MessageRequest::FileContainingSymbol((*other).into())).await;
            assert_eq!(looked_up.map(|_| ()).unwrap_err().code(), Code::NotFound, "{} describes {other}", service.name);
        }
    }
    for service in running {
        service.stop().await.unwrap();
    }
}

/// Sends and receives message bodies as they are, so a test can send bytes no client would.
#[derive(Clone, Copy, Default)]
struct RawBytes;

impl Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;
    fn encoder(&mut self) -> Self::Encoder {
        RawBytes
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawBytes
    }
}

impl Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

async fn call_raw(channel: &Channel, path: &str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path = path.parse().unwrap();
    grpc.unary(tonic::Request::new(body), path, RawBytes).await.map(tonic::Response::into_inner)
}

/// xorshift64: the same "random" bodies on every run.
fn pseudo_random_bodies(count: usize) -> Vec<Vec<u8>> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count).map(|_| (0..1 + next() % 64).map(|_| next() as u8).collect()).collect()
}

#[tokio::test]
async fn a_body_that_does_not_decode_is_invalid_argument_with_a_reason() {
    let db = TestDatabase::fresh().await;
    let running = stack::start_all(&db, None::<fn() -> std::future::Ready<()>>).await;
    let malformed: [(&str, Vec<u8>); 4] = [
        // Field 1 (a string) holding bytes that are not UTF-8.
        ("invalid UTF-8 in a string", vec![0x0a, 0x02, 0xc3, 0x28]),
        ("a length past the end", vec![0x0a, 0x05, b'a']),
        ("an unknown wire type", vec![0x0f, 0x01]),
        ("a varint that never ends", vec![0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
    ];
    for service in &running {
        let (_, grpc, method) = SERVICES.iter().find(|(n, ..)| *n == service.name).unwrap();
        let path = format!("/{grpc}/{method}");
        let channel = service.channel().await;
        for (what, body) in &malformed {
            let status = call_raw(&channel, &path, body.clone()).await.unwrap_err();
            assert_eq!(
                (status.code(), tether_runtime::error::reason_of(&status).as_deref()),
                (Code::InvalidArgument, Some("INVALID_FORMAT")),
                "{path}, {what}: {status:?}"
            );
        }
        // Whatever random bytes decode to, the answer is never the server's fault.
        for body in pseudo_random_bodies(200) {
            if let Err(status) = call_raw(&channel, &path, body.clone()).await {
                assert!(!matches!(status.code(), Code::Internal | Code::Unknown), "{path} {body:02x?}: {status:?}");
                if status.code() == Code::InvalidArgument {
                    assert!(tether_runtime::error::reason_of(&status).is_some(), "{path} {body:02x?}: {status:?}");
                }
            }
        }
    }
    for service in running {
        service.stop().await.unwrap();
    }
}
