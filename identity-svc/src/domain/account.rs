//! Accounts: their states, and the requests about them parsed into typed values.

use tether_proto::{common::v1::ErrorReason, identity::v1 as pb, values};
use uuid::Uuid;

use super::{DisplayName, Email, FieldError};

/// A rejected input: the reason and the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    pub reason: ErrorReason,
    pub field: &'static str,
    pub message: String,
}

impl InputError {
    pub fn new(reason: ErrorReason, field: &'static str, message: impl Into<String>) -> Self {
        Self { reason, field, message: message.into() }
    }

    fn from_field(field: &'static str, e: FieldError) -> Self {
        let reason = match e {
            FieldError::Required => ErrorReason::FieldRequired,
            FieldError::TooLong { .. } => ErrorReason::FieldTooLong,
            FieldError::InvalidEmail => ErrorReason::InvalidEmail,
            FieldError::ControlCharacters => ErrorReason::InvalidFormat,
        };
        Self::new(reason, field, format!("{field} {e}"))
    }
}

pub fn parse_email(field: &'static str, raw: &str) -> Result<Email, InputError> {
    Email::parse(raw).map_err(|e| InputError::from_field(field, e))
}

pub fn parse_name(field: &'static str, raw: &str) -> Result<DisplayName, InputError> {
    DisplayName::parse(raw).map_err(|e| InputError::from_field(field, e))
}

/// An id: a canonical UUID (the contract's one spelling).
pub fn parse_id(field: &'static str, raw: &str) -> Result<Uuid, InputError> {
    values::id(field, raw).map_err(|e| InputError::new(e.reason, field, e.message))
}

/// An optional id: empty means none.
pub fn parse_opt_id(field: &'static str, raw: &str) -> Result<Option<Uuid>, InputError> {
    values::optional_id(field, raw).map_err(|e| InputError::new(e.reason, field, e.message))
}

/// Optional free text (job title, notes): the contract's text rule, "" means none.
pub fn parse_text(field: &'static str, raw: &str, max: usize) -> Result<Option<String>, InputError> {
    let value = values::text(field, raw, max).map_err(|e| InputError::new(e.reason, field, e.message))?;
    Ok((!value.is_empty()).then_some(value))
}

/// A role's catalog name (the contract's rule, shared by every service).
pub fn parse_role(field: &'static str, raw: &str) -> Result<String, InputError> {
    values::RoleName::parse(field, raw)
        .map(values::RoleName::into_string)
        .map_err(|e| InputError::new(e.reason, field, e.message))
}

pub const JOB_TITLE_MAX: usize = 200;
pub const NOTES_MAX: usize = 4000;
/// Passwords longer than this are refused before hashing, whatever the policy says, so a
/// huge input cannot buy a lot of hashing time.
pub const PASSWORD_HARD_MAX: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Active,
    Suspended,
    Deleted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deleted => "deleted",
        }
    }

    /// The stored spelling; anything else is not a status (a corrupt row, never a guess).
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "pending" => Some(Self::Pending),
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }

    pub fn to_proto(self) -> pb::UserStatus {
        match self {
            Self::Pending => pb::UserStatus::Pending,
            Self::Active => pb::UserStatus::Active,
            // A tombstone reports the state it had; we keep "suspended" as the closest.
            Self::Suspended | Self::Deleted => pb::UserStatus::Suspended,
        }
    }
}

/// A "create now" request, checked.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub display_name: DisplayName,
    pub password: String,
    pub is_msp_staff: bool,
    /// None for MSP staff given no tenant (the admin tenancy).
    pub tenant_id: Option<Uuid>,
    pub role: String,
    pub must_change_password: bool,
    pub job_title: Option<String>,
    pub notes: Option<String>,
    pub request_id: Option<Uuid>,
}

fn password_field(field: &'static str, raw: &str) -> Result<String, InputError> {
    if raw.is_empty() {
        return Err(InputError::new(ErrorReason::FieldRequired, field, format!("{field} is required")));
    }
    if raw.chars().count() > PASSWORD_HARD_MAX {
        return Err(InputError::new(
            ErrorReason::PasswordTooLong,
            field,
            format!("the password must have at most {PASSWORD_HARD_MAX} characters"),
        ));
    }
    Ok(raw.to_owned())
}

pub fn parse_password(field: &'static str, raw: &str) -> Result<String, InputError> {
    password_field(field, raw)
}

impl TryFrom<pb::CreateUserRequest> for NewUser {
    type Error = InputError;

    fn try_from(r: pb::CreateUserRequest) -> Result<Self, InputError> {
        let tenant_id = parse_opt_id("tenant_id", &r.tenant_id)?;
        if !r.is_msp_staff && tenant_id.is_none() {
            return Err(InputError::new(
                ErrorReason::FieldRequired,
                "tenant_id",
                "tenant_id is required for client users",
            ));
        }
        Ok(Self {
            email: parse_email("email", &r.email)?,
            display_name: parse_name("display_name", &r.display_name)?,
            password: password_field("password", &r.password)?,
            is_msp_staff: r.is_msp_staff,
            tenant_id,
            role: parse_role("role", &r.role)?,
            must_change_password: r.must_change_password,
            job_title: parse_text("job_title", &r.job_title, JOB_TITLE_MAX)?,
            notes: parse_text("notes", &r.notes, NOTES_MAX)?,
            request_id: parse_opt_id("request_id", &r.request_id)?,
        })
    }
}

/// An edit: `None` leaves a field as it is; `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default)]
pub struct UserEdit {
    pub display_name: Option<DisplayName>,
    pub email: Option<Email>,
    pub job_title: Option<Option<String>>,
    pub notes: Option<Option<String>>,
}

impl UserEdit {
    /// Only name, job title and notes: what a user may change on their own account.
    pub fn is_self_service(&self) -> bool {
        self.email.is_none()
    }
}

impl TryFrom<&pb::UpdateUserRequest> for UserEdit {
    type Error = InputError;

    fn try_from(r: &pb::UpdateUserRequest) -> Result<Self, InputError> {
        Ok(Self {
            display_name: r.display_name.as_deref().map(|n| parse_name("display_name", n)).transpose()?,
            email: r.email.as_deref().map(|e| parse_email("email", e)).transpose()?,
            job_title: r.job_title.as_deref().map(|t| parse_text("job_title", t, JOB_TITLE_MAX)).transpose()?,
            notes: r.notes.as_deref().map(|t| parse_text("notes", t, NOTES_MAX)).transpose()?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    NameAsc,
    NameDesc,
    LastLoginAsc,
    LastLoginDesc,
    CreatedDesc,
}

/// A ListUsers query, checked. The visibility restriction (client admins: their tenant, no
/// MSP staff) is applied by the caller of the store through `tenant_id` / `is_msp_staff`.
#[derive(Debug, Clone)]
pub struct UserQuery {
    pub page_size: usize,
    /// Where the previous page ended (none: the first page).
    pub after: Option<UserCursor>,
    pub tenant_id: Option<Uuid>,
    pub status: Option<Status>,
    pub two_factor_enabled: Option<bool>,
    pub is_msp_staff: Option<bool>,
    /// Lower-cased substring.
    pub text: Option<String>,
    pub sort: Sort,
    pub include_deleted: bool,
    /// The request's fields a page token is bound to.
    pub filters: String,
}

pub fn page_size(raw: i32) -> Result<usize, InputError> {
    values::PageSize::parse("page_size", raw)
        .map(values::PageSize::get)
        .map_err(|e| InputError::new(e.reason, "page_size", e.message))
}

fn invalid_page_token() -> InputError {
    InputError::new(ErrorReason::InvalidPageToken, "page_token", "the page token is not valid for this request")
}

/// The cursor in a page token (the contract's opaque token, bound to the request's other
/// fields, `filters`): `None` for the first page; a token issued for other filters, or garbled,
/// is INVALID_PAGE_TOKEN.
pub fn page_cursor(raw: &str, filters: &str) -> Result<Option<String>, InputError> {
    values::PageToken::decode("page_token", raw, filters).map_err(|_| invalid_page_token())
}

/// The token of the page after `cursor`, for a request whose other fields are `filters`.
pub fn page_token(filters: &str, cursor: &str) -> String {
    values::PageToken::encode(filters, cursor)
}

/// The offset a page token of an offset-paged list starts at (0 for the first page).
pub fn page_offset(raw: &str, filters: &str) -> Result<usize, InputError> {
    match page_cursor(raw, filters)? {
        None => Ok(0),
        Some(n) => n.parse::<usize>().ok().filter(|n| *n <= 10_000_000).ok_or_else(invalid_page_token),
    }
}

/// The token of an offset-paged list's page starting at `offset`.
pub fn offset_token(filters: &str, offset: usize) -> String {
    page_token(filters, &offset.to_string())
}

/// The sort key of a name: what name ordering and name search compare, computed here (not by
/// the database, whose LOWER differs between SQLite and PostgreSQL beyond ASCII).
pub fn name_key(name: &str) -> String {
    name.to_lowercase()
}

/// A keyset cursor for ListUsers: the sort key and id of the last user of a page. The next page
/// starts strictly after it, so users added or removed meanwhile neither repeat nor go missing.
/// Sent to clients as an opaque token: `n.<hex of the name key>.<id>` for name orders,
/// `t.<microseconds>.<id>` for time orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCursor {
    pub key: CursorKey,
    pub id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CursorKey {
    Name(String),
    Time(i64),
}

impl Sort {
    fn by_name(self) -> bool {
        matches!(self, Sort::NameAsc | Sort::NameDesc)
    }
}

impl UserCursor {
    /// The cursor after a user under `sort`: the name key for name orders, else the time the
    /// order uses (last login, never-logged-in as 0; or creation).
    pub fn after(sort: Sort, name: &str, last_login_at: Option<i64>, created_at: i64, id: &str) -> Option<Self> {
        let key = match sort {
            Sort::NameAsc | Sort::NameDesc => CursorKey::Name(name_key(name)),
            Sort::LastLoginAsc | Sort::LastLoginDesc => CursorKey::Time(last_login_at.unwrap_or(0)),
            Sort::CreatedDesc => CursorKey::Time(created_at),
        };
        Some(Self { key, id: Uuid::parse_str(id).ok()? })
    }

    pub fn token(&self) -> String {
        match &self.key {
            CursorKey::Name(k) => format!("n.{}.{}", hex::encode(k.as_bytes()), self.id),
            CursorKey::Time(t) => format!("t.{t}.{}", self.id),
        }
    }

    /// Parses a page token for `sort`; a token made for another order is INVALID_PAGE_TOKEN.
    pub fn parse(raw: &str, sort: Sort) -> Result<Option<Self>, InputError> {
        if raw.is_empty() {
            return Ok(None);
        }
        let invalid = || InputError::new(ErrorReason::InvalidPageToken, "page_token", "the page token is not valid");
        if raw.len() > 1200 {
            return Err(invalid());
        }
        let mut parts = raw.splitn(3, '.');
        let (kind, key, id) = match (parts.next(), parts.next(), parts.next()) {
            (Some(k), Some(v), Some(i)) => (k, v, i),
            _ => return Err(invalid()),
        };
        let id = Uuid::parse_str(id).map_err(|_| invalid())?;
        let key = match (kind, sort.by_name()) {
            ("n", true) => {
                CursorKey::Name(String::from_utf8(hex::decode(key).map_err(|_| invalid())?).map_err(|_| invalid())?)
            }
            ("t", false) => CursorKey::Time(key.parse().map_err(|_| invalid())?),
            _ => return Err(invalid()),
        };
        Ok(Some(Self { key, id }))
    }
}

impl TryFrom<&pb::ListUsersRequest> for UserQuery {
    type Error = InputError;

    fn try_from(r: &pb::ListUsersRequest) -> Result<Self, InputError> {
        let status = match pb::UserStatus::try_from(r.status) {
            Ok(pb::UserStatus::Unspecified) => None,
            Ok(pb::UserStatus::Pending) => Some(Status::Pending),
            Ok(pb::UserStatus::Active) => Some(Status::Active),
            Ok(pb::UserStatus::Suspended) => Some(Status::Suspended),
            Err(_) => return Err(InputError::new(ErrorReason::ValueOutOfRange, "status", "unknown status")),
        };
        let sort = match pb::UserSort::try_from(r.sort) {
            Ok(pb::UserSort::Unspecified | pb::UserSort::NameAsc) => Sort::NameAsc,
            Ok(pb::UserSort::NameDesc) => Sort::NameDesc,
            Ok(pb::UserSort::LastLoginAsc) => Sort::LastLoginAsc,
            Ok(pb::UserSort::LastLoginDesc) => Sort::LastLoginDesc,
            Ok(pb::UserSort::CreatedDesc) => Sort::CreatedDesc,
            Err(_) => return Err(InputError::new(ErrorReason::ValueOutOfRange, "sort", "unknown sort order")),
        };
        let text = parse_text("query", &r.query, 200)?.map(|t| t.to_lowercase());
        let filters = format!(
            "users|{:?}|{}|{:?}|{:?}|{:?}|{}|{}",
            r.tenant_id, r.status, r.two_factor_enabled, r.is_msp_staff, r.query, r.sort, r.include_deleted
        );
        let page_size = page_size(r.page_size)?;
        let after = match page_cursor(&r.page_token, &filters)? {
            Some(cursor) => UserCursor::parse(&cursor, sort)?,
            None => None,
        };
        Ok(Self {
            page_size,
            after,
            tenant_id: parse_opt_id("tenant_id", &r.tenant_id)?,
            status,
            two_factor_enabled: r.two_factor_enabled,
            is_msp_staff: r.is_msp_staff,
            text,
            sort,
            include_deleted: r.include_deleted,
            filters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_stored_status_is_not_read_as_suspended() {
        for status in [Status::Pending, Status::Active, Status::Suspended, Status::Deleted] {
            assert_eq!(Status::parse(status.as_str()), Some(status));
        }
        assert_eq!(Status::parse("Active"), None);
        assert_eq!(Status::parse(""), None);
    }

    #[test]
    fn ids_roles_and_page_sizes_follow_the_contract() {
        let id = "3f2b8c1e-9d4a-4b6f-8e2d-1a2b3c4d5e6f";
        assert!(parse_id("user_id", id).is_ok());
        assert_eq!(parse_id("user_id", &id.to_uppercase()).unwrap_err().reason, ErrorReason::InvalidUuid);
        assert_eq!(parse_id("user_id", &format!(" {id} ")).unwrap_err().reason, ErrorReason::InvalidUuid);
        assert_eq!(parse_role("role", &"r".repeat(65)).unwrap_err().reason, ErrorReason::FieldTooLong);
        assert_eq!(parse_role("role", " client_admin").unwrap_err().reason, ErrorReason::InvalidFormat);
        assert_eq!(page_size(10_000), Ok(500));
    }

    fn create() -> pb::CreateUserRequest {
        pb::CreateUserRequest {
            email: "emma@client.example".into(),
            display_name: "Emma".into(),
            password: "correct horse battery staple".into(),
            tenant_id: Uuid::now_v7().to_string(),
            role: "client_admin".into(),
            ..Default::default()
        }
    }

    #[test]
    fn create_requests_are_parsed_with_named_fields() {
        assert!(NewUser::try_from(create()).is_ok());
        let e = NewUser::try_from(pb::CreateUserRequest { email: "nope".into(), ..create() }).unwrap_err();
        assert_eq!((e.reason, e.field), (ErrorReason::InvalidEmail, "email"));
        let e = NewUser::try_from(pb::CreateUserRequest { tenant_id: String::new(), ..create() }).unwrap_err();
        assert_eq!((e.reason, e.field), (ErrorReason::FieldRequired, "tenant_id"));
        let e = NewUser::try_from(pb::CreateUserRequest { tenant_id: "x".into(), ..create() }).unwrap_err();
        assert_eq!(e.reason, ErrorReason::InvalidUuid);
        let e = NewUser::try_from(pb::CreateUserRequest { notes: "n".repeat(4001), ..create() }).unwrap_err();
        assert_eq!((e.reason, e.field), (ErrorReason::FieldTooLong, "notes"));
        let e = NewUser::try_from(pb::CreateUserRequest { role: "a b".into(), ..create() }).unwrap_err();
        assert_eq!(e.reason, ErrorReason::InvalidFormat);
        let staff =
            NewUser::try_from(pb::CreateUserRequest { is_msp_staff: true, tenant_id: String::new(), ..create() });
        assert!(staff.is_ok_and(|u| u.tenant_id.is_none()));
    }

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        assert_eq!(page_offset(&offset_token("f", 150), "f"), Ok(150));
        assert_eq!(page_offset("", "f").unwrap(), 0);
        assert_eq!(page_offset("zzz", "f").unwrap_err().reason, ErrorReason::InvalidPageToken);
        assert_eq!(page_offset("o150", "f").unwrap_err().reason, ErrorReason::InvalidPageToken);
        assert_eq!(page_offset(&page_token("f", "x"), "f").unwrap_err().reason, ErrorReason::InvalidPageToken);
        assert_eq!(page_size(501), Ok(500), "coerced to the maximum");
        assert_eq!(page_size(-1).unwrap_err().reason, ErrorReason::ValueOutOfRange);
        assert_eq!(page_size(0).unwrap(), 50);
    }

    #[test]
    fn a_page_token_is_bound_to_the_filters_it_was_issued_for() {
        let token = offset_token("sessions|a", 50);
        assert_eq!(page_offset(&token, "sessions|a"), Ok(50));
        let e = page_offset(&token, "sessions|b").unwrap_err();
        assert_eq!((e.reason, e.field), (ErrorReason::InvalidPageToken, "page_token"));

        let request = pb::ListUsersRequest { query: "ann".into(), ..Default::default() };
        let query = UserQuery::try_from(&request).unwrap();
        let cursor = UserCursor::after(query.sort, "Ann", None, 0, "3f2b8c1e-9d4a-4b6f-8e2d-1a2b3c4d5e6f").unwrap();
        let token = page_token(&query.filters, &cursor.token());
        let next = pb::ListUsersRequest { page_token: token.clone(), ..request.clone() };
        assert_eq!(UserQuery::try_from(&next).unwrap().after, Some(cursor));
        let other = pb::ListUsersRequest { page_token: token, query: "bob".into(), ..request };
        assert_eq!(UserQuery::try_from(&other).unwrap_err().reason, ErrorReason::InvalidPageToken);
    }
}
