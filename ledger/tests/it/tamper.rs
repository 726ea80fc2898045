//! Attacks on a real Postgres log by someone with table access who disables
//! the append-only triggers (`session_replication_role = replica`). Each must
//! be caught by the verifier (the code behind `caracal merkle verify`), with
//! the first bad index or the bad checkpoint named.

use caracal_ledger::batch::BatchSigner;
use caracal_ledger::hash::Hash;
use caracal_ledger::keys::KeyPair;
use caracal_ledger::note::Checkpoint;
use caracal_ledger::store::LedgerStore;
use caracal_ledger::verify::{Scope, verify_store};

use crate::common::*;
use crate::scene::{Scene, assert_caught, assert_caught_saying};

/// A 30-entry log (checkpoints at 10, 20, 30) and an attacker's connection.
async fn scene() -> Scene {
    Scene::with_steps(&[0..10, 10..20, 20..30]).await
}

#[tokio::test]
async fn intact_log_verifies() {
    let scene = scene().await;
    let report = scene.verify().await;
    assert!(report.is_intact(), "{:?}", report.problems);
    assert_eq!(
        (report.entries_checked, report.checkpoints_matched),
        (30, 3)
    );
}

#[tokio::test]
async fn modified_byte_is_caught() {
    let mut scene = scene().await;
    scene.attack("UPDATE ledger_entries SET leaf = set_byte(leaf, 200, get_byte(leaf, 200) # 1) WHERE idx = 13").await;
    let report = scene.verify().await;
    assert_caught(&report, 13);
    assert!(
        report.problems.iter().any(|p| p.checkpoint == Some(20)),
        "{:#?}",
        report.problems
    );
}

#[tokio::test]
async fn modified_byte_with_rewritten_node_is_caught() {
    let mut scene = scene().await;
    scene
        .attack(
            "UPDATE ledger_entries SET leaf = set_byte(leaf, 200, get_byte(leaf, 200) # 1) WHERE idx = 13;
             UPDATE ledger_nodes SET hash = sha256('\\x00'::bytea || (SELECT leaf FROM ledger_entries WHERE idx = 13))
              WHERE level = 0 AND idx = 13;",
        )
        .await;
    assert_caught(&scene.verify().await, 13);
}

#[tokio::test]
async fn deleted_entry_is_caught() {
    let mut scene = scene().await;
    scene
        .attack("DELETE FROM ledger_entries WHERE idx = 13")
        .await;
    assert_caught(&scene.verify().await, 13);
}

#[tokio::test]
async fn swapped_entries_are_caught() {
    let mut scene = scene().await;
    scene
        .attack(
            "UPDATE ledger_entries SET idx = 1000 WHERE idx = 5;
             UPDATE ledger_entries SET idx = 5 WHERE idx = 15;
             UPDATE ledger_entries SET idx = 15 WHERE idx = 1000;",
        )
        .await;
    assert_caught(&scene.verify().await, 5);
}

#[tokio::test]
async fn forged_entry_inserted_in_the_middle_is_caught() {
    let mut scene = scene().await;
    // A plausible event, signed by a gateway key the log never registered.
    let rogue = BatchSigner::new(KeyPair::generate(GATEWAY).unwrap());
    let forged = rogue.sign_events(&events(500..501)).unwrap();
    let leaf = hex::encode(&forged.events[0]);
    let id = caracal_ledger::event::MeteringEvent::example(500).id;
    scene
        .attack(&format!(
            "UPDATE ledger_entries SET idx = idx + 1000 WHERE idx >= 20;
             UPDATE ledger_entries SET idx = idx - 999 WHERE idx >= 1000;
             INSERT INTO ledger_entries (idx, event_id, leaf, batch_root, batch_pos, event_time, agent)
             VALUES (20, '{id}', '\\x{leaf}', '\\x{}', 0, now(), 'team-a/agent-3');",
            hex::encode([9u8; 32])
        ))
        .await;
    let report = scene.verify().await;
    assert_caught(&report, 20);
}

/// Insert, as the attacker, the entry of example event `example` at `idx`,
/// claiming a batch no gateway signed.
async fn insert_unsigned_entry(scene: &mut Scene, idx: u64, example: u64) {
    let event = caracal_ledger::event::MeteringEvent::example(example);
    let leaf = hex::encode(event.encode().unwrap());
    scene
        .attack(&format!(
            "INSERT INTO ledger_entries (idx, event_id, leaf, batch_root, batch_pos, event_time, agent)
             VALUES ({idx}, '{}', '\\x{leaf}', '\\x{}', 0, now(), 'team-a/agent-0');",
            event.id,
            hex::encode([7u8; 32])
        ))
        .await;
}

#[tokio::test]
async fn forged_entry_appended_is_caught() {
    let mut scene = scene().await;
    insert_unsigned_entry(&mut scene, 30, 777).await;
    assert_caught(&scene.verify().await, 30);
}

/// Verification with a deadline: a walk over every empty range up to a
/// forged index would never end.
async fn verify_within(scene: &Scene, seconds: u64) -> caracal_ledger::verify::Report {
    tokio::time::timeout(std::time::Duration::from_secs(seconds), scene.verify())
        .await
        .expect("verification did not finish: it walked empty ranges")
}

/// An entry inserted at index 2^62, beyond three whole data tiles: named at
/// once (one lookup steps over the gap), not after 2^62 / 20,000 reads.
#[tokio::test]
async fn forged_entry_far_beyond_the_end_is_caught_at_once() {
    let mut scene = Scene::with_steps(&[0..300, 300..768, 768..900]).await;
    insert_unsigned_entry(&mut scene, 1 << 62, 5000).await;
    let report = verify_within(&scene, 30).await;
    assert_caught_saying(
        &report,
        900,
        "the next stored entry is index 4611686018427387904",
    );
    assert_eq!(
        report.entries_checked, 900,
        "every real entry is still checked"
    );
}

/// A checkpoint row claiming a size of 2^62 (its note is not signed): the
/// stored entries end at 30, so the read ends there too.
#[tokio::test]
async fn checkpoint_claiming_a_huge_size_is_caught_at_once() {
    let mut scene = scene().await;
    scene
        .attack(&format!(
            "INSERT INTO ledger_checkpoints (size, root, key_id, note)
             VALUES (4611686018427387904, '\\x{}', '\\x00000000', 'forged');",
            hex::encode([7u8; 32])
        ))
        .await;
    let report = verify_within(&scene, 30).await;
    assert!(!report.is_intact(), "{:#?}", report.problems);
    assert_eq!(report.entries_checked, 30, "{:#?}", report.problems);
}

#[tokio::test]
async fn truncated_log_is_caught() {
    let mut scene = scene().await;
    scene
        .attack("DELETE FROM ledger_entries WHERE idx >= 25")
        .await;
    assert_caught(&scene.verify().await, 25);
}

#[tokio::test]
async fn consistent_rollback_is_caught_by_a_known_checkpoint() {
    let mut scene = scene().await;
    let latest = scene
        .ledger
        .status()
        .await
        .unwrap()
        .latest_checkpoint
        .unwrap();
    // Roll everything back to size 20, checkpoints and nodes included.
    scene
        .attack(
            "DELETE FROM ledger_entries WHERE idx >= 20;
             DELETE FROM ledger_checkpoints WHERE size > 20;
             DELETE FROM ledger_nodes WHERE (idx + 1) * (1::bigint << level) > 20;",
        )
        .await;
    // Self-consistent on its own...
    assert!(scene.verify().await.is_intact());
    // ...but not against a checkpoint someone kept.
    let mut trust = scene.trust();
    trust.known_checkpoints.push(latest.note);
    let report = verify_store(&scene.ledger, &trust, Scope::Full)
        .await
        .unwrap();
    assert_caught(&report, 20);
}

fn forged_note(key: &KeyPair, size: u64) -> (String, Hash) {
    let root = [0x5a; 32];
    (
        Checkpoint {
            origin: ORIGIN.into(),
            size,
            root,
        }
        .sign(key),
        root,
    )
}

#[tokio::test]
async fn forked_checkpoint_is_caught() {
    let mut scene = scene().await;
    // Validly signed (the key leaked, or a second sequencer ran) but not this log.
    let (note, root) = forged_note(&scene.key, 20);
    scene
        .attack(&format!(
            "UPDATE ledger_checkpoints SET note = '{}', root = '\\x{}' WHERE size = 20",
            note.replace('\'', "''"),
            hex::encode(root)
        ))
        .await;
    let report = scene.verify().await;
    assert!(!report.is_intact());
    let fork = report
        .problems
        .iter()
        .find(|p| p.checkpoint == Some(20))
        .expect("fork named");
    assert!(fork.what.contains("forked checkpoint"), "{fork}");
    assert!(fork.what.contains("10..20"), "{fork}");
}

#[tokio::test]
async fn forked_checkpoint_presented_from_outside_is_caught() {
    let scene = scene().await;
    let (note, _) = forged_note(&scene.key, 20);
    let mut trust = scene.trust();
    trust.known_checkpoints.push(note);
    let report = verify_store(&scene.ledger, &trust, Scope::Full)
        .await
        .unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.checkpoint == Some(20) && p.what.contains("fork")),
        "{:#?}",
        report.problems
    );
}

#[tokio::test]
async fn edited_checkpoint_note_is_caught() {
    let mut scene = scene().await;
    scene.attack("UPDATE ledger_checkpoints SET note = replace(note, E'\\n20\\n', E'\\n21\\n') WHERE size = 20").await;
    let report = scene.verify().await;
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.checkpoint == Some(20) && p.what.contains("rejected")),
        "{:#?}",
        report.problems
    );
}

#[tokio::test]
async fn sequencer_refuses_to_extend_a_damaged_log() {
    let mut scene = scene().await;
    scene
        .attack("DELETE FROM ledger_entries WHERE idx >= 25")
        .await;
    scene.ledger.submit(batch(&scene.gw, 30..31)).await.unwrap();
    assert!(scene.ledger.sequence_pending(&scene.key).await.is_err());
}

#[tokio::test]
async fn range_check_catches_entries_deleted_at_its_end() {
    let mut scene = scene().await;
    // The range 10..20 ends at a checkpoint; with its last entry gone the
    // read simply stops early, which must not pass for an intact range.
    scene
        .attack("DELETE FROM ledger_entries WHERE idx = 19")
        .await;
    let range = Scope::Range { from: 10, to: 20 };
    let report = verify_store(&scene.ledger, &scene.trust(), range)
        .await
        .unwrap();
    assert_caught(&report, 19);
}

#[tokio::test]
async fn proof_for_an_event_whose_id_column_was_rewritten_is_refused() {
    let mut scene = scene().await;
    // Row 5's bytes now answer to another event id: a proof would show
    // some event's inclusion, but not the one asked about.
    let forged = uuid::Uuid::parse_str("01941f29-7c00-7000-8000-0000000000ff").unwrap();
    scene
        .attack(&format!(
            "UPDATE ledger_entries SET event_id = '{forged}' WHERE idx = 5"
        ))
        .await;
    let proved = caracal_ledger::prove::prove_event(&scene.ledger, forged, &scene.trust()).await;
    assert!(
        proved.is_err(),
        "a proof was served for bytes that name another event"
    );
}
