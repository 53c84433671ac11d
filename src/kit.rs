//! The SQL kit's versions, for databases whose schema only a team's own
//! migration tool may change (dbmate, Flyway, Alembic, node-pg-migrate…).
//!
//! * [`sql`] prints the kit's steps (the embedded `migrations/`) as one
//!   idempotent, transaction-safe file to drop into such a tool
//!   (`pgbroadcast sql [--from N]`);
//! * [`installed`] reads which version a database has, whoever installed it:
//!   `broadcast.kit_version()` (step 7 on), or what earlier steps left in the
//!   catalog;
//! * [`adopt`] records a kit another tool installed in refinery's history, so
//!   `pgbroadcast migrate` applies only what is missing;
//! * [`check`] is what `serve --no-migrate` runs: the kit must be exactly the
//!   version this binary was built with.

use std::sync::LazyLock;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_postgres::{Client, GenericClient};

use crate::migrate::HISTORY_TABLE;

/// One step of the kit: an embedded migration `V<version>__<name>.sql`.
#[derive(Debug, Clone)]
pub struct Step {
    /// Its version: the kit's version once it is applied.
    pub version: u32,
    /// The name after `V<version>__`.
    pub name: String,
    /// The SQL it runs.
    pub sql: String,
    /// refinery's checksum of it (name, version and SQL).
    pub checksum: u64,
}

impl Step {
    /// The file it comes from, e.g. `V7__kit_version.sql`.
    pub fn file_name(&self) -> String {
        format!("V{}__{}.sql", self.version, self.name)
    }
}

/// Every step of the kit, oldest first.
pub static STEPS: LazyLock<Vec<Step>> = LazyLock::new(|| {
    let mut steps: Vec<Step> = crate::migrate::embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| Step {
            version: u32::try_from(m.version()).expect("kit versions are positive"),
            name: m.name().to_owned(),
            sql: m.sql().unwrap_or_default().to_owned(),
            checksum: m.checksum(),
        })
        .collect();
    steps.sort_by_key(|s| s.version);
    steps
});

/// The kit version this binary installs and expects: its newest step's.
pub static CURRENT: LazyLock<u32> = LazyLock::new(|| STEPS.last().map_or(0, |step| step.version));

/// Checksums refinery recorded for steps whose text has changed since
/// (comments, and `if not exists` / `or replace` where a step had none) with
/// the same effect: `pgbroadcast migrate` brings such rows up to date instead
/// of refusing a "divergent" migration. Any other checksum is still refused.
const EARLIER_CHECKSUMS: &[(u32, u64)] = &[
    // Before the kit was made idempotent (kit version 6).
    (1, 4_436_197_479_964_796_014),
    (2, 3_915_269_201_999_176_389),
    (6, 17_449_588_570_292_535_213),
];

/// Why the kit in a database does not fit this binary.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No kit at all.
    #[error(
        "the SQL kit (schema broadcast) is not installed in this database, and this pgbroadcast needs kit version {current}: run `pgbroadcast migrate`, or add it to your own migrations with `pgbroadcast sql` (the same as `pgbroadcast sql --from 0`)"
    )]
    Missing {
        /// The version this binary needs.
        current: u32,
    },
    /// A kit older than this binary's.
    #[error(
        "the SQL kit in this database is version {installed}, and this pgbroadcast needs kit version {current}: run `pgbroadcast migrate`, or add the missing steps to your own migrations with `pgbroadcast sql --from {installed}`"
    )]
    Older {
        /// The version installed.
        installed: u32,
        /// The version this binary needs.
        current: u32,
    },
    /// A kit newer than this binary's: never downgraded.
    #[error(
        "the SQL kit in this database is version {installed}, newer than this pgbroadcast's kit version {current}: run a pgbroadcast release with kit version {installed} (a kit is never downgraded)"
    )]
    Newer {
        /// The version installed.
        installed: u32,
        /// The version this binary knows.
        current: u32,
    },
    /// `pgbroadcast sql --from` a version this binary does not have.
    #[error(
        "--from {from}: this pgbroadcast's SQL kit goes up to version {current}, so there is nothing after version {from} to print (`select broadcast.kit_version()` tells a database's version)"
    )]
    UnknownVersion {
        /// The version asked for.
        from: u32,
        /// The newest version this binary has.
        current: u32,
    },
    /// The database could not be read or written.
    #[error("database error while reading the SQL kit's version")]
    Postgres(#[from] tokio_postgres::Error),
}

/// The kit's steps after `from` up to [`CURRENT`] (`from` 0: the whole kit),
/// as one file for a migration tool.
pub fn sql(from: u32) -> String {
    steps(from, *CURRENT)
}

/// [`sql`], refusing a `from` this binary does not have (`pgbroadcast sql`).
pub fn sql_from(from: u32) -> Result<String, Error> {
    let current = *CURRENT;
    if from > current {
        return Err(Error::UnknownVersion { from, current });
    }
    Ok(sql(from))
}

/// The kit's steps after `from` up to `to`, each preceded by a header naming
/// its version and file, after a leading comment saying how to use them.
pub fn steps(from: u32, to: u32) -> String {
    let upgrade = if from == 0 {
        String::new()
    } else {
        format!(" --from {from}")
    };
    let mut out = format!(
        "-- pgbroadcast SQL kit, version {to}: the steps after version {from}.\n\
         -- Printed by `pgbroadcast sql{upgrade}`; add it as one migration of your own tool.\n\
         --\n\
         -- Idempotent and transaction-safe: it may run in one transaction (as most\n\
         -- migration tools run a file) or statement by statement, and run again on a\n\
         -- database that has these steps, it succeeds and changes nothing.\n\
         -- `select broadcast.kit_version()` tells the version a database has (from 7\n\
         -- on); the next release's steps come from `pgbroadcast sql --from {to}`.\n\
         -- `pgbroadcast migrate` recognises a kit installed this way and applies\n\
         -- only what is missing.\n"
    );
    for step in STEPS.iter().filter(|s| s.version > from && s.version <= to) {
        out.push_str(&format!(
            "\n-- pgbroadcast SQL kit, version {} ({})\n",
            step.version,
            step.file_name()
        ));
        out.push_str(step.sql.trim_end());
        out.push('\n');
    }
    out
}

/// What each step before 7 added or changed, newest first: the first that
/// holds in a database without `broadcast.kit_version()` is its version.
const RECOGNISE: &str = "
select case
    when pg_catalog.to_regprocedure('broadcast.kit_version()') is not null then -1
    -- V6 added broadcast._send
    when pg_catalog.to_regprocedure('broadcast._send(text, text, text, bigint, text, text, text, jsonb, bigint)') is not null then 6
    -- V5 made broadcast._notify security definer
    when (select p.prosecdef from pg_catalog.pg_proc p
           where p.oid = pg_catalog.to_regprocedure('broadcast._notify(text, text, text, bigint, text, text, text, jsonb, bigint)')) then 5
    -- V4 made on_change read the statement's first two rows (v_first)
    when (select p.prosrc like '%v_first%' from pg_catalog.pg_proc p
           where p.oid = pg_catalog.to_regprocedure('broadcast.on_change()')) then 4
    -- V3 made _notify read the pgbroadcast.transport setting
    when (select p.prosrc like '%pgbroadcast.transport%' from pg_catalog.pg_proc p
           where p.oid = pg_catalog.to_regprocedure('broadcast._notify(text, text, text, bigint, text, text, text, jsonb, bigint)')) then 3
    -- V2 added broadcast.grants
    when pg_catalog.to_regclass('broadcast.grants') is not null then 2
    -- V1 added broadcast.enable
    when pg_catalog.to_regprocedure('broadcast.enable(regclass, text, text, text, jsonb, text[], integer)') is not null then 1
    else 0
end";

/// The kit version installed in the database `client` is connected to,
/// whoever installed it; `None` without a kit.
pub async fn installed(client: &impl GenericClient) -> Result<Option<u32>, Error> {
    let found: i32 = client.query_one(RECOGNISE, &[]).await?.get(0);
    let version = match found {
        -1 => client
            .query_one("select broadcast.kit_version()", &[])
            .await?
            .get::<_, i32>(0),
        n => n,
    };
    Ok(u32::try_from(version).ok().filter(|v| *v > 0))
}

/// What `serve --no-migrate` runs: the installed kit must be [`CURRENT`].
/// Returns its version.
pub async fn check(client: &impl GenericClient) -> Result<u32, Error> {
    let current = *CURRENT;
    match installed(client).await? {
        None => Err(Error::Missing { current }),
        Some(installed) if installed < current => Err(Error::Older { installed, current }),
        Some(installed) if installed > current => Err(Error::Newer { installed, current }),
        Some(installed) => Ok(installed),
    }
}

/// Before refinery runs: records a kit another tool installed (or steps it
/// applied beyond what refinery's history records) as applied, so refinery
/// applies only the steps after it; brings up to date the checksums of
/// steps recorded with an earlier text of the same step. Refuses a kit newer
/// than [`CURRENT`]. Returns the versions it recorded.
pub async fn adopt(client: &mut Client) -> Result<Vec<u32>, Error> {
    let tx = client.transaction().await?;
    let Some(installed) = installed(&tx).await? else {
        return Ok(Vec::new());
    };
    let current = *CURRENT;
    if installed > current {
        return Err(Error::Newer { installed, current });
    }
    // refinery's own table, as refinery creates it (int4 versions).
    tx.batch_execute(&format!(
        "create table if not exists {HISTORY_TABLE}(
             version int4 primary key,
             name varchar(255),
             applied_on varchar(255),
             checksum varchar(255))"
    ))
    .await?;
    let recorded: Vec<(i32, Option<String>, Option<String>)> = tx
        .query(
            &format!("select version, name, checksum from {HISTORY_TABLE}"),
            &[],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    for (version, name, checksum) in &recorded {
        let Some(step) = STEPS
            .iter()
            .find(|s| i64::from(s.version) == i64::from(*version))
        else {
            continue;
        };
        let earlier = checksum
            .as_deref()
            .and_then(|c| c.parse::<u64>().ok())
            .is_some_and(|c| EARLIER_CHECKSUMS.contains(&(step.version, c)));
        if name.as_deref() == Some(step.name.as_str()) && earlier {
            tx.execute(
                &format!("update {HISTORY_TABLE} set checksum = $1 where version = $2"),
                &[&step.checksum.to_string(), version],
            )
            .await?;
        }
    }
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .expect("now formats as RFC 3339");
    let mut adopted = Vec::new();
    for step in STEPS.iter().filter(|s| s.version <= installed) {
        if recorded
            .iter()
            .any(|(v, _, _)| i64::from(*v) == i64::from(step.version))
        {
            continue;
        }
        let version = i32::try_from(step.version).expect("kit versions fit an int4");
        tx.execute(
            &format!(
                "insert into {HISTORY_TABLE} (version, name, applied_on, checksum) \
                 values ($1, $2, $3, $4)"
            ),
            &[&version, &step.name, &now, &step.checksum.to_string()],
        )
        .await?;
        adopted.push(step.version);
    }
    tx.commit().await?;
    if !adopted.is_empty() {
        tracing::info!(
            installed,
            ?adopted,
            "SQL kit installed by another tool: recorded in {HISTORY_TABLE}"
        );
    }
    Ok(adopted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_is_the_newest_step_and_every_step_has_a_header() {
        assert_eq!(*CURRENT, STEPS.iter().map(|s| s.version).max().unwrap());
        assert!(*CURRENT >= 7);
        let whole = sql(0);
        for step in STEPS.iter() {
            let header = format!(
                "-- pgbroadcast SQL kit, version {} ({})\n",
                step.version,
                step.file_name()
            );
            assert!(whole.contains(&header), "{header}");
        }
        assert!(whole.contains("Idempotent and transaction-safe"));
        assert!(!sql(*CURRENT).contains("(V1__"));
        assert!(sql_from(*CURRENT + 1).is_err());
    }

    #[test]
    fn the_last_step_sets_the_kit_version_to_its_own_number() {
        let last = STEPS.last().unwrap();
        assert!(
            last.sql
                .contains("create or replace function broadcast.kit_version()"),
            "{} must replace broadcast.kit_version()",
            last.file_name()
        );
        assert!(
            last.sql.contains(&format!("select {}\n", last.version)),
            "{} must return {}",
            last.file_name(),
            last.version
        );
    }
}
