//! Page tokens: opaque, and bound to the request's other fields (a token used with other
//! filters is INVALID_PAGE_TOKEN).

use tether_proto::{
    common::v1::ErrorReason,
    values::{PageSize, PageToken},
};
use tether_runtime::error::ApiError;
use uuid::Uuid;

use crate::domain::parse_uuid;

pub fn size(page_size: i32) -> Result<usize, ApiError> {
    Ok(PageSize::parse("page_size", page_size)?.get())
}

fn bad_token() -> ApiError {
    ApiError::field(ErrorReason::InvalidPageToken, "page_token", "the page token is invalid for this request")
}

/// One page of a fully computed list.
pub fn offset<T>(items: Vec<T>, page_size: i32, token: &str, binding: &str) -> Result<(Vec<T>, String), ApiError> {
    let size = size(page_size)?;
    let start = match PageToken::decode("page_token", token, binding)? {
        None => 0,
        Some(n) => n.parse::<usize>().map_err(|_| bad_token())?,
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(size).collect();
    let end = start + page.len();
    let next = if end < total { PageToken::encode(binding, &end.to_string()) } else { String::new() };
    Ok((page, next))
}

/// The id after which a keyed page starts.
pub fn cursor(token: &str, binding: &str) -> Result<Option<Uuid>, ApiError> {
    match PageToken::decode("page_token", token, binding)? {
        None => Ok(None),
        Some(id) => parse_uuid(&id).map(Some).ok_or_else(bad_token),
    }
}

pub fn make_cursor(binding: &str, last: Uuid) -> String {
    PageToken::encode(binding, &last.to_string())
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
