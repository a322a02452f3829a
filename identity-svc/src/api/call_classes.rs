//! Which of identity's RPCs are not ordinary calls, for the server's budgets
//! (`tether_runtime::server::budget`); the others share the standard budget.

use tether_proto::identity::v1::identity_service_server::IdentityServiceServer;
use tether_runtime::server::{CallClass::*, ServedApi};
use tonic::server::NamedService;

pub const SERVED: ServedApi = ServedApi {
    name: <IdentityServiceServer<super::IdentityApi> as NamedService>::NAME,
    classes: &[
        // Every other service asks it on every request: never crowded out by the rest.
        ("Authenticate", HotPath),
        // Each spends a password hash (argon2id), most of them before the caller is known: a
        // budget of their own, and one client address gets only a share of it. The budget also
        // bounds the hashing queue.
        ("Login", Expensive),
        ("CompleteSecondFactor", Expensive),
        ("CompletePasswordChange", Expensive),
        ("ChangePassword", Expensive),
        ("SetTemporaryPassword", Expensive),
        ("AcceptInvitation", Expensive),
        ("RequestPasswordReset", Expensive),
        ("ResetPassword", Expensive),
        ("CreateUser", Expensive),
    ],
};
