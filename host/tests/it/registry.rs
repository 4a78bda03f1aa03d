//! `rivulet registry` over real HTTP: Confluent's register / lookup / fetch round trips,
//! its JSON shapes, content type and error codes; and rivulet's registry client against it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::registry::registry;
use rivulet::registry::client::{RegistryClient, RegistryError};
use std::time::Duration;

const SALE: &str = r#"{"type":"record","name":"StoreSale","fields":[{"name":"store_id","type":"string"},{"name":"sale_amount","type":"int"},{"name":"sale_ts","type":{"type":"long","logicalType":"timestamp-millis"}}]}"#;
const OTHER: &str = r#"{"type":"record","name":"Other","fields":[{"name":"n","type":"long"}]}"#;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// Status, content type and JSON body of a request.
fn call(
    method: &str,
    url: &str,
    body: Option<serde_json::Value>,
) -> (u16, String, serde_json::Value) {
    let agent = agent();
    let response = match (method, body) {
        ("POST", Some(body)) => agent
            .post(url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .send(body.to_string()),
        ("PUT", Some(body)) => agent
            .put(url)
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .send(body.to_string()),
        _ => agent.get(url).call(),
    };
    let mut response = response.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.body_mut().read_to_string().unwrap();
    (status, content_type, serde_json::from_str(&text).unwrap())
}

fn schema(text: &str) -> serde_json::Value {
    serde_json::json!({ "schema": text })
}

#[test]
fn registry_says_it_is_for_development_only() {
    let (_registry, url, banner) = registry();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(banner.contains("development only"), "{banner}");
    assert!(banner.contains(&url), "{banner}");
}

#[test]
fn register_lookup_and_fetch_round_trip_with_confluents_shapes() {
    let (_registry, url, _) = registry();
    let ct = "application/vnd.schemaregistry.v1+json";
    // Register: an id; the same schema (even spaced differently) the same id.
    let (status, content_type, body) = call(
        "POST",
        &format!("{url}/subjects/sales-value/versions"),
        Some(schema(SALE)),
    );
    assert_eq!((status, content_type.as_str()), (200, ct));
    assert_eq!(body, serde_json::json!({ "id": 1 }));
    let spaced = SALE.replace(",", ", ");
    let (_, _, again) = call(
        "POST",
        &format!("{url}/subjects/sales-value/versions"),
        Some(serde_json::json!({ "schema": spaced, "schemaType": "AVRO" })),
    );
    assert_eq!(again, serde_json::json!({ "id": 1 }));
    let (_, _, other) = call(
        "POST",
        &format!("{url}/subjects/sales-value/versions"),
        Some(schema(OTHER)),
    );
    assert_eq!(other, serde_json::json!({ "id": 2 }));
    // Fetch by id.
    let (status, content_type, body) = call("GET", &format!("{url}/schemas/ids/1"), None);
    assert_eq!((status, content_type.as_str()), (200, ct));
    assert_eq!(body, schema(SALE));
    // Versions.
    let (_, _, latest) = call(
        "GET",
        &format!("{url}/subjects/sales-value/versions/latest"),
        None,
    );
    assert_eq!(
        latest,
        serde_json::json!({ "subject": "sales-value", "version": 2, "id": 2, "schema": OTHER })
    );
    let (_, _, first) = call(
        "GET",
        &format!("{url}/subjects/sales-value/versions/1"),
        None,
    );
    assert_eq!(
        first,
        serde_json::json!({ "subject": "sales-value", "version": 1, "id": 1, "schema": SALE })
    );
    let (_, _, versions) = call("GET", &format!("{url}/subjects/sales-value/versions"), None);
    assert_eq!(versions, serde_json::json!([1, 2]));
    // Lookup.
    let (status, _, found) = call(
        "POST",
        &format!("{url}/subjects/sales-value"),
        Some(schema(&spaced)),
    );
    assert_eq!(status, 200);
    assert_eq!(
        found,
        serde_json::json!({ "subject": "sales-value", "version": 1, "id": 1, "schema": SALE })
    );
    // Subjects, config.
    call(
        "POST",
        &format!("{url}/subjects/orders-key/versions"),
        Some(schema("\"string\"")),
    );
    let (_, _, subjects) = call("GET", &format!("{url}/subjects"), None);
    assert_eq!(subjects, serde_json::json!(["orders-key", "sales-value"]));
    let (_, _, config) = call("GET", &format!("{url}/config"), None);
    assert_eq!(config, serde_json::json!({ "compatibilityLevel": "NONE" }));
}

#[test]
fn errors_carry_confluents_codes_and_messages() {
    let (_registry, url, _) = registry();
    let ct = "application/vnd.schemaregistry.v1+json";
    let error =
        |code: u32, message: &str| serde_json::json!({ "error_code": code, "message": message });
    let (status, content_type, body) = call("GET", &format!("{url}/schemas/ids/7"), None);
    assert_eq!((status, content_type.as_str()), (404, ct));
    assert_eq!(body, error(40403, "Schema not found"));
    let (status, _, body) = call("GET", &format!("{url}/subjects/nope/versions/latest"), None);
    assert_eq!(
        (status, body),
        (404, error(40401, "Subject 'nope' not found."))
    );
    let (status, _, body) = call("POST", &format!("{url}/subjects/nope"), Some(schema(SALE)));
    assert_eq!(
        (status, body),
        (404, error(40401, "Subject 'nope' not found."))
    );
    call(
        "POST",
        &format!("{url}/subjects/s/versions"),
        Some(schema(SALE)),
    );
    let (status, _, body) = call("GET", &format!("{url}/subjects/s/versions/2"), None);
    assert_eq!((status, body), (404, error(40402, "Version 2 not found.")));
    let (status, _, body) = call("GET", &format!("{url}/subjects/s/versions/zero"), None);
    assert_eq!(status, 422);
    assert_eq!(body["error_code"], 42202);
    let (status, _, body) = call("POST", &format!("{url}/subjects/s"), Some(schema(OTHER)));
    assert_eq!((status, body), (404, error(40403, "Schema not found")));
    let (status, _, body) = call(
        "POST",
        &format!("{url}/subjects/s/versions"),
        Some(schema(r#"{"type":"record","name":"R"}"#)),
    );
    assert_eq!(status, 422);
    assert_eq!(body["error_code"], 42201);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("Invalid schema"),
        "{body}"
    );
    let (status, _, body) = call(
        "POST",
        &format!("{url}/subjects/s/versions"),
        Some(serde_json::json!({ "schema": "{}", "schemaType": "PROTOBUF" })),
    );
    assert_eq!(
        (status, body["error_code"].clone()),
        (422, serde_json::json!(42201))
    );
    let (status, _, body) = call(
        "PUT",
        &format!("{url}/config"),
        Some(serde_json::json!({ "compatibility": "BACKWARD" })),
    );
    assert_eq!(
        (status, body["error_code"].clone()),
        (422, serde_json::json!(42203))
    );
    let (status, _, body) = call("GET", &format!("{url}/no/such/path"), None);
    assert_eq!((status, body), (404, error(404, "HTTP 404 Not Found")));
}

#[test]
fn client_registers_once_fetches_by_id_and_names_unknown_ids_and_a_registry_that_is_down() {
    let (mut registry, url, _) = registry();
    let mut client = RegistryClient::new(&url);
    client.check().unwrap();
    let sale = apache_avro::Schema::parse_str(SALE).unwrap();
    assert_eq!(client.register("sales-value", &sale).unwrap(), 1);
    assert_eq!(client.register("sales-value", &sale).unwrap(), 1);
    // A second client (no cache) reads it back by id.
    let mut reader = RegistryClient::new(&url);
    assert_eq!(*reader.schema(1).unwrap(), sale);
    assert_eq!(
        reader.schema(9).unwrap_err(),
        RegistryError::UnknownId {
            url: url.clone(),
            id: 9
        }
    );
    assert_eq!(
        reader.schema(9).unwrap_err().to_string(),
        format!("schema id 9 is not in the schema registry at {url}")
    );
    registry.kill().unwrap();
    registry.wait().unwrap();
    // Cached: still answered; not cached: the registry is named as unreachable.
    assert_eq!(*reader.schema(1).unwrap(), sale);
    let down = reader.schema(2).unwrap_err();
    assert!(
        matches!(down, RegistryError::Unreachable { .. }),
        "{down:?}"
    );
    assert!(
        down.to_string()
            .starts_with(&format!("the schema registry at {url} is unreachable: ")),
        "{down}"
    );
    assert!(client.check().is_err());
}
