//! Hash tiles on a real Postgres: written by the sequencer (and by the
//! migration for an older log), read by proofs, and every attack on them
//! refused by the proof path with the tile named, never a wrong proof.

use caracal_ledger::event::MeteringEvent;
use caracal_ledger::hash::leaf_hash;
use caracal_ledger::hashtile::MalformedTile;
use caracal_ledger::prove::{ProveError, prove_consistency, prove_event};
use caracal_ledger::store::{Ledger, LedgerStore};
use caracal_ledger::tree::MemoryTree;

use crate::scene::Scene;

/// A 900-entry log: checkpoints at 300, 768 and 900, so hash tiles 0..3 of
/// tile level 0 are full and the nodes of 768..900 exist only as rows.
async fn scene() -> Scene {
    Scene::with_steps(&[0..300, 300..768, 768..900]).await
}

async fn tree(ledger: &Ledger) -> MemoryTree {
    let mut mem = MemoryTree::new();
    for e in ledger.entries(0, 900).await.unwrap() {
        mem.push(leaf_hash(&e.leaf));
    }
    mem
}

async fn prove(scene: &Scene, index: u64) -> Result<Vec<[u8; 32]>, ProveError> {
    let id = MeteringEvent::example(index).id;
    prove_event(&scene.ledger, id, &scene.trust())
        .await
        .map(|p| p.proof)
}

/// Tiles whose bytes are not the concatenated nodes they stand for.
const UNLIKE_NODES: &str = "SELECT count(*) FROM ledger_hash_tiles h
    WHERE hashes IS DISTINCT FROM (SELECT string_agg(n.hash, ''::bytea ORDER BY n.idx)
        FROM ledger_nodes n WHERE n.level = h.tile_level * 8
         AND n.idx >= h.tile_index * 256 AND n.idx < h.tile_index * 256 + 256)";

async fn tiles_and_mismatches(scene: &mut Scene) -> (Vec<(i16, i64)>, i64) {
    let tiles = sqlx::query_as(
        "SELECT tile_level, tile_index FROM ledger_hash_tiles ORDER BY tile_level, tile_index",
    )
    .fetch_all(&mut scene.attacker)
    .await
    .unwrap();
    let unlike = sqlx::query_scalar(UNLIKE_NODES)
        .fetch_one(&mut scene.attacker)
        .await
        .unwrap();
    (tiles, unlike)
}

fn assert_blames(result: Result<Vec<[u8; 32]>, ProveError>, tile: u64) {
    match result {
        Err(ProveError::DamagedHashTile {
            level: 0, index, ..
        }) => assert_eq!(index, tile),
        other => panic!("expected hash tile 0/{tile} to be blamed, got {other:?}"),
    }
}

#[tokio::test]
async fn sequencer_writes_each_full_tile_and_proofs_match_the_tree() {
    let mut scene = scene().await;
    let (tiles, unlike) = tiles_and_mismatches(&mut scene).await;
    assert_eq!(tiles, vec![(0, 0), (0, 1), (0, 2)]);
    assert_eq!(unlike, 0);
    let mem = tree(&scene.ledger).await;
    for index in 0..900 {
        let proof = prove(&scene, index).await.unwrap();
        assert_eq!(Some(proof), mem.inclusion_proof(index, 900), "{index}");
    }
    for (old, new) in [(300, 768), (300, 900), (768, 900)] {
        let c = prove_consistency(&scene.ledger, old, Some(new), &scene.trust()).await;
        assert_eq!(Some(c.unwrap().proof), mem.consistency_proof(old, new));
    }
}

#[tokio::test]
async fn changed_byte_in_a_tile_is_refused_and_the_tile_named() {
    let mut scene = scene().await;
    // Byte 40 lies in the hash of node (0, 257).
    scene
        .attack("UPDATE ledger_hash_tiles SET hashes = set_byte(hashes, 40, get_byte(hashes, 40) # 1) WHERE tile_index = 1")
        .await;
    for index in [256, 300, 511] {
        assert_blames(prove(&scene, index).await, 1);
    }
    // Proofs that need nothing from tile 1 are still served.
    let mem = tree(&scene.ledger).await;
    for index in [0, 255, 512, 899] {
        assert_eq!(
            Some(prove(&scene, index).await.unwrap()),
            mem.inclusion_proof(index, 900)
        );
    }
    // A consistency proof from 300 needs the nodes of 256..300 from tile 1.
    let c = prove_consistency(&scene.ledger, 300, None, &scene.trust()).await;
    assert!(
        matches!(c, Err(ProveError::DamagedHashTile { index: 1, .. })),
        "{c:?}"
    );
}

#[tokio::test]
async fn swapped_tiles_are_refused_and_named() {
    let mut scene = scene().await;
    scene
        .attack(
            "UPDATE ledger_hash_tiles h SET hashes = o.hashes FROM ledger_hash_tiles o
             WHERE h.tile_level = 0 AND o.tile_level = 0 AND h.tile_index + o.tile_index = 1",
        )
        .await;
    assert_blames(prove(&scene, 5).await, 0);
    assert_blames(prove(&scene, 260).await, 1);
}

#[tokio::test]
async fn damaged_tile_with_no_nodes_left_to_compare_is_still_refused() {
    let mut scene = scene().await;
    // With the nodes under the tile gone, nothing names the tile, but the
    // proof no longer leads to the signed root, so none is served.
    scene
        .attack(
            "UPDATE ledger_hash_tiles SET hashes = set_byte(hashes, 40, get_byte(hashes, 40) # 1) WHERE tile_index = 1;
             DELETE FROM ledger_nodes WHERE level < 8 AND idx >= (256 >> level) AND idx < (512 >> level)",
        )
        .await;
    let result = prove(&scene, 300).await;
    assert!(matches!(result, Err(ProveError::Invalid(_))), "{result:?}");
}

#[tokio::test]
async fn missing_tile_is_read_from_nodes_instead() {
    let mut scene = scene().await;
    scene
        .attack("DELETE FROM ledger_hash_tiles WHERE tile_index = 1")
        .await;
    let mem = tree(&scene.ledger).await;
    for index in [256, 300, 511] {
        assert_eq!(
            Some(prove(&scene, index).await.unwrap()),
            mem.inclusion_proof(index, 900)
        );
    }
}

#[tokio::test]
async fn malformed_tile_is_refused() {
    let mut scene = scene().await;
    // The length check is a constraint, which disabling triggers keeps; the
    // table's owner can still drop it.
    scene
        .attack(
            "ALTER TABLE ledger_hash_tiles DROP CONSTRAINT ledger_hash_tiles_hashes_check;
             UPDATE ledger_hash_tiles SET hashes = substring(hashes FROM 1 FOR 1000) WHERE tile_index = 2",
        )
        .await;
    let result = prove(&scene, 600).await;
    let expected = MalformedTile {
        level: 0,
        index: 2,
        len: 1000,
    };
    assert!(
        matches!(&result, Err(ProveError::MalformedHashTile(m)) if *m == expected),
        "{result:?}"
    );
}

#[tokio::test]
async fn migration_writes_the_tiles_of_an_older_log() {
    let mut scene = scene().await;
    let before: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT hashes FROM ledger_hash_tiles ORDER BY tile_level, tile_index")
            .fetch_all(&mut scene.attacker)
            .await
            .unwrap();
    // The log as it was before migration 0004.
    scene
        .attack("DROP TABLE ledger_hash_tiles; DELETE FROM _sqlx_migrations WHERE version = 4")
        .await;
    Ledger::open(scene.url()).await.unwrap();
    let after: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT hashes FROM ledger_hash_tiles ORDER BY tile_level, tile_index")
            .fetch_all(&mut scene.attacker)
            .await
            .unwrap();
    assert_eq!(after.len(), 3);
    assert_eq!(after, before);
}
