//! Outgoing email (invitation links): SMTP with STARTTLS in production, a folder with one
//! `.eml` file per message in the dev stack, so it works offline.

use std::{path::PathBuf, sync::Arc};

use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::authentication::Credentials,
};

use crate::config::MailConfig;

#[tonic::async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), String>;
}

pub fn from_config(config: &MailConfig) -> Result<Arc<dyn Mailer>, String> {
    let from: Mailbox = config.from.parse().map_err(|e| format!("TETHER_IDENTITY_MAIL_FROM: {e}"))?;
    match &config.smtp {
        Some(smtp) => {
            let mut builder = AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&smtp.host)
                .map_err(|e| format!("TETHER_IDENTITY_SMTP_HOST: {e}"))?
                .port(smtp.port);
            if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
                builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
            }
            Ok(Arc::new(Smtp { transport: builder.build(), from }))
        }
        None => {
            std::fs::create_dir_all(&config.outbox_dir)
                .map_err(|e| format!("TETHER_IDENTITY_MAIL_OUTBOX_DIR {}: {e}", config.outbox_dir.display()))?;
            Ok(Arc::new(Folder {
                transport: AsyncFileTransport::new(&config.outbox_dir),
                dir: config.outbox_dir.clone(),
                from,
            }))
        }
    }
}

fn message(from: &Mailbox, to: &str, subject: &str, body: &str) -> Result<Message, String> {
    let to: Mailbox = to.parse().map_err(|e| format!("recipient: {e}"))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN)
        .body(body.to_owned())
        .map_err(|e| e.to_string())
}

struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

#[tonic::async_trait]
impl Mailer for Smtp {
    async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), String> {
        self.transport.send(message(&self.from, to, subject, body)?).await.map(|_| ()).map_err(|e| e.to_string())
    }
}

struct Folder {
    transport: AsyncFileTransport<Tokio1Executor>,
    dir: PathBuf,
    from: Mailbox,
}

#[tonic::async_trait]
impl Mailer for Folder {
    async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), String> {
        let id = self.transport.send(message(&self.from, to, subject, body)?).await.map_err(|e| e.to_string())?;
        tracing::info!(file = %self.dir.join(format!("{id}.eml")).display(), "email written to the file outbox");
        Ok(())
    }
}
