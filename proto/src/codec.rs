//! The codec of every generated Tether server: tonic-prost's, except for what a request body
//! that does not decode (random bytes, a string that is not UTF-8) is answered. tonic-prost says
//! INTERNAL with the decoder's text, as if the server had failed; it is the caller's fault, so
//! here it is INVALID_ARGUMENT with the stable reason `INVALID_FORMAT` in an `ErrorInfo`, like
//! any other malformed input. Replies are encoded exactly as tonic-prost does.

use std::marker::PhantomData;

use prost::Message;
use tonic::{
    Code, Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder},
};
use tonic_prost::{ProstCodec, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{ERROR_DOMAIN, common::v1::ErrorReason};

/// Encodes replies `T`, decodes requests `U`.
#[derive(Debug, Clone)]
pub struct ServerCodec<T, U> {
    _messages: PhantomData<(T, U)>,
}

impl<T, U> Default for ServerCodec<T, U> {
    fn default() -> Self {
        Self { _messages: PhantomData }
    }
}

impl<T, U> Codec for ServerCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder { _message: PhantomData }
    }
}

/// Decodes a request `U`; a body that is not one is the caller's fault.
#[derive(Debug, Clone)]
pub struct RequestDecoder<U> {
    _message: PhantomData<U>,
}

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(malformed)
    }
}

/// INVALID_ARGUMENT / `INVALID_FORMAT`, naming what did not decode (prost's text says which
/// message and field, e.g. "LoginRequest.email: invalid string value").
fn malformed(error: prost::DecodeError) -> Status {
    let name = ErrorReason::InvalidFormat.as_str_name();
    let reason = name.strip_prefix("ERROR_REASON_").unwrap_or(name);
    let details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, std::collections::HashMap::new());
    Status::with_error_details(Code::InvalidArgument, format!("the request body is malformed: {error}"), details)
}
