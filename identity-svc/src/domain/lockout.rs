//! Brute-force protection: after a few failures each further attempt waits a growing delay;
//! after more, the subject (an account or a client IP) is locked for a while.
//!
//! Rules:
//!
//! 1. Counters run per account and per client IP (`login_failures`, listable and clearable):
//!    free attempts, then a doubling delay, then a lockout (`TETHER_IDENTITY_LOCKOUT_*`).
//! 2. Failures older than the lockout duration stop counting (a shared office address starts
//!    afresh).
//! 3. An unknown email gets a counter of its own (`unknown:<email>`) with the same delays and
//!    lockout, so the delays do not tell which emails exist.
//! 4. Second-factor codes and ChangePassword's current password pass the same gate: a wrong one
//!    counts; a locked account refuses even the right one (FAILED_PRECONDITION / `ACCOUNT_LOCKED`;
//!    a locked address RESOURCE_EXHAUSTED / `RATE_LIMITED`); a correct password clears the
//!    account's count only once the second factor is done too.
//! 5. A failure is counted by one `INSERT … ON CONFLICT DO UPDATE SET n = n + 1` that also decides
//!    the lock (`store::lockouts`), so concurrent failures are each counted.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutRules {
    /// Failures before delays start.
    pub free_attempts: u32,
    /// First delay; doubles with each further failure, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Failures that lock the subject.
    pub lock_after: u32,
    pub lock_duration: Duration,
}

impl LockoutRules {
    /// The delay imposed before the next attempt after `failures` consecutive failures.
    pub fn delay(&self, failures: u32) -> Duration {
        if failures < self.free_attempts {
            return Duration::ZERO;
        }
        let doublings = (failures - self.free_attempts).min(20);
        self.base_delay.saturating_mul(1u32 << doublings).min(self.max_delay)
    }

    /// True if this many failures lock the subject.
    pub fn locks(&self, failures: u32) -> bool {
        failures >= self.lock_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_lock() {
        let r = LockoutRules {
            free_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
            lock_after: 6,
            lock_duration: Duration::from_secs(60),
        };
        assert_eq!(r.delay(2), Duration::ZERO);
        assert_eq!(r.delay(3), Duration::from_millis(100));
        assert_eq!(r.delay(4), Duration::from_millis(200));
        assert_eq!(r.delay(5), Duration::from_millis(350));
        assert!(!r.locks(5));
        assert!(r.locks(6));
    }
}
