//! The login verdict: why a login fails, decided from what the password step found. The
//! caller only ever sees LOGIN_FAILED; the reason goes to the audit trail.

use super::account::Status;

/// Which brute-force limit stopped a credential check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    Ip,
    Account,
}

/// Why a login failed (the contract's `LoginFailureReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginFailure {
    #[error("no user with that email")]
    UnknownEmail,
    #[error("wrong password")]
    WrongPassword,
    #[error("the account is suspended")]
    UserSuspended,
    #[error("the invitation has not been accepted")]
    InvitationNotAccepted,
    #[error("the account is locked after repeated failures")]
    AccountLocked,
    #[error("the client address is locked after repeated failures")]
    IpLocked,
    #[error("the second-factor code was wrong")]
    SecondFactorInvalid,
    #[error("the account's membership has not reached tenancy yet")]
    MembershipPending,
    #[error("the account's roles could not be read")]
    RolesUnavailable,
}

impl LoginFailure {
    /// A guess at a credential: counts towards the address's and the account's lockouts.
    /// (Refusals of a right password, such as a suspended account, do not.)
    pub fn counts_as_guess(self) -> bool {
        matches!(self, Self::UnknownEmail | Self::WrongPassword | Self::InvitationNotAccepted)
    }
}

impl From<Locked> for LoginFailure {
    fn from(locked: Locked) -> Self {
        match locked {
            Locked::Ip => Self::IpLocked,
            Locked::Account => Self::AccountLocked,
        }
    }
}

/// What the password step knows of the account an email names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub status: Status,
    pub has_password: bool,
    /// Its membership has reached tenancy.
    pub provisioned: bool,
}

/// The verdict of the password step: `Ok` when the login may go on (to a second factor or a
/// session). A lock wins over everything; then, in order, an unknown (or deleted) email, an
/// invitee without a password, a wrong password, then refusals that only a right password
/// learns of.
pub fn password_verdict(
    locked: Option<Locked>,
    account: Option<&Candidate>,
    password_verified: bool,
) -> Result<(), LoginFailure> {
    if let Some(locked) = locked {
        return Err(locked.into());
    }
    let Some(a) = account.filter(|a| a.status != Status::Deleted) else { return Err(LoginFailure::UnknownEmail) };
    // An invitee has no password yet: say so on the trail rather than "wrong password".
    if a.status == Status::Pending && !a.has_password {
        return Err(LoginFailure::InvitationNotAccepted);
    }
    if !password_verified {
        return Err(LoginFailure::WrongPassword);
    }
    match a.status {
        Status::Pending => Err(LoginFailure::InvitationNotAccepted),
        Status::Suspended => Err(LoginFailure::UserSuspended),
        Status::Deleted => Err(LoginFailure::UnknownEmail),
        Status::Active if !a.provisioned => Err(LoginFailure::MembershipPending),
        Status::Active => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTIVE: Candidate = Candidate { status: Status::Active, has_password: true, provisioned: true };

    fn with(status: Status) -> Candidate {
        Candidate { status, ..ACTIVE }
    }

    #[test]
    fn a_right_password_of_an_active_provisioned_account_goes_on() {
        assert_eq!(password_verdict(None, Some(&ACTIVE), true), Ok(()));
    }

    #[test]
    fn locks_win_over_everything() {
        assert_eq!(password_verdict(Some(Locked::Account), Some(&ACTIVE), true), Err(LoginFailure::AccountLocked));
        assert_eq!(password_verdict(Some(Locked::Ip), None, false), Err(LoginFailure::IpLocked));
    }

    #[test]
    fn unknown_and_deleted_emails_are_unknown() {
        assert_eq!(password_verdict(None, None, false), Err(LoginFailure::UnknownEmail));
        assert_eq!(password_verdict(None, Some(&with(Status::Deleted)), true), Err(LoginFailure::UnknownEmail));
    }

    #[test]
    fn an_invitee_is_told_apart_from_a_wrong_password() {
        let invitee = Candidate { has_password: false, ..with(Status::Pending) };
        assert_eq!(password_verdict(None, Some(&invitee), false), Err(LoginFailure::InvitationNotAccepted));
        assert_eq!(password_verdict(None, Some(&with(Status::Pending)), false), Err(LoginFailure::WrongPassword));
        assert_eq!(
            password_verdict(None, Some(&with(Status::Pending)), true),
            Err(LoginFailure::InvitationNotAccepted)
        );
    }

    #[test]
    fn only_a_right_password_learns_of_suspension_or_a_pending_membership() {
        let suspended = with(Status::Suspended);
        assert_eq!(password_verdict(None, Some(&suspended), false), Err(LoginFailure::WrongPassword));
        assert_eq!(password_verdict(None, Some(&suspended), true), Err(LoginFailure::UserSuspended));
        let unprovisioned = Candidate { provisioned: false, ..ACTIVE };
        assert_eq!(password_verdict(None, Some(&unprovisioned), false), Err(LoginFailure::WrongPassword));
        assert_eq!(password_verdict(None, Some(&unprovisioned), true), Err(LoginFailure::MembershipPending));
    }

    #[test]
    fn only_credential_guesses_count_towards_lockouts() {
        use LoginFailure::*;
        let guesses = [UnknownEmail, WrongPassword, InvitationNotAccepted];
        for f in [
            UnknownEmail,
            WrongPassword,
            UserSuspended,
            InvitationNotAccepted,
            AccountLocked,
            IpLocked,
            SecondFactorInvalid,
            MembershipPending,
            RolesUnavailable,
        ] {
            assert_eq!(f.counts_as_guess(), guesses.contains(&f), "{f:?}");
        }
    }
}
