//! Items in DynamoDB JSON (`{"S": ".."}`, `{"N": ".."}`, `{"M": {..}}` …): a stream record's
//! `NewImage` as Lambda delivers it (DESIGN §3), read with the same code as the table, and the
//! subscriptions API's page cursors.

use serde_json::Value;

use super::{Item, StoreError, from_item, keys};

/// An item in DynamoDB JSON (`{"S": ".."}`, `{"N": ".."}`, `{"M": {..}}` …), through serde_dynamo —
/// the same conversion `aws_lambda_events` reads stream images with.
pub fn item_to_json(item: &Item) -> Value {
    serde_json::to_value(serde_dynamo::Item::from(item.clone())).expect("a DynamoDB item serializes")
}

/// An item from DynamoDB JSON; anything that is not one is `Corrupt`.
pub fn item_from_json(v: &Value) -> Result<Item, StoreError> {
    let item: serde_dynamo::Item = serde_json::from_value(v.clone())
        .map_err(|e| StoreError::Corrupt { key: "DynamoDB JSON".into(), message: e.to_string() })?;
    Ok(item.into())
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
    use aws_sdk_dynamodb::primitives::Blob;
    use aws_sdk_dynamodb::types::AttributeValue;
    use proptest::prelude::*;

    use super::*;

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
