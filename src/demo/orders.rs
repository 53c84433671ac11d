//! The order example's REST API. Every mutation runs through
//! [`crate::mutation::with_txid`] and answers
//! `{"data": ..., "txid": 1234 | null}`; reads answer `{"data": ...}`.

use axum::Json;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::StatusCode;
use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use utoipa::{IntoParams, ToSchema};

use super::Demo;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::json::ApiJson;
use crate::mutation::{Mutation, with_txid};

/// Path parameters whose rejections answer 404.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// An order as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Order {
    /// Assigned by the database.
    pub id: i64,
    /// Who placed it.
    pub customer: Option<String>,
    /// Where the order is in its life.
    #[schema(value_type = Status)]
    pub status: String,
    /// When it was placed.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OrderItem {
    /// Assigned by the database.
    pub id: i64,
    /// The order it belongs to.
    pub order_id: i64,
    /// The product's stock-keeping unit.
    pub sku: String,
    /// How many were ordered.
    pub quantity: i32,
}

/// An order with its lines, as reads of one order return it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct OrderWithItems {
    /// The order's own fields, inline.
    #[serde(flatten)]
    pub order: Order,
    /// Its lines.
    pub items: Vec<OrderItem>,
}

/// A read's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Data<T> {
    /// What was read.
    pub data: T,
}

/// The body of a create request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    /// 1 to 200 characters, not only spaces, no control characters.
    #[schema(min_length = 1, max_length = 200)]
    pub customer: String,
    /// At most 100; each SKU at most once.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub items: Vec<NewItem>,
}

/// A line of a create request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewItem {
    /// 1 to 64 characters, not only spaces, no control characters.
    #[schema(min_length = 1, max_length = 64)]
    pub sku: String,
    /// 1 to 1000.
    #[serde(deserialize_with = "quantity")]
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: i32,
}

const QUANTITY: std::ops::RangeInclusive<i64> = 1..=1000;

/// A quantity, refused with the rule it breaks: "an integer between 1 and 1000".
fn quantity<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
    struct Quantity;
    impl Visitor<'_> for Quantity {
        type Value = i32;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(
                f,
                "an integer between {} and {}",
                QUANTITY.start(),
                QUANTITY.end()
            )
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i32, E> {
            match i32::try_from(v) {
                Ok(q) if QUANTITY.contains(&v) => Ok(q),
                _ => Err(E::invalid_value(Unexpected::Signed(v), &self)),
            }
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i32, E> {
            match i64::try_from(v) {
                Ok(v) => self.visit_i64(v),
                Err(_) => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
            }
        }
    }
    deserializer.deserialize_i64(Quantity)
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Just placed.
    New,
    /// Being made.
    Preparing,
    /// Waiting to be picked up.
    Ready,
    /// Handed over.
    Delivered,
    /// Called off.
    Cancelled,
}

impl Status {
    /// Every status, in life order.
    pub const ALL: [Status; 5] = [
        Status::New,
        Status::Preparing,
        Status::Ready,
        Status::Delivered,
        Status::Cancelled,
    ];

    /// The name stored in the database and sent to clients.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Preparing => "preparing",
            Status::Ready => "ready",
            Status::Delivered => "delivered",
            Status::Cancelled => "cancelled",
        }
    }
}

/// Read from its name only; anything else is refused with the list of names.
impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Status, D::Error> {
        struct Name;
        impl Visitor<'_> for Name {
            type Value = Status;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                let names: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
                write!(f, "one of {}", names.join(", "))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Status, E> {
                Status::ALL
                    .into_iter()
                    .find(|s| s.as_str() == v)
                    .ok_or_else(|| E::invalid_value(Unexpected::Str(v), &self))
            }
        }
        deserializer.deserialize_str(Name)
    }
}

/// The body of a status change request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// The status to move the order to.
    pub status: Status,
}

/// Query parameters of the order list.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// 1 to 1000, default 100; newest orders first.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

impl ListParams {
    /// From the query string's pairs; unknown parameters are ignored.
    fn from_pairs(pairs: &[(String, String)]) -> Result<ListParams, ApiError> {
        let mut limit = None;
        for (name, value) in pairs {
            if name == "limit" {
                match value.trim().parse::<i64>() {
                    Ok(n) if (1..=1000).contains(&n) => limit = Some(n),
                    _ => {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "bad_query",
                            "limit must be an integer between 1 and 1000",
                        ));
                    }
                }
            }
        }
        Ok(ListParams { limit })
    }
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
    /// `at`: where the item is in the body (`items[2].`), empty when it is the body.
    fn validate(&self, at: &str) -> Result<(), ApiError> {
        check_text(&format!("{at}sku"), &self.sku, 64)
    }
}

impl NewOrder {
    fn validate(&self) -> Result<(), ApiError> {
        check_text("customer", &self.customer, 200)?;
        if self.items.len() > 100 {
            return Err(ApiError::validation(format!(
                "items must hold at most 100 items, not {}",
                self.items.len()
            )));
        }
        for (i, item) in self.items.iter().enumerate() {
            item.validate(&format!("items[{i}]."))?;
        }
        Ok(())
    }
}

fn order_not_found(id: i64) -> ApiError {
    ApiError::not_found(format!("order {id} does not exist"))
}

/// Create an order, with items.
#[utoipa::path(post, path = "/api/orders", tag = "orders", request_body = NewOrder,
    responses(
        (status = 201, description = "Created; `txid` confirms it in Electric.", body = Mutation<OrderWithItems>),
        (status = 409, description = "`conflict`: the same SKU twice in the order.", body = ErrorBody),
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
    responses(
        (status = 200, description = "The newest orders, newest first.", body = Data<Vec<Order>>),
        (status = 400, description = "`bad_query`: `limit` is not an integer between 1 and 1000.", body = ErrorBody),
    ))]
pub async fn list(
    State(demo): State<Demo>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Data<Vec<Order>>>, ApiError> {
    let Query(pairs) = query.map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "the query string could not be read",
        )
    })?;
    let limit = ListParams::from_pairs(&pairs)?.limit.unwrap_or(100);
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
#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders", params(("id" = i64, Path, description = "The order's id.")),
    responses(
        (status = 200, description = "The order with its items.", body = Data<OrderWithItems>),
        (status = 404, description = "`not_found`: no such order.", body = ErrorBody),
    ))]
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
#[utoipa::path(patch, path = "/api/orders/{id}", tag = "orders", params(("id" = i64, Path, description = "The order's id.")), request_body = StatusChange,
    responses(
        (status = 200, description = "The order as it is now; `txid` is null if it already had this status.", body = Mutation<Order>),
        (status = 404, description = "`not_found`: no such order.", body = ErrorBody),
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
#[utoipa::path(delete, path = "/api/orders/{id}", tag = "orders", params(("id" = i64, Path, description = "The order's id.")),
    responses(
        (status = 200, description = "The deleted order.", body = Mutation<Order>),
        (status = 404, description = "`not_found`: no such order.", body = ErrorBody),
    ))]
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
#[utoipa::path(post, path = "/api/orders/{id}/items", tag = "orders", params(("id" = i64, Path, description = "The order's id.")), request_body = NewItem,
    responses(
        (status = 201, description = "The added item.", body = Mutation<OrderItem>),
        (status = 404, description = "`not_found`: no such order.", body = ErrorBody),
        (status = 409, description = "`conflict`: the order already has this SKU.", body = ErrorBody),
    ))]
pub async fn add_item(
    State(demo): State<Demo>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<NewItem>,
) -> Result<(StatusCode, Json<Mutation<OrderItem>>), ApiError> {
    body.validate("")?;
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
    params(("id" = i64, Path, description = "The order's id."), ("item_id" = i64, Path, description = "The item's id.")),
    responses(
        (status = 200, description = "The removed item.", body = Mutation<OrderItem>),
        (status = 404, description = "`not_found`: the order has no such item.", body = ErrorBody),
    ))]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::json::decode;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// Any JSON, with the API's own field names and statuses among the keys
    /// and strings so that refusals come from deep inside valid-looking bodies.
    /// Generated text avoids the letters of server type names, so a name in
    /// a message can only come from the server.
    fn any_json() -> impl Strategy<Value = Value> {
        let text = prop_oneof![
            "[a-eh0-2 ._\"`-]{0,8}",
            Just("customer".to_owned()),
            Just("items".to_owned()),
            Just("sku".to_owned()),
            Just("quantity".to_owned()),
            Just("status".to_owned()),
            Just("ready".to_owned()),
            Just(String::new()),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            prop_oneof![Just(0), Just(1), Just(1000), Just(1001), Just(-1)].prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            text.clone().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(text.clone(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Words a message would hold only if it leaked the server's types.
    const LEAKS: &[&str] = &[
        "struct",
        "enum",
        "i8",
        "i16",
        "i32",
        "i64",
        "i128",
        "u8",
        "u16",
        "u32",
        "u64",
        "u128",
        "isize",
        "usize",
        "f32",
        "f64",
        "::",
        "Vec",
        "String",
        "Option",
        "sequence",
        "variant",
        "identifier",
        "map",
        "tuple",
        "invalid type",
        "invalid value",
        "invalid length",
        "NewOrder",
        "NewItem",
        "StatusChange",
        "Status",
    ];

    fn check<T: serde::de::DeserializeOwned>(
        body: &[u8],
        validate: impl Fn(&T) -> Result<(), ApiError>,
    ) -> Result<(), TestCaseError> {
        let refusal = match decode::<T>(body) {
            Ok(value) => match validate(&value) {
                Ok(()) => return Ok(()),
                Err(err) => err,
            },
            Err(err) => err,
        };
        prop_assert!(
            matches!(refusal.status.as_u16(), 400 | 422),
            "{}",
            refusal.status
        );
        prop_assert!(!refusal.message.is_empty());
        for leak in LEAKS {
            prop_assert!(
                !refusal.message.contains(leak),
                "{leak:?} in {:?} for {}",
                refusal.message,
                String::from_utf8_lossy(body)
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn no_refusal_speaks_of_server_types(
            value in any_json(),
            wrap in prop_oneof![Just(0u8), Just(1), Just(2)],
        ) {
            // Bare, as an order's only item, and as the whole order's items.
            let value = match wrap {
                0 => value,
                1 => json!({"customer": "ada", "items": [value]}),
                _ => json!({"customer": "ada", "items": value}),
            };
            let body = value.to_string();
            check::<NewOrder>(body.as_bytes(), NewOrder::validate)?;
            check::<NewItem>(body.as_bytes(), |item| item.validate(""))?;
            check::<StatusChange>(body.as_bytes(), |_| Ok(()))?;
        }

        #[test]
        fn no_refusal_of_broken_json_speaks_of_server_types(body in prop::collection::vec(any::<u8>(), 0..40)) {
            check::<NewOrder>(&body, NewOrder::validate)?;
        }
    }

    fn refusal<T: serde::de::DeserializeOwned>(body: Value) -> String {
        decode::<T>(body.to_string().as_bytes())
            .map(|_| ())
            .unwrap_err()
            .message
    }

    #[test]
    fn refusals_state_the_rule() {
        assert_eq!(
            refusal::<NewItem>(json!({"sku": "tea", "quantity": "x"})),
            r#"quantity must be an integer between 1 and 1000, not "x""#
        );
        assert_eq!(
            refusal::<NewItem>(json!({"sku": "tea", "quantity": 0})),
            "quantity must be an integer between 1 and 1000, not 0"
        );
        assert_eq!(
            refusal::<NewItem>(json!({"sku": "tea", "quantity": 1.5})),
            "quantity must be an integer between 1 and 1000, not 1.5"
        );
        assert_eq!(
            refusal::<NewOrder>(
                json!({"customer": "a", "items": [{"sku": "t", "quantity": 5000}]})
            ),
            "items[0].quantity must be an integer between 1 and 1000, not 5000"
        );
        assert_eq!(
            refusal::<StatusChange>(json!({"status": "lost"})),
            r#"status must be one of new, preparing, ready, delivered, cancelled, not "lost""#
        );
        assert_eq!(
            refusal::<StatusChange>(json!({"status": 3})),
            "status must be one of new, preparing, ready, delivered, cancelled, not 3"
        );
        assert_eq!(
            refusal::<StatusChange>(json!({"state": "new"})),
            r#"unknown field "state"; allowed: status"#
        );
        assert_eq!(
            refusal::<NewOrder>(json!({"customer": "ada", "x": 1})),
            r#"unknown field "x"; allowed: customer, items"#
        );
        let order: NewOrder = decode(br#"{"customer": "a", "items": [{"sku": "t", "quantity": 1}, {"sku": " ", "quantity": 2}]}"#).unwrap();
        assert_eq!(
            order.validate().unwrap_err().message,
            "items[1].sku must be 1 to 64 characters without control characters"
        );
    }
}
