//! JSON request bodies for the REST API. [`ApiJson`] reads at most
//! [`BodyLimit`] bytes (413 beyond), wants `Content-Type: application/json`
//! (415 otherwise), and explains a body it cannot use in the API's own terms:
//! the field's path in the document and the JSON it expects
//! (`items[0].quantity must be an integer between 1 and 1000, not "two"`),
//! never the server's type names.

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use futures_util::StreamExt;
use serde::de::value::BorrowedStrDeserializer;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Unexpected,
    Visitor,
};
use serde_json::Value;
use serde_path_to_error::Segment;

use crate::http::error::ApiError;

/// The largest request body [`ApiJson`] reads, in bytes. Put it in the
/// request's extensions (`Extension(BodyLimit(n))` as a layer); without it,
/// [`crate::config::DEFAULT_MAX_BODY_BYTES`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit(pub usize);

impl Default for BodyLimit {
    fn default() -> Self {
        BodyLimit(crate::config::DEFAULT_MAX_BODY_BYTES)
    }
}

/// A JSON request body whose refusals answer in the API's error shape:
/// 413 `body_too_large`, 415 `unsupported_media_type`, 400 `malformed_json`
/// (not JSON at all), 422 `validation` (JSON, but not what the endpoint takes).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .copied()
            .unwrap_or_default()
            .0;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        // Refused before a byte of it is read.
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(limit));
        }
        let mut body = request.into_body().into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_json",
                    "the request body could not be read to its end",
                )
            })?;
            if bytes.len() + chunk.len() > limit {
                return Err(too_large(limit));
            }
            bytes.extend_from_slice(&chunk);
        }
        decode(&bytes).map(ApiJson)
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is larger than this server's limit of {limit} bytes"),
    )
}

/// `application/json`, or any `application/*+json`, parameters aside.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

/// Parses `bytes` as JSON and reads a `T` from it; refusals as [`ApiJson`] answers them.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|err| {
        let message = if bytes.iter().all(u8::is_ascii_whitespace) {
            "the body is empty: send a JSON object".to_owned()
        } else {
            format!("the body is not valid JSON: {err}")
        };
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    })?;
    serde_path_to_error::deserialize(Strict(&value))
        .map_err(|err| ApiError::validation(explain(&value, err.path(), &err.inner().to_string())))
}

/// Reads a parsed document as serde_json's own `Value` reader does, except
/// that an object type is read only from a JSON object (never positionally
/// from an array), so the document means what the API's schema says.
struct Strict<'de>(&'de Value);

type JsonError = serde_json::Error;

impl<'de> Strict<'de> {
    fn unexpected(&self) -> Unexpected<'de> {
        match self.0 {
            Value::Null => Unexpected::Unit,
            Value::Bool(b) => Unexpected::Bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => Unexpected::Unsigned(u),
                (_, Some(i), _) => Unexpected::Signed(i),
                (_, _, Some(f)) => Unexpected::Float(f),
                _ => Unexpected::Other("number"),
            },
            Value::String(s) => Unexpected::Str(s),
            Value::Array(_) => Unexpected::Seq,
            Value::Object(_) => Unexpected::Map,
        }
    }
}

impl<'de> Deserializer<'de> for Strict<'de> {
    type Error = JsonError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, JsonError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    visitor.visit_u64(u)
                } else if let Some(i) = n.as_i64() {
                    visitor.visit_i64(i)
                } else {
                    visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => visitor.visit_seq(Items(items.iter())),
            Value::Object(fields) => visitor.visit_map(Fields {
                fields: fields.iter(),
                value: None,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, JsonError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, JsonError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, JsonError> {
        match self.0 {
            Value::Object(_) => self.deserialize_any(visitor),
            _ => Err(de::Error::invalid_type(self.unexpected(), &visitor)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, JsonError> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier
        ignored_any
    }
}

struct Items<'de>(std::slice::Iter<'de, Value>);

impl<'de> SeqAccess<'de> for Items<'de> {
    type Error = JsonError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, JsonError> {
        self.0
            .next()
            .map(|item| seed.deserialize(Strict(item)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Fields<'de> {
    fields: serde_json::map::Iter<'de>,
    value: Option<&'de Value>,
}

impl<'de> MapAccess<'de> for Fields<'de> {
    type Error = JsonError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, JsonError> {
        let Some((key, value)) = self.fields.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, JsonError> {
        let value = self
            .value
            .take()
            .ok_or_else(|| <JsonError as de::Error>::custom("a value was read before its key"))?;
        seed.deserialize(Strict(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len())
    }
}

/// Says what is wrong with `value` at `path`, given the reader's message.
/// Only the reader's fixed phrasings are taken apart; anything else is
/// passed on only if it reads as the API's terms.
fn explain(value: &Value, path: &serde_path_to_error::Path, message: &str) -> String {
    let at = value_at(value, path);
    let name = field_path(path);
    let subject = if name.is_empty() {
        "the body".to_owned()
    } else {
        name.clone()
    };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (field, allowed) = split_expected(rest);
        // The path ends at the unknown field itself; say where its object is.
        let parent = match path.iter().next_back() {
            Some(Segment::Map { key }) if key == field => {
                field_path_of(path.iter().take(path.iter().len() - 1))
            }
            _ => name,
        };
        let place = if parent.is_empty() {
            String::new()
        } else {
            format!(" in {parent}")
        };
        let field = quote(field);
        return match allowed {
            Some(allowed) if !allowed.is_empty() => {
                format!(
                    "unknown field {field}{place}; allowed: {}",
                    allowed.join(", ")
                )
            }
            _ => format!("unknown field {field}{place}: no fields are allowed there"),
        };
    }
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some(field) = rest.strip_suffix('`')
    {
        return format!("{} is required", join(&name, field));
    }
    if let Some(rest) = message.strip_prefix("duplicate field `")
        && let Some(field) = rest.strip_suffix('`')
    {
        return format!("{} is given twice", join(&name, field));
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let (_, allowed) = split_expected(rest);
        if let Some(allowed) = allowed.filter(|a| !a.is_empty()) {
            return format!(
                "{subject} must be one of {}, not {}",
                allowed.join(", "),
                describe(at)
            );
        }
    }
    if message.starts_with("invalid type: ")
        || message.starts_with("invalid value: ")
        || message.starts_with("invalid length ")
    {
        let expected = message
            .rfind(", expected ")
            .and_then(|i| expected_in_api_terms(&message[i + ", expected ".len()..]));
        return match expected {
            Some(expected) => format!("{subject} must be {expected}, not {}", describe(at)),
            None => format!(
                "{subject} has a type or value not allowed here: {}",
                describe(at)
            ),
        };
    }
    if in_api_terms(message) {
        return format!("{subject}: {message}");
    }
    format!("{subject} is not valid here: {}", describe(at))
}

/// `customer`, `items[0].quantity`, `labels["a b"]`; empty for the document itself.
fn field_path(path: &serde_path_to_error::Path) -> String {
    field_path_of(path.iter())
}

fn field_path_of<'p>(segments: impl Iterator<Item = &'p Segment>) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => out = join(&out, key),
            Segment::Enum { .. } | Segment::Unknown => break,
        }
    }
    out
}

fn join(parent: &str, key: &str) -> String {
    let plain = key
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{}]", quote(key)),
    }
}

/// The value the path leads to, as far as the document has it.
fn value_at<'de>(value: &'de Value, path: &serde_path_to_error::Path) -> Option<&'de Value> {
    let mut at = value;
    for segment in path {
        at = match segment {
            Segment::Seq { index } => at.get(index)?,
            Segment::Map { key } => at.get(key)?,
            Segment::Enum { .. } | Segment::Unknown => return None,
        };
    }
    Some(at)
}

/// What the client sent, briefly: `"lost"`, `5`, `null`, `an object`.
fn describe(value: Option<&Value>) -> String {
    match value {
        None => "something else".to_owned(),
        Some(Value::Null) => "null".to_owned(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => truncate(&n.to_string()),
        Some(Value::String(s)) => quote(s),
        Some(Value::Array(_)) => "an array".to_owned(),
        Some(Value::Object(_)) => "an object".to_owned(),
    }
}

/// A JSON string literal of `s`, cut to a readable length.
fn quote(s: &str) -> String {
    truncate(&Value::String(s.to_owned()).to_string())
}

fn truncate(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        return s.to_owned();
    }
    let cut: String = s.chars().take(MAX).collect();
    format!("{cut}…")
}

/// `x`, expected `a` or `b`` → (`x`, [a, b]); the names between backticks.
fn split_expected(rest: &str) -> (&str, Option<Vec<&str>>) {
    if let Some(i) = rest.rfind("`, expected ") {
        let names = rest[i + "`, expected ".len()..]
            .split('`')
            .skip(1)
            .step_by(2)
            .collect();
        return (&rest[..i], Some(names));
    }
    for none in ["`, there are no fields", "`, there are no variants"] {
        if let Some(field) = rest.strip_suffix(none) {
            return (field, Some(Vec::new()));
        }
    }
    (rest.trim_end_matches('`'), None)
}

/// What the reader expected, said as JSON; `None` if it cannot be said so.
fn expected_in_api_terms(expected: &str) -> Option<String> {
    let expected = expected.trim();
    let range = |min: i128, max: i128| format!("an integer between {min} and {max}");
    let said = match expected {
        "a boolean" => "true or false".to_owned(),
        "a string" | "a borrowed string" | "string or map" => "a string".to_owned(),
        "a character" => "a single character".to_owned(),
        "a sequence" => "an array".to_owned(),
        "a map" => "an object".to_owned(),
        "map with a single key" => "an object with a single key".to_owned(),
        "unit" => "null".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "i8" => range(i8::MIN.into(), i8::MAX.into()),
        "i16" => range(i16::MIN.into(), i16::MAX.into()),
        "i32" => range(i32::MIN.into(), i32::MAX.into()),
        "u8" => range(0, u8::MAX.into()),
        "u16" => range(0, u16::MAX.into()),
        "u32" => range(0, u32::MAX.into()),
        "i64" | "i128" | "isize" => "an integer".to_owned(),
        "u64" | "u128" | "usize" => "an integer of 0 or more".to_owned(),
        _ if expected.starts_with("struct ") => "an object".to_owned(),
        _ if expected.starts_with("tuple struct ") => "an array".to_owned(),
        _ => {
            let elements = expected
                .strip_prefix("a tuple of size ")
                .or_else(|| expected.strip_prefix("an array of length "))
                .or_else(|| expected.strip_prefix("tuple of "))
                .and_then(|n| n.split_whitespace().next()?.parse::<usize>().ok());
            match elements {
                Some(n) => format!("an array of {n} elements"),
                None if in_api_terms(expected) => expected.to_owned(),
                None => return None,
            }
        }
    };
    Some(said)
}

/// Words of the server's language rather than the API's.
const SERVER_WORDS: &[&str] = &[
    "struct",
    "enum",
    "tuple",
    "variant",
    "identifier",
    "sequence",
    "map",
    "unit",
    "option",
    "borrowed",
    "char",
    "bool",
    "str",
    "String",
    "Vec",
    "Option",
    "i8",
    "i16",
    "i32",
    "i64",
    "i128",
    "isize",
    "u8",
    "u16",
    "u32",
    "u64",
    "u128",
    "usize",
    "f32",
    "f64",
];

/// Does `text` say nothing in the server's language (type names, paths)?
fn in_api_terms(text: &str) -> bool {
    !text.contains("::")
        && !text.contains('`')
        && !text
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .any(|word| SERVER_WORDS.contains(&word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Order {
        customer: String,
        #[serde(default)]
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        sku: String,
        quantity: i32,
        #[serde(default)]
        gift: bool,
    }

    fn refusal(body: &str) -> (u16, String) {
        let err = decode::<Order>(body.as_bytes()).unwrap_err();
        (err.status.as_u16(), err.message)
    }

    #[test]
    fn refusals_name_the_field_and_the_json_expected() {
        for (body, status, message) in [
            (
                r#"{"customer": 5}"#,
                422,
                "customer must be a string, not 5",
            ),
            (r#"{}"#, 422, "customer is required"),
            (
                r#"{"customer": "a", "x": 1}"#,
                422,
                r#"unknown field "x"; allowed: customer, items"#,
            ),
            (
                r#"{"customer": "a", "items": [{"sku": "t", "quantity": "two"}]}"#,
                422,
                r#"items[0].quantity must be an integer between -2147483648 and 2147483647, not "two""#,
            ),
            (
                r#"{"customer": "a", "items": [{"sku": "t", "quantity": 1}, {"sku": "t"}]}"#,
                422,
                "items[1].quantity is required",
            ),
            (
                r#"{"customer": "a", "items": [{"sku": "t", "quantity": 1, "colour": "red"}]}"#,
                422,
                r#"unknown field "colour" in items[0]; allowed: sku, quantity, gift"#,
            ),
            (
                r#"{"customer": "a", "items": [{"sku": "t", "quantity": 1, "gift": "yes"}]}"#,
                422,
                r#"items[0].gift must be true or false, not "yes""#,
            ),
            (
                r#"{"customer": "a", "items": {"sku": "t"}}"#,
                422,
                "items must be an array, not an object",
            ),
            (
                r#"{"customer": "a", "items": [{"sku": "t", "quantity": 99999999999}]}"#,
                422,
                "items[0].quantity must be an integer between -2147483648 and 2147483647, not 99999999999",
            ),
            ("[]", 422, "the body must be an object, not an array"),
            (
                r#"["ada"]"#,
                422,
                "the body must be an object, not an array",
            ),
            (
                r#"{"customer": "a", "items": [["t", 1]]}"#,
                422,
                "items[0] must be an object, not an array",
            ),
            ("5", 422, "the body must be an object, not 5"),
            ("", 400, "the body is empty: send a JSON object"),
            (
                r#"{"customer": "#,
                400,
                "the body is not valid JSON: EOF while parsing a value at line 1 column 13",
            ),
        ] {
            assert_eq!(refusal(body), (status, message.to_owned()), "{body}");
        }
    }

    #[test]
    fn odd_keys_are_quoted() {
        let (_, message) = refusal(r#"{"customer": "a", "a b`, expected `c": 1}"#);
        assert_eq!(
            message,
            r#"unknown field "a b`, expected `c"; allowed: customer, items"#
        );
        let (_, message) =
            refusal(r#"{"customer": "a", "items": [{"sku": "t", "quantity": "x"}], "a.b": 1}"#);
        assert_eq!(message, r#"unknown field "a.b"; allowed: customer, items"#);
        let (_, message) = refusal(r#"{"customer": 1, "items": []}"#);
        assert_eq!(message, "customer must be a string, not 1");
    }
}
