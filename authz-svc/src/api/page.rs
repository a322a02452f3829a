//! Page tokens: opaque, and bound to the request's other fields (a token used with other
//! filters is INVALID_PAGE_TOKEN).

use tether_proto::{common::v1::ErrorReason, values::PageSize};
use tether_runtime::error::ApiError;
use uuid::Uuid;

use crate::domain::parse_uuid;

pub fn size(page_size: i32) -> Result<usize, ApiError> {
    Ok(PageSize::parse("page_size", page_size)?.get())
}

/// A short fingerprint of the filters a token was issued for.
fn bind(binding: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in binding.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn bad_token() -> ApiError {
    ApiError::new(ErrorReason::InvalidPageToken, "the page token is invalid for this request")
        .with_metadata("field", "page_token")
}

/// One page of a fully computed list.
pub fn offset<T>(items: Vec<T>, page_size: i32, token: &str, binding: &str) -> Result<(Vec<T>, String), ApiError> {
    let size = size(page_size)?;
    let start = if token.is_empty() {
        0
    } else {
        let (b, n) = token.split_once('.').ok_or_else(bad_token)?;
        if b != bind(binding) {
            return Err(bad_token());
        }
        n.parse::<usize>().map_err(|_| bad_token())?
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(size).collect();
    let next =
        if start + page.len() < total { format!("{}.{}", bind(binding), start + page.len()) } else { String::new() };
    Ok((page, next))
}

/// The id after which a keyed page starts.
pub fn cursor(token: &str, binding: &str) -> Result<Option<Uuid>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let (b, id) = token.split_once('.').ok_or_else(bad_token)?;
    if b != bind(binding) {
        return Err(bad_token());
    }
    parse_uuid(id).map(Some).ok_or_else(bad_token)
}

pub fn make_cursor(binding: &str, last: Uuid) -> String {
    format!("{}.{}", bind(binding), last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_bound_to_their_filters() {
        let (page, next) = offset((0..120).collect(), 0, "", "a").unwrap();
        assert_eq!(page.len(), 50);
        let (page, _) = offset((0..120).collect::<Vec<_>>(), 0, &next, "a").unwrap();
        assert_eq!(page[0], 50);
        assert_eq!(
            offset((0..120).collect::<Vec<_>>(), 0, &next, "b").unwrap_err().reason,
            ErrorReason::InvalidPageToken
        );
        assert_eq!(size(-1).unwrap_err().reason, ErrorReason::ValueOutOfRange);
        assert_eq!(size(10_000).unwrap(), PageSize::MAX);
    }
}
