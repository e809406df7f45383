//! DynamoDB Streams records as Lambda receives them (DESIGN §3): the `NewImage` of a stream
//! record is DynamoDB JSON (`{"S": ".."}`, `{"N": ".."}`, `{"M": {..}}` …). These convert it to
//! the SDK's [`Item`] so records are read with the same code as the table, and back (the local
//! stack builds Lambda stream events from `GetRecords`).

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine;
use serde_json::{Map, Value};

use super::{Item, StoreError, from_item, keys};

fn bad(message: impl Into<String>) -> StoreError {
    StoreError::Corrupt { key: "stream record".into(), message: message.into() }
}

fn strings(v: &Value) -> Result<Vec<String>, StoreError> {
    v.as_array()
        .ok_or_else(|| bad("set is not an array"))?
        .iter()
        .map(|s| s.as_str().map(str::to_string).ok_or_else(|| bad("set member is not a string")))
        .collect()
}

fn b64(s: &str) -> Result<Blob, StoreError> {
    base64::engine::general_purpose::STANDARD.decode(s).map(Blob::new).map_err(|e| bad(format!("binary: {e}")))
}

/// One DynamoDB-JSON attribute value.
pub fn attribute_from_json(v: &Value) -> Result<AttributeValue, StoreError> {
    let obj = v.as_object().filter(|o| o.len() == 1).ok_or_else(|| bad("attribute is not a one-key object"))?;
    let (tag, inner) = obj.iter().next().expect("one entry");
    let text = || inner.as_str().map(str::to_string).ok_or_else(|| bad(format!("{tag} is not a string")));
    Ok(match tag.as_str() {
        "S" => AttributeValue::S(text()?),
        "N" => AttributeValue::N(text()?),
        "BOOL" => AttributeValue::Bool(inner.as_bool().ok_or_else(|| bad("BOOL is not a boolean"))?),
        "NULL" => AttributeValue::Null(true),
        "B" => AttributeValue::B(b64(&text()?)?),
        "SS" => AttributeValue::Ss(strings(inner)?),
        "NS" => AttributeValue::Ns(strings(inner)?),
        "BS" => AttributeValue::Bs(strings(inner)?.iter().map(|s| b64(s)).collect::<Result<_, _>>()?),
        "L" => AttributeValue::L(
            inner
                .as_array()
                .ok_or_else(|| bad("L is not an array"))?
                .iter()
                .map(attribute_from_json)
                .collect::<Result<_, _>>()?,
        ),
        "M" => AttributeValue::M(item_from_json(inner)?),
        other => return Err(bad(format!("unknown attribute type {other}"))),
    })
}

/// A DynamoDB-JSON item (a stream record's `Keys`/`NewImage`).
pub fn item_from_json(v: &Value) -> Result<Item, StoreError> {
    v.as_object()
        .ok_or_else(|| bad("image is not an object"))?
        .iter()
        .map(|(k, v)| Ok((k.clone(), attribute_from_json(v)?)))
        .collect()
}

/// The DynamoDB-JSON form of one attribute value.
pub fn attribute_to_json(v: &AttributeValue) -> Value {
    let b64 = |b: &Blob| Value::String(base64::engine::general_purpose::STANDARD.encode(b.as_ref()));
    let mut m = Map::new();
    let (tag, inner) = match v {
        AttributeValue::S(s) => ("S", Value::String(s.clone())),
        AttributeValue::N(n) => ("N", Value::String(n.clone())),
        AttributeValue::Bool(b) => ("BOOL", Value::Bool(*b)),
        AttributeValue::Null(_) => ("NULL", Value::Bool(true)),
        AttributeValue::B(b) => ("B", b64(b)),
        AttributeValue::Ss(ss) => ("SS", ss.iter().cloned().map(Value::String).collect()),
        AttributeValue::Ns(ns) => ("NS", ns.iter().cloned().map(Value::String).collect()),
        AttributeValue::Bs(bs) => ("BS", bs.iter().map(b64).collect()),
        AttributeValue::L(l) => ("L", l.iter().map(attribute_to_json).collect()),
        AttributeValue::M(m) => ("M", item_to_json(m)),
        _ => ("NULL", Value::Bool(true)),
    };
    m.insert(tag.into(), inner);
    Value::Object(m)
}

/// The DynamoDB-JSON form of an item.
pub fn item_to_json(item: &Item) -> Value {
    Value::Object(item.iter().map(|(k, v)| (k.clone(), attribute_to_json(v))).collect())
}

/// The entity type of a stream image (`webhook_event`, …), if any.
pub fn entity(item: &Item) -> Option<&str> {
    item.get(keys::ENTITY).and_then(|v| v.as_s().ok()).map(String::as_str)
}

/// Reads a record from a stream image.
pub fn record_from_image<T: serde::de::DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    from_item(item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attribute() -> impl Strategy<Value = AttributeValue> {
        let leaf = prop_oneof![
            any::<String>().prop_map(AttributeValue::S),
            any::<i64>().prop_map(|n| AttributeValue::N(n.to_string())),
            any::<bool>().prop_map(AttributeValue::Bool),
            Just(AttributeValue::Null(true)),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(|b| AttributeValue::B(Blob::new(b))),
            proptest::collection::vec(any::<String>(), 1..4).prop_map(AttributeValue::Ss),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(AttributeValue::L),
                proptest::collection::hash_map("[a-z_]{1,8}", inner, 0..4).prop_map(AttributeValue::M),
            ]
        })
    }

    proptest! {
        #[test]
        fn dynamodb_json_round_trips(item in proptest::collection::hash_map("[a-z_]{1,8}", attribute(), 0..6)) {
            let json = item_to_json(&item);
            prop_assert_eq!(item_from_json(&json).unwrap(), item);
        }
    }

    #[test]
    fn a_lambda_stream_image_parses() {
        // The shape AWS documents for a DynamoDB stream record's NewImage.
        let image = serde_json::json!({
            "pk": {"S": "WH#steppay#PAYMENT:1"}, "sk": {"S": "WH"}, "entity": {"S": "webhook_event"},
            "expires_at": {"N": "1800000000"}, "headers": {"M": {"user-agent": {"S": "StepPay"}}},
            "flag": {"BOOL": true}, "nothing": {"NULL": true}, "tags": {"SS": ["a", "b"]}
        });
        let item = item_from_json(&image).unwrap();
        assert_eq!(entity(&item), Some("webhook_event"));
        assert_eq!(item["expires_at"], AttributeValue::N("1800000000".into()));
        assert!(item_from_json(&serde_json::json!({"x": {"Q": "?"}})).is_err());
        assert!(item_from_json(&serde_json::json!({"x": {"S": 1}})).is_err());
        assert!(item_from_json(&serde_json::json!({"x": {"S": "a", "N": "1"}})).is_err());
    }
}
