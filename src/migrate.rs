//! Installs the SQL kit (schema `broadcast`) with refinery. The migrations in
//! `migrations/` are embedded in the binary; their history lives in
//! `broadcast.schema_history`, so a user's `public` schema stays untouched.

use tokio_postgres::Client;

pub(crate) mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Where refinery records applied migrations.
pub const HISTORY_TABLE: &str = "broadcast.schema_history";

/// Serializes concurrent `migrate` runs (two nodes starting at once).
const LOCK_KEY: i64 = 0x7067_6272_6f61_6463; // "pgbroadc"

/// Why the SQL kit could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A migration failed.
    #[error("migration failed")]
    Refinery(#[from] refinery::Error),
    /// Taking or releasing the migration lock failed.
    #[error("database error while migrating")]
    Postgres(#[from] tokio_postgres::Error),
    /// The kit installed is newer than this binary's, or could not be read.
    #[error(transparent)]
    Kit(#[from] crate::kit::Error),
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
    // A kit installed by another tool (a team's own migrations) is recorded
    // as applied first, so refinery applies only the steps after it.
    crate::kit::adopt(client).await?;
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
