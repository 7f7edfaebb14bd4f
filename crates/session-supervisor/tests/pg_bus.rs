//! `PgEventBus` on PostgreSQL (issue 13, "Events"): tenants never see each other's changes, a
//! resume replays then goes live, a change crosses replicas through NOTIFY, interleaved
//! publishers get consecutive numbers delivered in order, retention leaves a gap marker, and an
//! expired pairing code is scrubbed from the stored history (by hand and by the started bus)
//! without leaving a gap.
//!
//! Reads `DATABASE_URL` (the owner role, which may create databases) and `APP_DATABASE_URL`
//! (the application role), like `pg_store.rs`. Fails, never skips, when PostgreSQL is
//! unreachable.
#![cfg(feature = "postgres")]

/// The URLs, migration access and scratch databases shared with the other PostgreSQL tests.
mod shared;

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use session_supervisor::{
    ChangeFilter, ChangeItem, ChangeStream, ChipChange, ChipChangeKind, ChipKey, ChipRecord,
    ChipSpec, EventBus, PairingCodeSecret, PgEventBus,
};
use tenant_isolation::pg::reexports::tokio_postgres;
use tenant_isolation::{ChipId, TenantId};

use shared::pg::ScratchPg;

/// How long a live change may take to arrive (NOTIFY, then a read).
const ARRIVAL: Duration = Duration::from_secs(10);

/// How long a test waits to be sure nothing more arrives.
const QUIET: Duration = Duration::from_millis(300);

const POOL_SIZE: usize = 4;

/// A bus on `scratch` with pools of its own, as another replica would have; it must be dropped
/// before `scratch` (declare it after it). Its LISTEN connection is the owner's, which the
/// scratch database's forced drop ends.
async fn replica_bus(scratch: &ScratchPg) -> PgEventBus {
    let listen: tokio_postgres::Config = scratch.db.url.parse().expect("a valid URL");
    let bus = PgEventBus::new(scratch.tenant_db().await, scratch.owner_pool(), listen);
    bus.start().await.expect("the LISTEN connection");
    bus
}

fn record(tenant: &TenantId, chip: &str, at: SystemTime) -> ChipRecord {
    let key = ChipKey::new(tenant.clone(), ChipId::new(chip).expect("a chip id"));
    ChipRecord::new(key, ChipSpec::qr(), true, at)
}

fn created(tenant: &TenantId, at: SystemTime) -> ChipChange {
    ChipChange::of(&record(tenant, "a", at), ChipChangeKind::Created)
}

/// The next item within [`ARRIVAL`].
async fn next(stream: &mut ChangeStream) -> ChangeItem {
    tokio::time::timeout(ARRIVAL, stream.next())
        .await
        .expect("an item within the bound")
        .expect("the stream goes on")
}

async fn next_change(stream: &mut ChangeStream) -> ChipChange {
    match next(stream).await {
        ChangeItem::Change(change) => change,
        gap => panic!("expected a change, got {gap:?}"),
    }
}

/// Publishes `count` changes of `chip`, one after the other; returns their numbers.
async fn publish_many(bus: &PgEventBus, tenant: &TenantId, chip: &str, count: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    for _ in 0..count {
        let change = ChipChange::of(
            &record(tenant, chip, SystemTime::now()),
            ChipChangeKind::Created,
        );
        seqs.push(bus.publish(change).await.expect("publish"));
    }
    seqs
}

/// Nothing more arrives within [`QUIET`].
async fn assert_quiet(stream: &mut ChangeStream, what: &str) {
    if let Ok(item) = tokio::time::timeout(QUIET, stream.next()).await {
        panic!("{what}: expected nothing more, got {item:?}");
    }
}

#[tokio::test]
async fn tenants_never_see_each_others_changes() {
    let scratch = ScratchPg::new(POOL_SIZE).await;
    let (a, b) = (scratch.create_tenant().await, scratch.create_tenant().await);
    let bus = replica_bus(&scratch).await;
    let mut of_a = bus
        .subscribe(&a, ChangeFilter::all())
        .await
        .expect("subscribe");
    let mut of_b = bus
        .subscribe(&b, ChangeFilter::all())
        .await
        .expect("subscribe");

    let now = SystemTime::now();
    let code = ChipChangeKind::PairingCode {
        code: PairingCodeSecret::new("ABCD-EFGH"),
        expires_at: now + Duration::from_secs(120),
    };
    let mut seqs = Vec::new();
    for change in [
        created(&a, now),
        created(&b, now),
        ChipChange::of(&record(&a, "a", now), code.clone()),
    ] {
        seqs.push(bus.publish(change).await.expect("publish"));
    }
    assert_eq!(seqs, [1, 1, 2], "numbers count per tenant");

    let first = next_change(&mut of_a).await;
    assert_eq!((first.tenant.clone(), first.seq), (a.clone(), 1));
    let second = next_change(&mut of_a).await;
    assert_eq!((second.tenant.clone(), second.seq), (a.clone(), 2));
    assert_eq!(second.kind, code, "the stored change reads back whole");
    assert_eq!(second.at, now, "full precision");
    let theirs = next_change(&mut of_b).await;
    assert_eq!((theirs.tenant.clone(), theirs.seq), (b.clone(), 1));
    assert_quiet(&mut of_a, "A").await;
    assert_quiet(&mut of_b, "B").await;

    // A resume of B from the start replays B's change only.
    let mut resumed = bus
        .subscribe_from(&b, ChangeFilter::all(), 0)
        .await
        .expect("resume");
    assert_eq!(next_change(&mut resumed).await.tenant, b);
    assert_quiet(&mut resumed, "B's replay").await;

    // Under B's scope, the application role sees none of A's rows.
    let client = scratch.app_client().await;
    client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL app.tenant_id = '{}'",
            b.as_str()
        ))
        .await
        .expect("a transaction scoped to B");
    for table in ["supervisor_events", "supervisor_event_seqs"] {
        let theirs: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"),
                &[&a.as_str()],
            )
            .await
            .expect("count")
            .get(0);
        assert_eq!(theirs, 0, "{table}: B sees none of A's rows");
    }
    client.batch_execute("ROLLBACK").await.expect("rollback");
}

#[tokio::test]
async fn a_resume_replays_what_followed_then_goes_live() {
    let scratch = ScratchPg::new(POOL_SIZE).await;
    let tenant = scratch.create_tenant().await;
    let bus = replica_bus(&scratch).await;
    for expected in 1..=5 {
        let seq = bus
            .publish(created(&tenant, SystemTime::now()))
            .await
            .expect("publish");
        assert_eq!(seq, expected);
    }
    let mut resumed = bus
        .subscribe_from(&tenant, ChangeFilter::all(), 2)
        .await
        .expect("resume");
    for expected in 3..=5 {
        assert_eq!(next_change(&mut resumed).await.seq, expected, "replayed");
    }
    assert_eq!(
        bus.publish(created(&tenant, SystemTime::now()))
            .await
            .expect("publish"),
        6
    );
    assert_eq!(next_change(&mut resumed).await.seq, 6, "then live");
    assert_quiet(&mut resumed, "nothing twice").await;
    assert_eq!(resumed.last_seq(), 6);
}

#[tokio::test]
async fn a_change_published_on_one_replica_reaches_a_subscriber_of_another() {
    let scratch = ScratchPg::new(POOL_SIZE).await;
    let tenant = scratch.create_tenant().await;
    let one = replica_bus(&scratch).await;
    let other = replica_bus(&scratch).await;
    let mut live = other
        .subscribe(&tenant, ChangeFilter::all())
        .await
        .expect("subscribe");
    let seq = one
        .publish(created(&tenant, SystemTime::now()))
        .await
        .expect("publish");
    let change = next_change(&mut live).await;
    assert_eq!((change.tenant, change.seq), (tenant.clone(), seq));

    // And a resume on the publishing replica finds it too.
    let mut resumed = one
        .subscribe_from(&tenant, ChangeFilter::all(), 0)
        .await
        .expect("resume");
    assert_eq!(next_change(&mut resumed).await.seq, seq);
}

#[tokio::test]
async fn interleaved_publishers_get_consecutive_numbers_seen_in_order() {
    let scratch = ScratchPg::new(POOL_SIZE).await;
    let tenant = scratch.create_tenant().await;
    let one = replica_bus(&scratch).await;
    let other = replica_bus(&scratch).await;
    let mut live = one
        .subscribe(&tenant, ChangeFilter::all())
        .await
        .expect("subscribe");

    const EACH: u64 = 15;
    let (first, second) = tokio::join!(
        publish_many(&one, &tenant, "a", EACH),
        publish_many(&other, &tenant, "b", EACH)
    );
    let all: BTreeSet<u64> = first.iter().chain(&second).copied().collect();
    assert_eq!(
        all,
        (1..=2 * EACH).collect::<BTreeSet<_>>(),
        "distinct, consecutive numbers"
    );
    for publisher in [&first, &second] {
        assert!(publisher.windows(2).all(|w| w[0] < w[1]), "{publisher:?}");
    }

    // A transaction that numbered a change and commits late: a publisher that comes after it
    // waits for it, and the subscriber sees both, in order, without a gap.
    let client = scratch.app_client().await;
    client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL app.tenant_id = '{t}'; \
             UPDATE supervisor_event_seqs SET last_seq = last_seq + 1 WHERE tenant_id = '{t}'; \
             INSERT INTO supervisor_events (tenant_id, seq, at, chip_id, change) \
             SELECT tenant_id, {late}, at, chip_id, change FROM supervisor_events \
              WHERE tenant_id = '{t}' AND seq = 1; \
             SELECT pg_notify('supervisor_events', '{t}:{late}')",
            t = tenant.as_str(),
            late = 2 * EACH + 1,
        ))
        .await
        .expect("a slow publisher's transaction");
    let after = tokio::spawn({
        // The bus is borrowed by the test; publish through a third replica owned by the task.
        let bus = replica_bus(&scratch).await;
        let change = created(&tenant, SystemTime::now());
        async move { bus.publish(change).await.expect("publish") }
    });
    tokio::time::sleep(QUIET).await;
    assert!(
        !after.is_finished(),
        "the next publisher waits for the late one"
    );
    client.batch_execute("COMMIT").await.expect("commit");
    let next_seq = after.await.expect("the publisher");
    assert_eq!(next_seq, 2 * EACH + 2);

    for expected in 1..=2 * EACH + 2 {
        assert_eq!(
            next_change(&mut live).await.seq,
            expected,
            "in order, no gap"
        );
    }
    assert_quiet(&mut live, "nothing twice").await;
}

#[tokio::test]
async fn pruned_changes_come_as_a_gap() {
    let scratch = ScratchPg::new(POOL_SIZE).await;
    let tenant = scratch.create_tenant().await;
    let bus = replica_bus(&scratch).await;
    let old = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let recent = SystemTime::now();
    for at in [old, old, old, recent, recent] {
        bus.publish(created(&tenant, at)).await.expect("publish");
    }
    let cutoff = recent - PgEventBus::DEFAULT_RETENTION;
    assert_eq!(bus.prune(cutoff).await.expect("prune"), 3);
    assert_eq!(bus.prune(cutoff).await.expect("prune"), 0, "idempotent");

    let mut resumed = bus
        .subscribe_from(&tenant, ChangeFilter::all(), 1)
        .await
        .expect("resume");
    assert_eq!(
        next(&mut resumed).await,
        ChangeItem::Gap {
            missed: 2,
            resume_after: 1
        },
        "changes 2 and 3 are gone"
    );
    assert_eq!(next_change(&mut resumed).await.seq, 4);
    assert_eq!(next_change(&mut resumed).await.seq, 5);
    assert_quiet(&mut resumed, "the replay ends").await;
    assert_eq!(
        bus.publish(created(&tenant, recent))
            .await
            .expect("publish"),
        6,
        "numbers go on after a prune"
    );
    assert_eq!(next_change(&mut resumed).await.seq, 6);
}

/// `tenant`'s stored change `seq` as JSON text and its `code_expires_us`, read by the
/// application role in `tenant`'s scope.
async fn stored_change(scratch: &ScratchPg, tenant: &TenantId, seq: i64) -> (String, Option<i64>) {
    let client = scratch.app_client().await;
    client
        .batch_execute(&format!(
            "BEGIN; SET LOCAL app.tenant_id = '{}'",
            tenant.as_str()
        ))
        .await
        .expect("a transaction scoped to the tenant");
    let row = client
        .query_one(
            "SELECT change::text AS change, code_expires_us FROM supervisor_events \
              WHERE tenant_id = $1 AND seq = $2",
            &[&tenant.as_str(), &seq],
        )
        .await
        .expect("the stored change");
    client.batch_execute("ROLLBACK").await.expect("rollback");
    (row.get("change"), row.get("code_expires_us"))
}

/// A pairing change of chip `a` offering `code` until `expires_at`.
fn pairing_code(tenant: &TenantId, code: &str, expires_at: SystemTime) -> ChipChange {
    ChipChange::of(
        &record(tenant, "a", SystemTime::now()),
        ChipChangeKind::PairingCode {
            code: PairingCodeSecret::new(code),
            expires_at,
        },
    )
}

#[tokio::test]
async fn an_expired_pairing_code_is_scrubbed_from_the_history_without_a_gap() {
    let scratch = ScratchPg::new(POOL_SIZE).await;
    let tenant = scratch.create_tenant().await;
    let other = scratch.create_tenant().await;
    // The periodic scrub off: this test scrubs by hand, with times of its choosing.
    let listen: tokio_postgres::Config = scratch.db.url.parse().expect("a valid URL");
    let bus = PgEventBus::new(scratch.tenant_db().await, scratch.owner_pool(), listen)
        .with_scrub_interval(Duration::ZERO);
    bus.start().await.expect("the LISTEN connection");

    // Both codes on offer by the system clock: one expires in an hour, the other in two (whole
    // seconds: the scrub compares to the microsecond).
    let now_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let soon = UNIX_EPOCH + Duration::from_secs(now_secs + 3_600);
    let later = soon + Duration::from_secs(3_600);
    let now = SystemTime::now();
    let mut seqs = Vec::new();
    for change in [
        pairing_code(&tenant, "SOON-CODE", soon),
        created(&tenant, now),
        pairing_code(&tenant, "LATE-CODE", later),
        created(&tenant, now),
    ] {
        seqs.push(bus.publish(change).await.expect("publish"));
    }
    assert_eq!(seqs, [1, 2, 3, 4]);
    let theirs = bus
        .publish(pairing_code(&other, "THEIR-CODE", soon))
        .await
        .expect("publish");

    let (stored, expiry) = stored_change(&scratch, &tenant, 1).await;
    assert!(stored.contains("SOON-CODE"), "stored until it expires");
    assert!(expiry.is_some(), "indexed by its expiry");
    assert_eq!(
        bus.scrub_expired(soon - Duration::from_millis(1))
            .await
            .expect("scrub"),
        0,
        "nothing expired yet"
    );
    assert_eq!(
        bus.scrub_expired(soon).await.expect("scrub"),
        2,
        "at its expiry: this tenant's code and the other tenant's"
    );
    assert_eq!(
        bus.scrub_expired(soon).await.expect("scrub"),
        0,
        "scrubbing again changes nothing"
    );

    let (stored, expiry) = stored_change(&scratch, &tenant, 1).await;
    assert!(!stored.contains("SOON-CODE"), "the code is gone: {stored}");
    assert!(stored.contains("pairing_code_expired"), "{stored}");
    assert_eq!(expiry, None, "no longer indexed");
    let (stored, _) = stored_change(&scratch, &other, i64::try_from(theirs).unwrap()).await;
    assert!(!stored.contains("THEIR-CODE"), "every tenant is scrubbed");
    let (stored, expiry) = stored_change(&scratch, &tenant, 3).await;
    assert!(
        stored.contains("LATE-CODE") && expiry.is_some(),
        "a code not yet expired is untouched"
    );

    // A resume from before the scrubbed code (the row right after the cursor): the changes
    // around it, no gap, and never the code.
    let mut resumed = bus
        .subscribe_from(&tenant, ChangeFilter::all(), 0)
        .await
        .expect("resume");
    let replayed: Vec<u64> = vec![
        next_change(&mut resumed).await.seq,
        next_change(&mut resumed).await.seq,
        next_change(&mut resumed).await.seq,
    ];
    assert_eq!(replayed, [2, 3, 4], "no gap, and not the scrubbed code");
    assert_quiet(&mut resumed, "the replay ends").await;
    assert_eq!(resumed.last_seq(), 4);
    let mut late = bus
        .subscribe_from(&tenant, ChangeFilter::all(), 2)
        .await
        .expect("resume");
    match next_change(&mut late).await.kind {
        ChipChangeKind::PairingCode { code, expires_at } => {
            assert_eq!(
                (code.expose_secret(), expires_at),
                ("LATE-CODE", later),
                "the code still on offer is replayed whole"
            );
        }
        kind => panic!("expected the code still on offer, got {kind:?}"),
    }
    assert_eq!(next_change(&mut late).await.seq, 4);
    assert_eq!(
        bus.publish(created(&tenant, SystemTime::now()))
            .await
            .expect("publish"),
        5,
        "numbers go on after a scrub"
    );
    assert_eq!(next_change(&mut resumed).await.seq, 5, "then live");
}

#[tokio::test]
async fn a_started_bus_scrubs_expired_codes_by_itself() {
    let scratch = ScratchPg::new(POOL_SIZE).await;
    let tenant = scratch.create_tenant().await;
    let listen: tokio_postgres::Config = scratch.db.url.parse().expect("a valid URL");
    let bus = PgEventBus::new(scratch.tenant_db().await, scratch.owner_pool(), listen)
        .with_scrub_interval(Duration::from_millis(100));
    bus.start().await.expect("the LISTEN connection");

    let expired = SystemTime::now() - Duration::from_secs(1);
    let offered = SystemTime::now() + Duration::from_secs(3_600);
    for change in [
        pairing_code(&tenant, "GONE-CODE", expired),
        pairing_code(&tenant, "KEPT-CODE", offered),
    ] {
        bus.publish(change).await.expect("publish");
    }
    let deadline = tokio::time::Instant::now() + ARRIVAL;
    loop {
        let (stored, _) = stored_change(&scratch, &tenant, 1).await;
        if !stored.contains("GONE-CODE") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the expired code is still stored after {ARRIVAL:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (stored, _) = stored_change(&scratch, &tenant, 2).await;
    assert!(stored.contains("KEPT-CODE"), "the code on offer stays");
}
