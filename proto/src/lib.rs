//! The v1 contracts of Tether's four services, generated from `proto/tether/**.proto`.
//!
//! Services depend on this crate, never on each other. Beside the generated code, [`values`]
//! holds the value rules the contracts' conventions promise (ids, role names, page sizes, text),
//! and [`stream`] the shape every `Watch` change stream shares.

// The packages below are generated. Doc comments are the .proto comments verbatim (written for
// buf, not rustdoc), and a few oneofs hold one large message beside small ones; boxing those
// would make every caller allocate for no gain.
#![allow(clippy::doc_lazy_continuation, clippy::doc_overindented_list_items, clippy::large_enum_variant)]

/// Encoded `FileDescriptorSet` of every Tether proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tether_descriptor.bin"));

/// The `ErrorInfo.domain` of every Tether error.
pub const ERROR_DOMAIN: &str = "tether";

pub mod codec;
pub mod stream;
pub mod values;

/// A package's messages and server (the first pass of `build.rs`), then its client.
macro_rules! package {
    ($name:literal) => {
        tonic::include_proto!($name);
        include!(concat!(env!("OUT_DIR"), "/clients/", $name, ".rs"));
    };
}

pub mod common {
    pub mod v1 {
        tonic::include_proto!("tether.common.v1");
    }
}
pub mod identity {
    pub mod v1 {
        package!("tether.identity.v1");
    }
}
pub mod tenancy {
    pub mod v1 {
        package!("tether.tenancy.v1");
    }
}
pub mod authz {
    pub mod v1 {
        package!("tether.authz.v1");
    }
}
pub mod audit {
    pub mod v1 {
        package!("tether.audit.v1");
    }
}
