//! The committed OpenAPI snapshot (`gateway/web/openapi.json`), which the web app's
//! TypeScript types are generated from, matches the document the gateway serves.
//! `UPDATE_OPENAPI=1 cargo test -p atelier-gateway --test openapi_snapshot` (or
//! `make openapi`) rewrites it.

use std::path::Path;

use atelier_gateway::openapi;

#[test]
fn web_snapshot_matches_the_served_document() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/openapi.json");
    let document = openapi::document()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    let document = format!("{document}\n");
    if std::env::var("UPDATE_OPENAPI").is_ok_and(|value| value == "1") {
        std::fs::write(&path, &document).expect("write the snapshot");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == document,
        "{} is out of date with the gateway's OpenAPI document: run `make openapi` and commit it",
        path.display()
    );
}
