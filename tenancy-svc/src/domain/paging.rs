//! Page sizes and opaque page tokens bound to the request's filters.

use tether_proto::{common::v1::ErrorReason, values::PageSize};

use super::Rejection;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub size: usize,
    /// The cursor of the previous page, if any.
    pub after: Option<String>,
}

impl PageRequest {
    /// `filters` names the request's other fields: a token issued for other filters is refused.
    pub fn parse(page_size: i32, page_token: &str, filters: &str) -> Result<Self, Rejection> {
        let size = PageSize::parse("page_size", page_size)?.get();
        let after = if page_token.is_empty() { None } else { Some(PageToken::decode(page_token, filters)?) };
        Ok(Self { size, after })
    }
}

/// `hex("<fingerprint of filters>|<cursor>")`.
pub struct PageToken;

impl PageToken {
    pub fn encode(filters: &str, cursor: &str) -> String {
        hex::encode(format!("{:016x}|{cursor}", fingerprint(filters)))
    }

    fn decode(token: &str, filters: &str) -> Result<String, Rejection> {
        let bad = || Rejection::new(ErrorReason::InvalidPageToken, "the page token is not valid here").on("page_token");
        if token.len() > 2048 {
            return Err(bad());
        }
        let bytes = hex::decode(token).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let (print, cursor) = text.split_once('|').ok_or_else(bad)?;
        if print != format!("{:016x}", fingerprint(filters)) {
            return Err(bad());
        }
        Ok(cursor.to_owned())
    }
}

/// FNV-1a: stable across builds, which a std hasher is not guaranteed to be.
fn fingerprint(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_default_and_clamp() {
        assert_eq!(PageRequest::parse(0, "", "f").unwrap().size, 50);
        assert_eq!(PageRequest::parse(9999, "", "f").unwrap().size, 500);
        assert_eq!(PageRequest::parse(-1, "", "f").unwrap_err().reason, ErrorReason::ValueOutOfRange);
    }

    #[test]
    fn tokens_are_bound_to_their_filters() {
        let token = PageToken::encode("tenant=a", "cursor|with|bars");
        assert_eq!(PageRequest::parse(10, &token, "tenant=a").unwrap().after.as_deref(), Some("cursor|with|bars"));
        assert_eq!(PageRequest::parse(10, &token, "tenant=b").unwrap_err().reason, ErrorReason::InvalidPageToken);
        assert_eq!(PageRequest::parse(10, "zz", "tenant=a").unwrap_err().reason, ErrorReason::InvalidPageToken);
    }
}
