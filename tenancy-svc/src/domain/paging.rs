//! Page sizes and opaque page tokens bound to the request's filters.

use tether_proto::values::{self, PageSize};

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

/// The shared page token of the contract (bound to the request's filters).
pub struct PageToken;

impl PageToken {
    pub fn encode(filters: &str, cursor: &str) -> String {
        values::PageToken::encode(filters, cursor)
    }

    fn decode(token: &str, filters: &str) -> Result<String, Rejection> {
        Ok(values::PageToken::decode("page_token", token, filters)?.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use tether_proto::common::v1::ErrorReason;

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
