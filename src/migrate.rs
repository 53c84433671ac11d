//! Installs the SQL kit (schema `broadcast`) with refinery. The migrations in
//! `migrations/` are embedded in the binary; their history lives in
//! `broadcast.schema_history`, so a user's `public` schema stays untouched.

use tokio_postgres::Client;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Where refinery records applied migrations.
pub const HISTORY_TABLE: &str = "broadcast.schema_history";

/// Serializes concurrent `migrate` runs (two nodes starting at once).
const LOCK_KEY: i64 = 0x7067_6272_6f61_6463; // "pgbroadc"

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("migration failed: {0}")]
    Refinery(#[from] refinery::Error),
    #[error("database error while migrating: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// Applies every embedded migration not yet applied; returns the names applied now.
/// Idempotent: a second run applies nothing.
pub async fn run(client: &mut Client) -> Result<Vec<String>, Error> {
    client
        .execute("select pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = apply(client).await;
    let unlock = client
        .execute("select pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn apply(client: &mut Client) -> Result<Vec<String>, Error> {
    // refinery creates its history table before the first migration runs.
    client
        .batch_execute("set client_min_messages = warning; create schema if not exists broadcast")
        .await?;
    let report = embedded::migrations::runner()
        .set_migration_table_name(HISTORY_TABLE)
        .run_async(client)
        .await?;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}
