//! Data tiles on a real Postgres: written by the sequencer, read by the
//! verifier, and every attack on them or on the rows they stand for (which
//! queries and proofs read) caught with the index named.

use caracal_ledger::store::{Ledger, LedgerStore};
use caracal_ledger::tile::unpack_tile;
use caracal_ledger::verify::{Scope, verify_store};

use crate::scene::{Scene, assert_caught_saying};

/// A 900-entry log: checkpoints at 300 (inside tile 1), 768 (the end of tile
/// 2) and 900, so tiles 0..3 are complete and 768..900 are rows only.
async fn scene() -> Scene {
    Scene::with_steps(&[0..300, 300..768, 768..900]).await
}

/// The record of entry `idx` rebuilt from its row (the layout of `tile.rs`).
const RECORD: &str =
    "uuid_send(event_id) || batch_root || int4send(batch_pos) || int4send(length(leaf)) || leaf";

/// SQL for the plain bytes of `tile`, built from its rows. The sequencer
/// stores tiles packed, but a reader takes plain ones too (tiles written
/// before migration 0006), so an attacker may write either form.
fn plain_tile(tile: u64) -> String {
    format!(
        "(SELECT string_agg({RECORD}, ''::bytea ORDER BY idx) FROM ledger_entries
          WHERE idx >= {} AND idx < {})",
        tile * 256,
        tile * 256 + 256
    )
}

/// Every tile as the verifier reads it: unpacked.
async fn unpacked_tiles(scene: &Scene) -> Vec<Vec<u8>> {
    let chunk = scene.ledger.tiles(0, 100).await.unwrap();
    (chunk.inputs().iter())
        .map(|t| unpack_tile(t.packing, t.data).unwrap())
        .collect()
}

#[tokio::test]
async fn sequencer_writes_each_complete_tile_and_the_log_verifies() {
    let mut scene = scene().await;
    let tiles: Vec<i64> = sqlx::query_scalar("SELECT tile FROM ledger_tiles ORDER BY tile")
        .fetch_all(&mut scene.attacker)
        .await
        .unwrap();
    assert_eq!(tiles, vec![0, 1, 2]);
    let stored: Vec<(i16, i32)> =
        sqlx::query_as("SELECT packing, length(data) FROM ledger_tiles ORDER BY tile")
            .fetch_all(&mut scene.attacker)
            .await
            .unwrap();
    let chunk = scene.ledger.tiles(0, 3).await.unwrap();
    for ((packing, stored_len), input) in stored.iter().zip(chunk.inputs()) {
        assert_eq!(
            (*packing, input.packing),
            (1, 1),
            "tile {} is not packed",
            input.tile
        );
        let plain = unpack_tile(input.packing, input.data).unwrap();
        assert!(
            (*stored_len as usize) < plain.len() / 2,
            "tile {} packed to {stored_len} of {} bytes",
            input.tile,
            plain.len()
        );
    }
    for input in chunk.inputs() {
        let plain = unpack_tile(input.packing, input.data).unwrap();
        let records = caracal_ledger::tile::parse_tile(&plain).unwrap();
        let rows = scene
            .ledger
            .entries(input.tile * 256, input.tile * 256 + 256)
            .await
            .unwrap();
        for (r, row) in records.iter().zip(&rows) {
            assert_eq!((r.leaf, r.event_id), (&row.leaf[..], row.event_id));
        }
        assert!(input.recorded_root.is_some());
    }
    let report = scene.verify().await;
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert_eq!(
        (report.entries_checked, report.checkpoints_matched),
        (900, 3)
    );
}

#[tokio::test]
async fn modified_row_inside_a_tile_is_caught() {
    let mut scene = scene().await;
    scene.attack("UPDATE ledger_entries SET leaf = set_byte(leaf, 200, get_byte(leaf, 200) # 1) WHERE idx = 100").await;
    assert_caught_saying(
        &scene.verify().await,
        100,
        "bytes differ from its data tile",
    );
}

#[tokio::test]
async fn rewritten_event_id_of_a_row_inside_a_tile_is_caught() {
    let mut scene = scene().await;
    scene
        .attack("UPDATE ledger_entries SET event_id = '01941f29-7c00-7000-8000-0000000000ff' WHERE idx = 40")
        .await;
    assert_caught_saying(&scene.verify().await, 40, "event id differs");
}

#[tokio::test]
async fn modified_byte_in_a_tile_is_caught() {
    let mut scene = scene().await;
    // Byte 256 of tile 1 lies in the leaf of its first record (index 256).
    let plain = plain_tile(1);
    scene
        .attack(&format!(
            "UPDATE ledger_tiles SET packing = 0,
                    data = set_byte({plain}, 256, get_byte({plain}, 256) # 1) WHERE tile = 1"
        ))
        .await;
    assert_caught_saying(
        &scene.verify().await,
        256,
        "differ from what the gateway signed",
    );
}

#[tokio::test]
async fn deleted_tile_is_caught_and_its_rows_still_checked() {
    let mut scene = scene().await;
    scene
        .attack("DELETE FROM ledger_tiles WHERE tile = 1")
        .await;
    let report = scene.verify().await;
    assert_caught_saying(&report, 256, "data tile 1 is missing");
    assert_eq!(
        (report.entries_checked, report.checkpoints_matched),
        (900, 3)
    );
}

#[tokio::test]
async fn malformed_tile_is_caught_and_its_rows_still_checked() {
    let mut scene = scene().await;
    scene
        .attack("UPDATE ledger_tiles SET data = substring(data FROM 1 FOR 1000) WHERE tile = 2")
        .await;
    let report = scene.verify().await;
    assert_caught_saying(&report, 512, "data tile 2 is malformed");
    assert_eq!(report.checkpoints_matched, 3, "{:#?}", report.problems);
}

#[tokio::test]
async fn tiles_that_do_not_unpack_are_caught_and_their_rows_still_checked() {
    let attacks = [
        // a packed tile declaring 4 GiB of plain bytes: refused unread
        "UPDATE ledger_tiles SET data = overlay(data PLACING '\\xffffffff'::bytea FROM 1) WHERE tile = 1",
        // the block cut short
        "UPDATE ledger_tiles SET data = substring(data FROM 1 FOR length(data) - 7) WHERE tile = 1",
        // a packing no reader knows (the attacker drops the CHECK first)
        "ALTER TABLE ledger_tiles DROP CONSTRAINT ledger_tiles_packing_check;
         UPDATE ledger_tiles SET packing = 2 WHERE tile = 1",
        // plain bytes labelled as packed
        &format!(
            "UPDATE ledger_tiles SET data = {} WHERE tile = 1",
            plain_tile(1)
        ),
    ];
    for attack in attacks {
        let mut scene = scene().await;
        scene.attack(attack).await;
        let report = scene.verify().await;
        assert_caught_saying(&report, 256, "data tile 1 is malformed");
        assert_eq!(
            (report.entries_checked, report.checkpoints_matched),
            (900, 3),
            "{attack}: {:#?}",
            report.problems
        );
    }
}

#[tokio::test]
async fn plain_tiles_written_before_packing_still_verify() {
    let mut scene = scene().await;
    let before = unpacked_tiles(&scene).await;
    // As a log written before migration 0006 holds them, tile 1 alone
    // packed (the sequencer completed it after the migration).
    for tile in [0, 2] {
        scene
            .attack(&format!(
                "UPDATE ledger_tiles SET packing = 0, data = {} WHERE tile = {tile}",
                plain_tile(tile)
            ))
            .await;
    }
    assert_eq!(unpacked_tiles(&scene).await, before);
    let report = scene.verify().await;
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert_eq!(report.entries_checked, 900);
    let plain = plain_tile(2);
    scene
        .attack(&format!(
            "UPDATE ledger_tiles SET data = set_byte({plain}, 256, get_byte({plain}, 256) # 1) WHERE tile = 2"
        ))
        .await;
    assert_caught_saying(
        &scene.verify().await,
        512,
        "differ from what the gateway signed",
    );
}

#[tokio::test]
async fn deleted_row_inside_a_tile_is_caught() {
    let mut scene = scene().await;
    scene
        .attack("DELETE FROM ledger_entries WHERE idx = 300")
        .await;
    assert_caught_saying(&scene.verify().await, 300, "entry row missing");
}

#[tokio::test]
async fn swapped_rows_inside_a_tile_are_caught() {
    let mut scene = scene().await;
    scene
        .attack(
            "UPDATE ledger_entries SET idx = 1000 WHERE idx = 5;
             UPDATE ledger_entries SET idx = 5 WHERE idx = 15;
             UPDATE ledger_entries SET idx = 15 WHERE idx = 1000;",
        )
        .await;
    assert_caught_saying(&scene.verify().await, 5, "differ from its data tile");
}

#[tokio::test]
async fn swapped_records_inside_a_tile_are_caught() {
    let mut scene = scene().await;
    // Each record still carries its own batch position, so only the order
    // (the tree) is wrong: named through the stored level-0 nodes.
    scene
        .attack(&format!(
            "UPDATE ledger_tiles SET packing = 0, data = (
                 SELECT string_agg({RECORD}, ''::bytea
                        ORDER BY CASE idx WHEN 5 THEN 15 WHEN 15 THEN 5 ELSE idx END)
                 FROM ledger_entries WHERE idx < 256) WHERE tile = 0"
        ))
        .await;
    assert_caught_saying(&scene.verify().await, 5, "leaf hash the tree recorded");
}

#[tokio::test]
async fn swapped_tiles_are_caught() {
    let mut scene = scene().await;
    scene
        .attack(
            "UPDATE ledger_tiles SET tile = 1000 WHERE tile = 0;
             UPDATE ledger_tiles SET tile = 0 WHERE tile = 1;
             UPDATE ledger_tiles SET tile = 1 WHERE tile = 1000;",
        )
        .await;
    // Every record still matches its batch; the tree nodes name the move.
    assert_caught_saying(&scene.verify().await, 0, "leaf hash the tree recorded");
}

#[tokio::test]
async fn rows_deleted_from_the_end_of_a_tile_on_are_caught() {
    let mut scene = scene().await;
    scene
        .attack("DELETE FROM ledger_entries WHERE idx >= 700")
        .await;
    let report = scene.verify().await;
    assert_caught_saying(&report, 700, "entry row missing");
    assert!(
        report.problems.iter().any(|p| p.what.contains("truncated")),
        "{:#?}",
        report.problems
    );
}

#[tokio::test]
async fn range_check_reads_tiles_and_catches_a_changed_row() {
    let mut scene = scene().await;
    let range = Scope::Range { from: 300, to: 900 };
    let report = verify_store(&scene.ledger, &scene.trust(), range)
        .await
        .unwrap();
    assert!(report.is_intact(), "{:#?}", report.problems);
    assert_eq!(report.entries_checked, 600);
    scene.attack("UPDATE ledger_entries SET leaf = set_byte(leaf, 300, get_byte(leaf, 300) # 1) WHERE idx = 600").await;
    let report = verify_store(&scene.ledger, &scene.trust(), range)
        .await
        .unwrap();
    assert_caught_saying(&report, 600, "bytes differ from its data tile");
}

#[tokio::test]
async fn migration_backfill_builds_the_same_tiles_as_the_sequencer() {
    let mut scene = scene().await;
    let before = unpacked_tiles(&scene).await;
    let migration = include_str!("../../../migrations/postgres/0003_ledger_tiles.sql");
    let backfill = &migration[migration.find("INSERT INTO ledger_tiles").unwrap()..];
    scene.attack("DELETE FROM ledger_tiles").await;
    scene.attack(backfill).await;
    let after = unpacked_tiles(&scene).await;
    assert_eq!(after.len(), 3);
    assert!(
        before == after,
        "backfilled tiles differ from the sequencer's"
    );
    assert!(scene.verify().await.is_intact());
}

#[tokio::test]
async fn tiles_refuse_update_and_delete() {
    let scene = scene().await;
    let pool = match &scene.ledger {
        Ledger::Postgres(pg) => pg.pool().clone(),
        Ledger::Sqlite(_) => unreachable!(),
    };
    for sql in [
        "UPDATE ledger_tiles SET tile = 9 WHERE tile = 0",
        "DELETE FROM ledger_tiles WHERE tile = 0",
        "TRUNCATE ledger_tiles",
    ] {
        let err = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await
            .expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

#[tokio::test]
async fn tile_record_naming_another_event_is_caught() {
    let mut scene = scene().await;
    // Record 3 of tile 0 claims an event id its bytes do not carry.
    scene
        .attack(
            "UPDATE ledger_tiles SET packing = 0, data = (
                 SELECT string_agg(CASE idx WHEN 3 THEN uuid_send('01941f29-7c00-7000-8000-0000000000ff')
                                   ELSE uuid_send(event_id) END
                                   || batch_root || int4send(batch_pos) || int4send(length(leaf)) || leaf,
                                   ''::bytea ORDER BY idx)
                 FROM ledger_entries WHERE idx < 256) WHERE tile = 0",
        )
        .await;
    let report = scene.verify().await;
    assert_caught_saying(
        &report,
        3,
        "bytes do not carry event id 01941f29-7c00-7000-8000-0000000000ff",
    );
    assert_caught_saying(&report, 3, "event id differs from its data tile");
}
