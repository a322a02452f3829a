//! Whom and what a person may see: anyone else is, to them, as unknown as a random id.

use uuid::Uuid;

use super::{Index, NONE, UserState};

impl Index {
    /// A target the actor may see: known and not deleted; for an actor who is not MSP staff,
    /// also not MSP staff and at home in the actor's home tenant or one of its departments.
    /// One rule for every question a person asks about someone else: anyone else is, to
    /// them, as unknown as a random id.
    pub(super) fn visible_target(&self, actor: u32, target: &Uuid) -> Option<u32> {
        let t = *self.user_ids.get(target)?;
        let entry = self.users[t as usize];
        if matches!(entry.state, UserState::Unknown | UserState::Deleted) {
            return None;
        }
        self.reaches_user(actor, t).then_some(t)
    }

    /// MSP staff reach every user; anyone else only users who are not MSP staff and whose
    /// home is the actor's home or one of its departments.
    pub(super) fn reaches_user(&self, actor: u32, target: u32) -> bool {
        let (a, t) = (self.users[actor as usize], self.users[target as usize]);
        if a.msp_staff {
            return true;
        }
        !t.msp_staff
            && a.home != NONE
            && t.home != NONE
            && self.chain(t.home).is_some_and(|c| c.as_slice().contains(&a.home))
    }

    /// Whether `target` is a user the index knows whom `viewer` (a person) may not see (see
    /// [`Self::visible_target`]): the caller answers as for an unknown user. Unknown targets
    /// are not "hidden": they are left to the lookup that reports them.
    pub fn hides_user(&self, viewer: &Uuid, target: &Uuid) -> bool {
        let Some(&t) = self.user_ids.get(target) else { return false };
        if self.users[t as usize].state == UserState::Unknown {
            return false;
        }
        self.user_ids.get(viewer).is_none_or(|&v| !self.reaches_user(v, t))
    }

    /// May `viewer` (a person) know that `tenant` exists? MSP staff see every tenant; anyone
    /// else only tenants at or below one where they hold a membership. A tenant they may not
    /// see is answered exactly as an unknown one.
    pub fn tenant_visible_to(&self, viewer: &Uuid, tenant: &Uuid) -> bool {
        let (Some(&u), Some(&t)) = (self.user_ids.get(viewer), self.tenant_ids.get(tenant)) else { return false };
        self.sees_tenant(u, t)
    }

    pub(super) fn sees_tenant(&self, user: u32, tenant: u32) -> bool {
        if self.users[user as usize].msp_staff {
            return true;
        }
        let Some(chain) = self.chain(tenant) else { return false };
        self.memberships[user as usize].iter().any(|m| chain.as_slice().contains(&m.tenant))
    }
}
