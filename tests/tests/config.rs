//! A bad configuration value stops start-up with a message naming the key.

use tether_runtime::{ConfigError, ConfigSource, access::ServiceToken};

const SERVICE_TOKEN: &str = "a-deployment-secret-0123456789abcdef";

/// What every service needs to start: the service token, and identity's TOTP keys.
fn valid() -> ConfigSource {
    ConfigSource::from_pairs([
        (ServiceToken::KEY, SERVICE_TOKEN),
        ("TETHER_IDENTITY_TOTP_KEYS", tether_tests::TOTP_KEYS),
    ])
}

fn named(err: ConfigError, key: &str) {
    assert!(err.to_string().contains(key), "error {err:?} should name {key}");
}

#[test]
fn each_service_names_the_bad_key() {
    let cases: [(&str, &str); 4] = [
        ("TETHER_IDENTITY_LISTEN_ADDR", "localhost"),
        ("TETHER_TENANCY_MAX_DEPTH", "deep"),
        ("TETHER_AUTHZ_ROLE_PACK", "no-such-pack"),
        ("TETHER_AUDIT_MAX_CONCURRENT_REQUESTS", "0"),
    ];
    let bad = |key: &str, value: &str| valid().with(key, value);
    named(identity_svc::Config::load(&bad(cases[0].0, cases[0].1)).unwrap_err(), cases[0].0);
    named(tenancy_svc::Config::load(&bad(cases[1].0, cases[1].1)).unwrap_err(), cases[1].0);
    named(authz_svc::Config::load(&bad(cases[2].0, cases[2].1)).unwrap_err(), cases[2].0);
    named(audit_svc::Config::load(&bad(cases[3].0, cases[3].1)).unwrap_err(), cases[3].0);
}

#[test]
fn service_specific_values_are_checked_too() {
    let src = valid().with("TETHER_IDENTITY_BOOTSTRAP_OWNER_EMAIL", "not-an-email");
    named(identity_svc::Config::load(&src).unwrap_err(), "TETHER_IDENTITY_BOOTSTRAP_OWNER_EMAIL");
    let src = valid().with("TETHER_IDENTITY_BOOTSTRAP_OWNER_PASSWORD", "short");
    named(identity_svc::Config::load(&src).unwrap_err(), "TETHER_IDENTITY_BOOTSTRAP_OWNER_PASSWORD");
    let src = valid().with("TETHER_TENANCY_MSP_SLUG", "Not A Slug");
    named(tenancy_svc::Config::load(&src).unwrap_err(), "TETHER_TENANCY_MSP_SLUG");
    let src = valid().with("TETHER_AUTHZ_IDENTITY_ADDR", "identity:50051");
    named(authz_svc::Config::load(&src).unwrap_err(), "TETHER_AUTHZ_IDENTITY_ADDR");
    let src = valid().with("DATABASE_URL", "mysql://db/tether");
    named(audit_svc::Config::load(&src).unwrap_err(), "DATABASE_URL");
    let src = valid().with("TETHER_LOG_FORMAT", "xml");
    named(tether_runtime::telemetry::TelemetrySettings::load(&src, "x").unwrap_err(), "TETHER_LOG_FORMAT");
}

/// identity-svc does not start without the keys that encrypt TOTP secrets, and a bad key is
/// named by its id without its value being shown.
#[test]
fn identity_requires_its_totp_keys_and_names_a_bad_one() {
    let missing =
        identity_svc::Config::load(&ConfigSource::from_pairs([(ServiceToken::KEY, SERVICE_TOKEN)])).unwrap_err();
    assert!(matches!(&missing, ConfigError::Missing { key, .. } if key == "TETHER_IDENTITY_TOTP_KEYS"), "{missing}");
    let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let src = ConfigSource::from_pairs([
        (ServiceToken::KEY, SERVICE_TOKEN.to_owned()),
        ("TETHER_IDENTITY_TOTP_KEYS", format!("new:{key},old:0123")),
    ]);
    let bad = identity_svc::Config::load(&src).unwrap_err().to_string();
    assert!(bad.contains("TETHER_IDENTITY_TOTP_KEYS") && bad.contains("key old"), "{bad}");
    assert!(!bad.contains(key), "the key itself is never shown: {bad}");
    let src = ConfigSource::from_pairs([
        (ServiceToken::KEY, SERVICE_TOKEN.to_owned()),
        ("TETHER_IDENTITY_TOTP_KEYS", format!("a:{key}")),
    ]);
    assert!(identity_svc::Config::load(&src).is_ok());
}

/// Every service needs the service token, to call the others on its own account and to admit
/// their calls. Started without it, each refuses at once and names the key, instead of starting
/// and later failing with a misleading refusal (authz-svc used to stay NOT_SERVING, logging
/// that a session token was required).
#[test]
fn each_service_refuses_to_start_without_the_service_token() {
    let without = ConfigSource::default();
    let identity_without = ConfigSource::from_pairs([("TETHER_IDENTITY_TOTP_KEYS", tether_tests::TOTP_KEYS)]);
    named(identity_svc::Config::load(&identity_without).unwrap_err(), "TETHER_SERVICE_TOKEN");
    named(tenancy_svc::Config::load(&without).unwrap_err(), "TETHER_SERVICE_TOKEN");
    named(authz_svc::Config::load(&without).unwrap_err(), "TETHER_SERVICE_TOKEN");
    named(audit_svc::Config::load(&without).unwrap_err(), "TETHER_SERVICE_TOKEN");
    // With it, the defaults are enough.
    let with = ConfigSource::from_pairs([(ServiceToken::KEY, SERVICE_TOKEN)]);
    let identity_with = ConfigSource::from_pairs([
        (ServiceToken::KEY, SERVICE_TOKEN),
        ("TETHER_IDENTITY_TOTP_KEYS", tether_tests::TOTP_KEYS),
    ]);
    identity_svc::Config::load(&identity_with).unwrap();
    tenancy_svc::Config::load(&with).unwrap();
    authz_svc::Config::load(&with).unwrap();
    audit_svc::Config::load(&with).unwrap();
}
