//! `sqlx::migrate!` embeds the migration files when this crate compiles, and
//! cargo only notices a changed or deleted migration, not a new one: without
//! this, adding a migration could leave binaries that silently lack it.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
