//! Tamper evidence: a record edited, removed or moved in the database is found and named by its
//! sequence; signed checkpoints verify with the public key alone and a forged one is refused;
//! two replicas ingesting at once keep one unbroken chain.

mod common;

use common::*;
use tether_proto::{audit::v1::*, common::v1::AuditEvent};

async fn filled(n: usize) -> Audit {
    let audit = Audit::start().await;
    let events: Vec<AuditEvent> =
        (0..n).map(|i| event(if i % 2 == 0 { "user.update" } else { "user.delete" }, "", "")).collect();
    for chunk in events.chunks(200) {
        audit.ingest(chunk.to_vec()).await;
    }
    audit
}

#[tokio::test]
async fn an_intact_chain_verifies_whole_and_by_range() {
    let audit = filled(450).await;
    let all = audit.verify(VerifyIntegrityRequest::default()).await;
    assert!(all.ok, "{}", all.detail);
    assert_eq!((all.events_checked, all.from_sequence, all.to_sequence), (450, 1, 450));
    let part =
        audit.verify(VerifyIntegrityRequest { from_sequence: 100, to_sequence: 200, ..Default::default() }).await;
    assert!(part.ok);
    assert_eq!(part.events_checked, 101);
}

#[tokio::test]
async fn an_edited_row_is_found_at_its_sequence() {
    let audit = filled(300).await;
    let pool = audit.tables().await;
    sqlx::query("UPDATE audit_events SET actor_name = 'someone else' WHERE seq = 123").execute(&pool).await.unwrap();
    let reply = audit.verify(VerifyIntegrityRequest::default()).await;
    assert!(!reply.ok);
    assert_eq!(reply.first_broken_sequence, 123, "{}", reply.detail);
    assert!(!reply.first_broken_event_id.is_empty());
    assert_eq!(reply.events_checked, 122);
    // A range after the edit still verifies.
    assert!(audit.verify(VerifyIntegrityRequest { from_sequence: 124, ..Default::default() }).await.ok);
}

#[tokio::test]
async fn a_removed_row_is_found_as_a_missing_sequence() {
    let audit = filled(300).await;
    let pool = audit.tables().await;
    sqlx::query("DELETE FROM audit_events WHERE seq = 77").execute(&pool).await.unwrap();
    let reply = audit.verify(VerifyIntegrityRequest::default()).await;
    assert_eq!((reply.ok, reply.first_broken_sequence), (false, 77), "{}", reply.detail);
    assert!(reply.detail.contains("missing"), "{}", reply.detail);
    // The newest rows removed: the head still names them.
    sqlx::query("DELETE FROM audit_events WHERE seq >= 299").execute(&pool).await.unwrap();
    let tail = audit.verify(VerifyIntegrityRequest { from_sequence: 100, ..Default::default() }).await;
    assert_eq!((tail.ok, tail.first_broken_sequence), (false, 299), "{}", tail.detail);
}

#[tokio::test]
async fn reordered_rows_are_found() {
    let audit = filled(300).await;
    let pool = audit.tables().await;
    // Swap the positions of records 50 and 60, hashes and all.
    for sql in [
        "UPDATE audit_events SET seq = -1 WHERE seq = 50",
        "UPDATE audit_events SET seq = 50 WHERE seq = 60",
        "UPDATE audit_events SET seq = 60 WHERE seq = -1",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let reply = audit.verify(VerifyIntegrityRequest::default()).await;
    assert_eq!((reply.ok, reply.first_broken_sequence), (false, 50), "{}", reply.detail);
}

#[tokio::test]
async fn checkpoints_are_signed_listed_and_verified_and_a_forged_one_is_refused() {
    let audit = filled(120).await;
    let listed = eventually(|| async {
        let reply = audit
            .client
            .clone()
            .list_checkpoints(as_service(ListCheckpointsRequest::default()))
            .await
            .unwrap()
            .into_inner();
        reply.checkpoints.first().filter(|c| c.sequence == 120).cloned().map(|c| (c, reply.verifier_key))
    })
    .await;
    let (checkpoint, verifier_key) = listed;
    assert!(checkpoint.note.starts_with("tether-audit\n120\n"), "{}", checkpoint.note);
    assert!(verifier_key.starts_with("tether-audit+"));
    // A third party checks it with the public key alone.
    let public = ed25519_dalek::SigningKey::from_bytes(&SIGNING_SEED).verifying_key();
    let state = audit_svc::domain::checkpoint::verify("tether-audit", &public, &checkpoint.note).unwrap();
    assert_eq!(hex::encode(state.chain_hash), checkpoint.chain_hash);

    // Verification can start at a checkpoint.
    audit.ingest(vec![event("user.create", "", "")]).await;
    let from = audit.verify(VerifyIntegrityRequest { checkpoint: checkpoint.note.clone(), ..Default::default() }).await;
    assert!(from.ok, "{}", from.detail);
    assert_eq!((from.from_sequence, from.to_sequence, from.events_checked), (121, 121, 1));

    // Signed by another key, or altered: refused.
    let other = audit_svc::domain::checkpoint::CheckpointKey::new("tether-audit", [8; 32]);
    let forged = other.sign(&state);
    let status = audit
        .client
        .clone()
        .verify_integrity(as_service(VerifyIntegrityRequest { checkpoint: forged, ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!((status.code(), reason(&status).as_str()), (tonic::Code::InvalidArgument, "CHECKPOINT_INVALID"));
    let altered = checkpoint.note.replacen("\n120\n", "\n119\n", 1);
    let status = audit
        .client
        .clone()
        .verify_integrity(as_service(VerifyIntegrityRequest { checkpoint: altered, ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "CHECKPOINT_INVALID");

    // A record rewritten below a checkpoint no longer matches it.
    let pool = audit.tables().await;
    sqlx::query("UPDATE audit_events SET hash = prev_hash WHERE seq = 120").execute(&pool).await.unwrap();
    let broken = audit.verify(VerifyIntegrityRequest { checkpoint: checkpoint.note, ..Default::default() }).await;
    assert_eq!((broken.ok, broken.first_broken_sequence), (false, 120), "{}", broken.detail);
}

#[tokio::test]
async fn two_replicas_ingesting_at_once_keep_one_chain() {
    let first = Audit::start().await;
    let second = Audit::start_on(first.db.clone(), first.doubles.clone()).await;
    let send = |audit: &Audit| {
        let client = audit.client.clone();
        async move {
            for _ in 0..20 {
                let events: Vec<AuditEvent> = (0..50).map(|_| event("user.update", "", "")).collect();
                let reply = client.clone().ingest(as_service(IngestRequest { events })).await.unwrap().into_inner();
                assert_eq!(reply.accepted, 50);
            }
        }
    };
    // Both also deliver the same events at once: stored once.
    let shared: Vec<AuditEvent> = (0..50).map(|_| event("user.create", "", "")).collect();
    let (a, b) = (first.client.clone(), second.client.clone());
    let (s1, s2) = (shared.clone(), shared.clone());
    let (_, _, r1, r2) = tokio::join!(
        send(&first),
        send(&second),
        async move { a.clone().ingest(as_service(IngestRequest { events: s1 })).await.unwrap().into_inner() },
        async move { b.clone().ingest(as_service(IngestRequest { events: s2 })).await.unwrap().into_inner() },
    );
    assert_eq!(r1.accepted + r2.accepted, 50);
    assert_eq!(r1.duplicates + r2.duplicates, 50);
    let reply = first.verify(VerifyIntegrityRequest::default()).await;
    assert!(reply.ok, "{}", reply.detail);
    assert_eq!(reply.events_checked, 2 * 20 * 50 + 50, "gap-free, nothing lost, nothing doubled");
}

#[tokio::test]
async fn expired_events_are_purged_except_held_ones_and_the_rest_still_verifies() {
    let audit = Audit::start().await;
    let reader = audit.doubles.person(true, ADMIN_TENANCY, &[ADMIN_TENANCY]);
    let [held, other] = [(); 2].map(|_| uuid::Uuid::new_v4().to_string());
    let old: Vec<AuditEvent> =
        (0..100).map(|i| event("user.update", if i % 5 < 3 { &held } else { &other }, "")).collect();
    audit.ingest(old).await;
    let checkpoint = eventually(|| async {
        let reply = audit.client.clone().list_checkpoints(as_service(ListCheckpointsRequest::default())).await.unwrap();
        reply.into_inner().checkpoints.into_iter().find(|c| c.sequence == 100)
    })
    .await;
    audit.ingest((0..50).map(|_| event("user.update", &other, "")).collect()).await;
    let hold = SetLegalHoldRequest { tenant_id: held.clone(), reason: "case 2026-114".into() };
    audit.client.clone().set_legal_hold(as_user(&reader, hold)).await.unwrap();
    // The first hundred were received long ago.
    let pool = audit.tables().await;
    sqlx::query("UPDATE audit_events SET received_at = received_at - 43200000000000 WHERE seq <= 100")
        .execute(&pool)
        .await
        .unwrap();

    let purged =
        audit.client.clone().purge_expired(as_user(&reader, PurgeExpiredRequest {})).await.unwrap().into_inner();
    assert_eq!((purged.purged_count, purged.held_count, purged.purged_through_sequence), (40, 60, 100));
    let of =
        |tenant: &str| EventFilter { tenant_id: tenant.to_owned(), action: "user.update".into(), ..Default::default() };
    assert_eq!(audit.search_all(&reader, of(&held)).await.len(), 60, "held events stay");
    assert_eq!(audit.search_all(&reader, of(&other)).await.len(), 50, "expired ones go, recent ones stay");
    let kept = audit.verify(VerifyIntegrityRequest::default()).await;
    assert!(kept.ok, "{}", kept.detail);
    assert_eq!(kept.from_sequence, 101, "the kept chain verifies from the purge boundary");
    let from_checkpoint =
        audit.verify(VerifyIntegrityRequest { checkpoint: checkpoint.note, ..Default::default() }).await;
    assert!(from_checkpoint.ok, "{}", from_checkpoint.detail);
    let again = audit.client.clone().purge_expired(as_service(PurgeExpiredRequest {})).await.unwrap().into_inner();
    assert_eq!(again.purged_count, 0, "nothing more has expired");

    let holds =
        audit.client.clone().list_legal_holds(as_user(&reader, ListLegalHoldsRequest {})).await.unwrap().into_inner();
    assert_eq!(holds.holds.len(), 1);
    assert_eq!((holds.holds[0].tenant_id.as_str(), holds.holds[0].reason.as_str()), (held.as_str(), "case 2026-114"));
    assert_eq!(holds.holds[0].set_by, reader);
    assert_eq!(holds.retention.unwrap().seconds, 400 * 86_400);
    assert_eq!(holds.purged_through_sequence, 100);

    // The purge and the hold are audited.
    let outbox: Vec<String> = sqlx::query_scalar("SELECT payload FROM audit_outbox").fetch_all(&pool).await.unwrap();
    let actions: Vec<String> = outbox
        .iter()
        .map(|p| <AuditEvent as prost::Message>::decode(hex::decode(p).unwrap().as_slice()).unwrap().action)
        .collect();
    assert!(actions.contains(&"audit.purge".to_owned()), "{actions:?}");
    assert!(actions.contains(&"audit.legal_hold_set".to_owned()), "{actions:?}");
    // ... and reach audit's own chain through its relay, like every service's events.
    let purge_filter = EventFilter { action: "audit.purge".into(), ..Default::default() };
    let recorded = eventually(|| async {
        let found = audit.search_all(&reader, purge_filter.clone()).await;
        (!found.is_empty()).then_some(found)
    })
    .await;
    let purge_event = recorded[0].event.as_ref().unwrap();
    assert_eq!(purge_event.actor.as_ref().unwrap().user_id, reader, "the person who purged");

    let client_admin = audit.doubles.person(false, &other, &[&other]);
    let status = audit.client.clone().purge_expired(as_user(&client_admin, PurgeExpiredRequest {})).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let status = audit
        .client
        .clone()
        .remove_legal_hold(as_service(RemoveLegalHoldRequest { tenant_id: other.clone() }))
        .await
        .unwrap_err();
    assert_eq!(reason(&status), "TENANT_NOT_FOUND");
}

#[tokio::test]
async fn a_month_of_expired_records_goes_whole_and_its_ids_with_it() {
    let audit = Audit::start().await;
    let reader = audit.doubles.person(true, ADMIN_TENANCY, &[ADMIN_TENANCY]);
    let tenant = uuid::Uuid::new_v4().to_string();
    audit.ingest((0..30).map(|_| event("user.update", &tenant, "")).collect()).await;
    eventually(|| async {
        let reply = audit.client.clone().list_checkpoints(as_service(ListCheckpointsRequest::default())).await.unwrap();
        reply.into_inner().checkpoints.into_iter().find(|c| c.sequence == 30)
    })
    .await;
    audit.ingest((0..10).map(|_| event("user.update", &tenant, "")).collect()).await;
    let pool = audit.tables().await;
    // The first thirty were received 500 days ago.
    sqlx::query("UPDATE audit_events SET received_at = received_at - 43200000000000 WHERE seq <= 30")
        .execute(&pool)
        .await
        .unwrap();
    let postgres = audit.db.backend == tether_tests::Backend::Postgres;
    let months = || async {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'audit_events'::regclass ORDER BY 1",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        tables
    };
    if postgres {
        let this_month: String =
            sqlx::query_scalar("SELECT 'audit_events_' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')")
                .fetch_one(&pool)
                .await
                .unwrap();
        let before = months().await;
        assert_eq!(before.len(), 4, "this month, the next two and the default: {before:?}");
        assert!(before.contains(&this_month), "{before:?}");
    }

    let purged =
        audit.client.clone().purge_expired(as_user(&reader, PurgeExpiredRequest {})).await.unwrap().into_inner();
    assert_eq!((purged.purged_count, purged.held_count, purged.purged_through_sequence), (30, 0, 30));
    let filter = EventFilter { tenant_id: tenant.clone(), ..Default::default() };
    assert_eq!(audit.search_all(&reader, filter.clone()).await.len(), 10);
    let kept = audit.verify(VerifyIntegrityRequest::default()).await;
    assert!(kept.ok, "{}", kept.detail);
    assert_eq!(kept.from_sequence, 31);
    if postgres {
        // The old month was made for the moved records, then dropped as a whole.
        assert_eq!(months().await.len(), 4, "{:?}", months().await);
        let waiting: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_events_default").fetch_one(&pool).await.unwrap();
        assert_eq!(waiting, 0);
    }
    let known: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_event_ids WHERE seq <= 30").fetch_one(&pool).await.unwrap();
    assert_eq!(known, 0, "the ids of purged records are forgotten");
}
