//! The store against moto through the real AWS SDK: an item written through `store::Table` reads
//! back, conditional writes are enforced, the sparse due GSI answers, and the key names the code
//! uses are the ones template.yaml defines.

use aws_sdk_dynamodb::types::AttributeValue;
use paycycle::store::{Table, keys};
use paycycle_testkit::{MotoServer, Template, provision};

async fn table() -> (MotoServer, Table) {
    let moto = MotoServer::shared_or_start().unwrap();
    let sdk = moto.sdk_config().await;
    let p = provision(&sdk, &Template::load().unwrap(), &paycycle_testkit::provision::unique_prefix()).await.unwrap();
    (moto, Table::new(&sdk, p.table))
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

#[tokio::test]
async fn an_item_round_trips_and_conditional_puts_are_enforced() {
    let (_moto, table) = table().await;
    let put = || {
        table
            .client
            .put_item()
            .table_name(&table.name)
            .item(keys::PK, s("SUB#sub_1"))
            .item(keys::SK, s("SUB"))
            .item("amount_krw", AttributeValue::N("9900".into()))
            .item("customer_name", s("홍길동"))
            .condition_expression("attribute_not_exists(pk)")
    };
    put().send().await.unwrap();

    let got = table
        .client
        .get_item()
        .table_name(&table.name)
        .key(keys::PK, s("SUB#sub_1"))
        .key(keys::SK, s("SUB"))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let item = got.item().expect("item is there");
    assert_eq!(item["amount_krw"], AttributeValue::N("9900".into()));
    assert_eq!(item["customer_name"], s("홍길동"));

    let second = put().send().await.unwrap_err();
    let service = second.into_service_error();
    assert!(service.is_conditional_check_failed_exception(), "{service:?}");
}

#[tokio::test]
async fn the_due_index_is_sparse_and_ordered_by_due_time() {
    let (_moto, table) = table().await;
    for (id, due) in [("a", Some(300)), ("b", Some(100)), ("c", None)] {
        let mut put = table
            .client
            .put_item()
            .table_name(&table.name)
            .item(keys::PK, s(&format!("SUB#{id}")))
            .item(keys::SK, s("SUB"));
        if let Some(due) = due {
            put =
                put.item(keys::DUE_SHARD, s("due#00")).item(keys::NEXT_ATTEMPT_AT, AttributeValue::N(due.to_string()));
        }
        put.send().await.unwrap();
    }
    let out = table
        .client
        .query()
        .table_name(&table.name)
        .index_name(keys::DUE_INDEX)
        .key_condition_expression("#shard = :shard AND #due <= :now")
        .expression_attribute_names("#shard", keys::DUE_SHARD)
        .expression_attribute_names("#due", keys::NEXT_ATTEMPT_AT)
        .expression_attribute_values(":shard", s("due#00"))
        .expression_attribute_values(":now", AttributeValue::N("1000".into()))
        .send()
        .await
        .unwrap();
    let ids: Vec<_> = out.items().iter().map(|i| i[keys::PK].as_s().unwrap().clone()).collect();
    assert_eq!(ids, ["SUB#b", "SUB#a"], "only subscriptions with a due time, earliest first");
}

#[test]
fn code_key_names_match_the_template() {
    let def = Template::load().unwrap().table().unwrap();
    let attrs: Vec<_> = def.attribute_definitions.iter().map(|(n, _)| n.as_str()).collect();
    for key in [keys::PK, keys::SK, keys::DUE_SHARD, keys::NEXT_ATTEMPT_AT, keys::LOOKUP_PK, keys::LOOKUP_SK] {
        assert!(attrs.contains(&key), "{key} is not defined in template.yaml");
    }
    assert_eq!(def.ttl_attribute.as_deref(), Some(keys::EXPIRES_AT));
    let due = def.gsis.iter().find(|g| g.name == keys::DUE_INDEX).expect("due GSI");
    assert_eq!(due.key_schema[0].attribute, keys::DUE_SHARD);
    assert_eq!(due.key_schema[1].attribute, keys::NEXT_ATTEMPT_AT);
    let lookup = def.gsis.iter().find(|g| g.name == keys::LOOKUP_INDEX).expect("lookup GSI");
    assert_eq!(lookup.key_schema[0].attribute, keys::LOOKUP_PK);
    assert_eq!(lookup.key_schema[1].attribute, keys::LOOKUP_SK);
    let paid = def.gsis.iter().find(|g| g.name == keys::PAID_INDEX).expect("paid GSI");
    assert_eq!(paid.key_schema[0].attribute, keys::PAID_PK);
    assert_eq!(paid.key_schema[1].attribute, keys::PAID_SK);
}

/// The `paid` index projects (INCLUDE) every field a payment record has, and nothing else: a field
/// added to `PaymentRecord` but not to the template would be missing from the books (moto does
/// not show it: it may answer an index query with whole items).
#[test]
fn the_paid_index_projects_exactly_a_payments_fields() {
    use paycycle::domain::gateway::{CardInfo, PaymentDetails};
    use paycycle::store::payments::PaymentRecord;
    let def = Template::load().unwrap().table().unwrap();
    let paid = def.gsis.iter().find(|g| g.name == keys::PAID_INDEX).expect("paid GSI");
    let sub = paycycle::domain::attempt::SubscriptionId::parse("sub_1").unwrap();
    let at = "2027-01-31T00:00:00Z".parse().unwrap();
    let amount = paycycle::money::Krw::new(9_900).unwrap();
    let p = PaymentRecord::paid(
        paycycle::pg::PgMode::Payple,
        "oid",
        "cus_1",
        amount,
        at,
        Some(sub),
        None,
        Some("chk".into()),
    )
    .with_pg_order(Some("order".into()))
    .with_details(PaymentDetails { card: Some(CardInfo::default()), receipt_url: Some("https://r".into()) });
    let fields: std::collections::BTreeSet<String> =
        serde_json::to_value(&p).unwrap().as_object().unwrap().keys().cloned().collect();
    let projected: std::collections::BTreeSet<String> = paid.non_key_attributes.iter().cloned().collect();
    assert_eq!(paid.projection_type, "INCLUDE");
    assert_eq!(projected, fields);
}
