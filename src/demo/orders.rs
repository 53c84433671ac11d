//! The order example's REST API. Every mutation runs through
//! [`crate::mutation::with_txid`] and answers
//! `{"data": ..., "txid": 1234 | null}`; reads answer `{"data": ...}`.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use utoipa::{IntoParams, ToSchema};

use super::Demo;
use crate::http::error::{ApiError, ErrorBody};
use crate::mutation::{Mutation, with_txid};

/// JSON body whose rejections answer in the API's error shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Path parameters whose rejections answer 404.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Order {
    pub id: i64,
    pub customer: Option<String>,
    pub status: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OrderItem {
    pub id: i64,
    pub order_id: i64,
    pub sku: String,
    pub quantity: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OrderWithItems {
    #[serde(flatten)]
    pub order: Order,
    pub items: Vec<OrderItem>,
}

/// A read's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Data<T> {
    pub data: T,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// 1 to 200 characters.
    pub customer: String,
    /// At most 100; each SKU at most once.
    #[serde(default)]
    pub items: Vec<NewItem>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    /// 1 to 64 characters.
    pub sku: String,
    /// 1 to 1000.
    pub quantity: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    New,
    Preparing,
    Ready,
    Delivered,
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Preparing => "preparing",
            Status::Ready => "ready",
            Status::Delivered => "delivered",
            Status::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    pub status: Status,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListParams {
    /// 1 to 1000, default 100; newest orders first.
    pub limit: Option<i64>,
}

const ORDER: &str = "id, customer, status, created_at";
const ITEM: &str = "id, order_id, sku, quantity";

impl From<&Row> for Order {
    fn from(row: &Row) -> Self {
        Order {
            id: row.get("id"),
            customer: row.get("customer"),
            status: row.get("status"),
            created_at: row.get("created_at"),
        }
    }
}

impl From<&Row> for OrderItem {
    fn from(row: &Row) -> Self {
        OrderItem {
            id: row.get("id"),
            order_id: row.get("order_id"),
            sku: row.get("sku"),
            quantity: row.get("quantity"),
        }
    }
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let len = value.chars().count();
    if value.trim().is_empty() || len > max || value.chars().any(char::is_control) {
        return Err(ApiError::validation(format!(
            "{field} must be 1 to {max} characters without control characters"
        )));
    }
    Ok(())
}

impl NewItem {
    fn validate(&self) -> Result<(), ApiError> {
        check_text("sku", &self.sku, 64)?;
        if !(1..=1000).contains(&self.quantity) {
            return Err(ApiError::validation("quantity must be between 1 and 1000"));
        }
        Ok(())
    }
}

impl NewOrder {
    fn validate(&self) -> Result<(), ApiError> {
        check_text("customer", &self.customer, 200)?;
        if self.items.len() > 100 {
            return Err(ApiError::validation("an order has at most 100 items"));
        }
        self.items.iter().try_for_each(NewItem::validate)
    }
}

fn order_not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("order {id} does not exist"))
}

/// Create an order, with items.
#[utoipa::path(post, path = "/api/orders", tag = "orders", request_body = NewOrder,
    responses(
        (status = 201, description = "created; `txid` confirms it in Electric", body = Mutation<OrderWithItems>),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 409, description = "the same SKU twice", body = ErrorBody),
        (status = 422, description = "validation", body = ErrorBody),
    ))]
pub async fn create(
    State(demo): State<Demo>,
    ApiJson(body): ApiJson<NewOrder>,
) -> Result<(StatusCode, Json<Mutation<OrderWithItems>>), ApiError> {
    body.validate()?;
    let mutation = with_txid(&demo.pool, async |tx| {
        let row = tx
            .query_one(
                &format!("insert into orders (customer) values ($1) returning {ORDER}"),
                &[&body.customer],
            )
            .await?;
        let order = Order::from(&row);
        let mut items = Vec::with_capacity(body.items.len());
        for item in &body.items {
            let row = tx
                .query_one(
                    &format!("insert into order_items (order_id, sku, quantity) values ($1, $2, $3) returning {ITEM}"),
                    &[&order.id, &item.sku, &item.quantity],
                )
                .await?;
            items.push(OrderItem::from(&row));
        }
        Ok::<_, ApiError>(OrderWithItems { order, items })
    })
    .await?;
    Ok((StatusCode::CREATED, Json(mutation)))
}

/// List orders, newest first.
#[utoipa::path(get, path = "/api/orders", tag = "orders", params(ListParams),
    responses((status = 200, body = Data<Vec<Order>>), (status = 400, body = ErrorBody)))]
pub async fn list(
    State(demo): State<Demo>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Data<Vec<Order>>>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::validation("limit must be between 1 and 1000"));
    }
    let client = demo
        .pool
        .get()
        .await
        .map_err(crate::mutation::Error::from)?;
    let rows = client
        .query(
            &format!("select {ORDER} from orders order by id desc limit $1"),
            &[&limit],
        )
        .await?;
    Ok(Json(Data {
        data: rows.iter().map(Order::from).collect(),
    }))
}

/// One order with its items.
#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders", params(("id" = i64, Path)),
    responses((status = 200, body = Data<OrderWithItems>), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(demo): State<Demo>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Data<OrderWithItems>>, ApiError> {
    let client = demo
        .pool
        .get()
        .await
        .map_err(crate::mutation::Error::from)?;
    let row = client
        .query_opt(&format!("select {ORDER} from orders where id = $1"), &[&id])
        .await?
        .ok_or_else(|| order_not_found(id))?;
    let items = client
        .query(
            &format!("select {ITEM} from order_items where order_id = $1 order by id"),
            &[&id],
        )
        .await?;
    Ok(Json(Data {
        data: OrderWithItems {
            order: Order::from(&row),
            items: items.iter().map(OrderItem::from).collect(),
        },
    }))
}

/// Change an order's status. Setting the status it already has changes
/// nothing and answers `txid: null`.
#[utoipa::path(patch, path = "/api/orders/{id}", tag = "orders", params(("id" = i64, Path)), request_body = StatusChange,
    responses(
        (status = 200, body = Mutation<Order>),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn set_status(
    State(demo): State<Demo>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<StatusChange>,
) -> Result<Json<Mutation<Order>>, ApiError> {
    let status = body.status.as_str();
    let mutation = with_txid(&demo.pool, async |tx| {
        let changed = tx
            .query_opt(
                &format!("update orders set status = $2 where id = $1 and status is distinct from $2 returning {ORDER}"),
                &[&id, &status],
            )
            .await?;
        let row = match changed {
            Some(row) => row,
            None => tx
                .query_opt(&format!("select {ORDER} from orders where id = $1"), &[&id])
                .await?
                .ok_or_else(|| order_not_found(id))?,
        };
        Ok::<_, ApiError>(Order::from(&row))
    })
    .await?;
    Ok(Json(mutation))
}

/// Delete an order and its items.
#[utoipa::path(delete, path = "/api/orders/{id}", tag = "orders", params(("id" = i64, Path)),
    responses((status = 200, body = Mutation<Order>), (status = 404, body = ErrorBody)))]
pub async fn remove(
    State(demo): State<Demo>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Mutation<Order>>, ApiError> {
    let mutation = with_txid(&demo.pool, async |tx| {
        let row = tx
            .query_opt(
                &format!("delete from orders where id = $1 returning {ORDER}"),
                &[&id],
            )
            .await?
            .ok_or_else(|| order_not_found(id))?;
        Ok::<_, ApiError>(Order::from(&row))
    })
    .await?;
    Ok(Json(mutation))
}

/// Add an item to an order.
#[utoipa::path(post, path = "/api/orders/{id}/items", tag = "orders", params(("id" = i64, Path)), request_body = NewItem,
    responses(
        (status = 201, body = Mutation<OrderItem>),
        (status = 404, description = "no such order", body = ErrorBody),
        (status = 409, description = "the order already has this SKU", body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
pub async fn add_item(
    State(demo): State<Demo>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<NewItem>,
) -> Result<(StatusCode, Json<Mutation<OrderItem>>), ApiError> {
    body.validate()?;
    let mutation = with_txid(&demo.pool, async |tx| {
        let row = tx
            .query_one(
                &format!("insert into order_items (order_id, sku, quantity) values ($1, $2, $3) returning {ITEM}"),
                &[&id, &body.sku, &body.quantity],
            )
            .await
            .map_err(|e| match e.code() {
                // The foreign key is the authority on whether the order exists.
                Some(code) if *code == SqlState::FOREIGN_KEY_VIOLATION => order_not_found(id),
                _ => ApiError::from(e),
            })?;
        Ok::<_, ApiError>(OrderItem::from(&row))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(mutation)))
}

/// Remove an item from an order.
#[utoipa::path(delete, path = "/api/orders/{id}/items/{item_id}", tag = "orders",
    params(("id" = i64, Path), ("item_id" = i64, Path)),
    responses((status = 200, body = Mutation<OrderItem>), (status = 404, body = ErrorBody)))]
pub async fn remove_item(
    State(demo): State<Demo>,
    ApiPath((id, item_id)): ApiPath<(i64, i64)>,
) -> Result<Json<Mutation<OrderItem>>, ApiError> {
    let mutation = with_txid(&demo.pool, async |tx| {
        let row = tx
            .query_opt(
                &format!(
                    "delete from order_items where order_id = $1 and id = $2 returning {ITEM}"
                ),
                &[&id, &item_id],
            )
            .await?
            .ok_or_else(|| ApiError::not_found(format!("order {id} has no item {item_id}")))?;
        Ok::<_, ApiError>(OrderItem::from(&row))
    })
    .await?;
    Ok(Json(mutation))
}
