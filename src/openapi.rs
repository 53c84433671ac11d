//! `x-sync` for OpenAPI documents, read from `broadcast.routes` at request
//! time: a DBA's change in SQL shows in the document without a redeploy, and
//! the document cannot drift from the triggers that actually fire.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tokio_postgres::GenericClient;
use utoipa::openapi::OpenApi;
use utoipa::openapi::extensions::Extensions;

/// An API path whose data clients sync, and the tables behind it.
#[derive(Debug, Clone, Copy)]
pub struct SyncedPath {
    /// As in the document, e.g. `/api/orders/{id}`.
    pub path: &'static str,
    /// Table names as `regclass` text (`orders`, `"My Schema".t`).
    pub tables: &'static [&'static str],
}

/// Adds `x-sync: {"local_first": true, "broadcast": {"channel", "events"}}` to
/// each synced path. `broadcast` lists the enabled routes of the path's tables:
/// one object for one channel, an array of them for several, `null` for none.
pub async fn add_x_sync(
    doc: &mut OpenApi,
    client: &impl GenericClient,
    synced: &[SyncedPath],
) -> Result<(), tokio_postgres::Error> {
    let statement = "select r.channel, r.event from broadcast.routes r \
                     where r.enabled and r.table_name in (select to_regclass(t) from unnest($1::text[]) t) \
                     order by r.channel, r.event";
    for synced_path in synced {
        let Some(item) = doc.paths.paths.get_mut(synced_path.path) else {
            continue;
        };
        let tables: Vec<&str> = synced_path.tables.to_vec();
        let rows = client.query(statement, &[&tables]).await?;
        let mut channels: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for row in rows {
            let events = channels.entry(row.get(0)).or_default();
            let event: String = row.get(1);
            if !events.contains(&event) {
                events.push(event);
            }
        }
        let mut broadcast: Vec<Value> = channels
            .into_iter()
            .map(|(channel, events)| json!({ "channel": channel, "events": events }))
            .collect();
        let broadcast = match broadcast.len() {
            0 => Value::Null,
            1 => broadcast.remove(0),
            _ => Value::Array(broadcast),
        };
        let x_sync = json!({ "local_first": true, "broadcast": broadcast });
        let mut extensions = item.extensions.take().unwrap_or_default();
        extensions.insert("x-sync".to_owned(), x_sync);
        item.extensions = Some(extensions);
    }
    Ok(())
}

/// Extensions of a path item, for tests and callers that read the document back.
pub fn x_sync_of(doc: &OpenApi, path: &str) -> Option<Value> {
    let item = doc.paths.paths.get(path)?;
    let extensions: &Extensions = item.extensions.as_ref()?;
    extensions.get("x-sync").cloned()
}
