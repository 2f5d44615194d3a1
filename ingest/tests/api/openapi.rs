//! The OpenAPI document at /openapi.json and Swagger UI at /docs, as a client gets them
//! from the running application.

use locus_ingest::routes::{PUBLIC_OPERATIONS, ROLE_NAMES, route_roles};
use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_openapi_3_1_listing_every_v1_route_with_its_roles() {
    let (app, _scope) = spawn_app().await;
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{:?}",
        response.headers()["content-type"]
    );
    let doc: Value = response.json().await.unwrap();

    let version = doc["openapi"]
        .as_str()
        .expect("an `openapi` version string");
    assert!(version.starts_with("3.1."), "openapi version {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"], &scheme["bearerFormat"]),
        (&"http".into(), &"bearer".into(), &"JWT".into()),
        "{scheme}"
    );

    // Every route the router registers is in the served document, with the roles
    // route_roles() reads; and the document lists nothing else under /v1.
    let routes = route_roles();
    let paths = doc["paths"].as_object().expect("paths");
    for (method, path, roles) in &routes {
        let operation = &paths[path][method.as_str().to_ascii_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {path} is not served in the document"
        );
        if PUBLIC_OPERATIONS.contains(&(method.as_str(), path.as_str())) {
            // No token: one empty requirement, so clients send none.
            assert_eq!(
                operation["security"],
                serde_json::json!([{}]),
                "{method} {path}"
            );
            assert!(roles.is_empty(), "{method} {path}: {roles:?}");
        } else {
            let served: Vec<&str> = operation["security"][0]["bearer"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} has no bearer requirement"))
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            assert_eq!(&served, roles, "{method} {path}");
            assert!(
                !served.is_empty() && served.iter().all(|r| ROLE_NAMES.contains(r)),
                "{method} {path}: {served:?}"
            );
        }
        // Every declared error answer has the shared error shape (the 422 of a batch is
        // the batch answer with `error` and `message`).
        for (status, answer) in operation["responses"].as_object().unwrap() {
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &answer["content"]["application/json"]["schema"]["$ref"];
                assert!(
                    schema == "#/components/schemas/ErrorBody"
                        || (status == "422" && schema == "#/components/schemas/RejectedBatch"),
                    "{method} {path} {status}: {schema}"
                );
            }
        }
    }
    let served_v1: usize = paths
        .iter()
        .filter(|(p, _)| p.starts_with("/v1/"))
        .map(|(_, item)| item.as_object().unwrap().len())
        .sum();
    assert_eq!(served_v1, routes.len(), "operations under /v1");
    for path in [
        "/v1/sessions",
        "/v1/sessions/{id}",
        "/v1/sessions/{id}/stop",
        "/v1/sessions/{id}/locations",
    ] {
        assert!(paths.contains_key(path), "{path} is missing");
    }
    // Every schema an operation refers to is in the document.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "schema {name} is referred to but not defined"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_and_its_assets_are_served_without_any_external_url() {
    let (app, _scope) = spawn_app().await;
    // /docs redirects to /docs/, which reqwest follows.
    let response = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.url().path().ends_with("/docs/"),
        "{}",
        response.url()
    );
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");

    let assets: Vec<&str> = ["src=\"", "href=\""]
        .iter()
        .flat_map(|attr| html.split(attr).skip(1))
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect();
    assert!(
        assets.iter().any(|a| a.ends_with("swagger-ui-bundle.js")),
        "{assets:?}"
    );
    for asset in &assets {
        assert!(!asset.contains("://"), "{asset} is an external URL");
        let name = asset.trim_start_matches("./");
        let response = app
            .client
            .get(app.url(&format!("/docs/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "/docs/{name}");
        assert!(!response.bytes().await.unwrap().is_empty(), "/docs/{name}");
    }
    // The page's script points Swagger UI at the served document.
    let initializer = app
        .client
        .get(app.url("/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(initializer.contains("/openapi.json"), "{initializer}");
    app.stop().await;
}
