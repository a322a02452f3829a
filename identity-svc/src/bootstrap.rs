//! First start: create the MSP owner so there is someone to log in as.

use std::fmt;

use tether_runtime::{StartError, config::Secret, db::Database};

use crate::{
    api::convert,
    config::BootstrapOwnerConfig,
    domain::password,
    events::{Write, audit, system},
    store::{accounts, intents},
};

/// The owner login created on this start; shown once.
pub struct BootstrapOwner {
    pub account_id: String,
    pub email: String,
    /// Present when it was generated here (not taken from configuration).
    pub generated_password: Option<Secret>,
}

impl fmt::Display for BootstrapOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MSP owner created: {}", self.email)?;
        match &self.generated_password {
            Some(p) => write!(f, "  password: {}  (generated; shown only this once)", p.expose()),
            None => write!(f, "  password: as set in TETHER_IDENTITY_BOOTSTRAP_OWNER_PASSWORD"),
        }
    }
}

/// Creates the owner on the first start; returns `None` when it already exists.
pub async fn ensure_owner(db: &Database, config: &BootstrapOwnerConfig) -> Result<Option<BootstrapOwner>, StartError> {
    let fail = |e: sqlx::Error| StartError::Other(format!("bootstrap owner: {e}"));
    if accounts::bootstrap_owner_id(db).await.map_err(fail)?.is_some() {
        return Ok(None);
    }
    let (password, generated) = match &config.password {
        Some(p) => (p.clone(), false),
        None => (Secret::new(password::generate(20).map_err(|e| StartError::Other(e.to_string()))?), true),
    };
    let to_hash = password.clone();
    let hash = tokio::task::spawn_blocking(move || password::hash(to_hash.expose()))
        .await
        .map_err(|e| StartError::Other(e.to_string()))?
        .map_err(|e| StartError::Other(e.to_string()))?;
    let mut write = Write::begin(db).await.map_err(fail)?;
    let id = accounts::insert_bootstrap_owner(write.tx(), &config.email, &config.display_name, &hash)
        .await
        .map_err(fail)?
        .to_string();
    // tenancy-svc records the owner and their admin-tenancy membership when the relay
    // delivers this; until then the owner cannot log in.
    intents::insert(write.tx(), &id, intents::Op::Own, "", "").await.map_err(fail)?;
    let row = accounts::get(write.conn(), &id)
        .await
        .map_err(fail)?
        .ok_or_else(|| StartError::Other("bootstrap owner: the new account is not readable".into()))?;
    write.change(convert::upserted(&row));
    write.audit(
        audit(system("identity-svc/bootstrap"), "", "user.create", "user", &id).after(convert::user_json(&row)).build(),
    );
    write.commit().await.map_err(fail)?;
    tracing::info!(account_id = %id, email = %config.email, "bootstrap MSP owner created");
    Ok(Some(BootstrapOwner {
        account_id: id,
        email: config.email.to_string(),
        generated_password: generated.then_some(password),
    }))
}
