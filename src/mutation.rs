//! Mutations that return the txid Electric confirms.
//!
//! [`with_txid`] runs a closure in **one** transaction on a pooled connection,
//! reads `pg_current_xact_id_if_assigned()::xid` on that same transaction,
//! commits, and returns both. The txid is the 32-bit xid — the number
//! Electric puts in a shape's `txids` and `awaitTxId` compares against — or
//! `None` when the transaction wrote nothing, because Electric never shows
//! such a transaction and a client waiting for it would roll back.
//!
//! ```ignore
//! async fn rename(State(pool): State<Pool>, Path(id): Path<i64>, ApiJson(body): ApiJson<Rename>)
//!     -> Result<Json<Mutation<Order>>, ApiError>
//! {
//!     let mutation = with_txid(&pool, async |tx| {
//!         let row = tx
//!             .query_one("update orders set customer = $2 where id = $1 returning *", &[&id, &body.customer])
//!             .await?;
//!         Ok::<_, ApiError>(Order::from(row))
//!     })
//!     .await?;
//!     Ok(Json(mutation)) // {"data": {...}, "txid": 1234}
//! }
//! ```

use deadpool_postgres::{Pool, Transaction};
use serde::Serialize;
use tokio_postgres::GenericClient;

/// A committed mutation's result: serializes as `{"data": ..., "txid": 1234 | null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Mutation<T> {
    /// What the mutation returns.
    pub data: T,
    /// The 32-bit xid of the transaction that wrote `data`, or `null` if it wrote nothing.
    #[schema(schema_with = txid_schema, required = true)]
    pub txid: Option<u32>,
}

/// `txid` in OpenAPI: always present, an unsigned 32-bit integer or `null`.
fn txid_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::Integer, Type::Null]))
        .minimum(Some(0u32))
        .maximum(Some(u32::MAX))
        .description(Some(
            "The writing transaction's 32-bit xid (`pg_current_xact_id()::xid`, what Electric's \
             awaitTxId waits for), or null when the request wrote nothing.",
        ))
        .build()
}

/// Why the transaction around a mutation could not be run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No pooled connection could be had.
    #[error("no database connection available")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement of the transaction failed.
    #[error("database")]
    Postgres(#[from] tokio_postgres::Error),
}

/// Runs `work` in one transaction and commits it; on `Err` the transaction
/// is rolled back and nothing is returned but the error.
pub async fn with_txid<T, E, F>(pool: &Pool, work: F) -> Result<Mutation<T>, E>
where
    F: AsyncFnOnce(&Transaction<'_>) -> Result<T, E>,
    E: From<Error>,
{
    let mut client = pool.get().await.map_err(Error::from)?;
    let tx = client.transaction().await.map_err(Error::from)?;
    let data = match work(&tx).await {
        Ok(data) => data,
        Err(err) => {
            // Dropping would roll back too, but only once the connection gets to it.
            tx.rollback().await.map_err(Error::from)?;
            return Err(err);
        }
    };
    let txid = current_txid(&*tx).await.map_err(Error::from)?;
    tx.commit().await.map_err(Error::from)?;
    Ok(Mutation { data, txid })
}

/// The 32-bit xid of the current transaction, if it has written anything.
///
/// Call it inside the writing transaction, after the writes. Outside it,
/// `pg_current_xact_id()` would name another transaction; the 64-bit
/// `txid_current()` would not match what Electric reports once the xid epoch
/// is past zero.
pub async fn current_txid(tx: &impl GenericClient) -> Result<Option<u32>, tokio_postgres::Error> {
    let row = tx
        .query_one(
            "select pg_current_xact_id_if_assigned()::xid::text::bigint",
            &[],
        )
        .await?;
    Ok(row
        .get::<_, Option<i64>>(0)
        .map(|xid| u32::try_from(xid).expect("an xid is 32 bits")))
}
