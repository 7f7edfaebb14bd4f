//! Server endpoints and authentication.

use serde_json::json;
use sha2::Digest;
use waha_sim::Simulator;

use crate::support::{Api, KEY, call, call_json, start};

#[tokio::test]
async fn ping_is_open_and_pongs() {
    let sim = start().await;
    let api = Api::new(&sim);
    let (status, body) = call_json(api.http.get(format!("{}/ping", sim.url()))).await;
    assert_eq!((status, body), (200, json!({"message": "pong"})));
}

#[tokio::test]
async fn missing_or_wrong_key_is_401_in_nestjs_shape() {
    let sim = start().await;
    let api = Api::new(&sim);
    for request in [
        api.http.get(format!("{}/api/sessions", sim.url())),
        api.http
            .get(format!("{}/api/sessions", sim.url()))
            .header("X-Api-Key", "wrong"),
        api.http.get(format!("{}/health", sim.url())),
        api.http.post(format!("{}/_sim/crash", sim.url())),
    ] {
        let (status, body) = call_json(request).await;
        assert_eq!(status, 401);
        assert_eq!(body, json!({"statusCode": 401, "message": "Unauthorized"}));
    }
    assert!(
        sim.control().is_running(),
        "the unauthorised crash was refused"
    );
    let (_, exact) = call(api.http.get(format!("{}/api/sessions", sim.url()))).await;
    assert_eq!(
        exact, r#"{"statusCode":401,"message":"Unauthorized"}"#,
        "byte for byte"
    );
    // The query parameter works too.
    let (status, _) = call(
        api.http
            .get(format!("{}/api/sessions?x-api-key={KEY}", sim.url())),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn sha512_key_form_and_no_key() {
    let digest = hex::encode(sha2::Sha512::digest(b"hashed-key-123"));
    let sim = Simulator::builder()
        .api_key(format!("sha512:{digest}"))
        .start()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/api/sessions", sim.url());
    let ok = http.get(&url).header("X-Api-Key", "hashed-key-123");
    assert_eq!(call(ok).await.0, 200);
    assert_eq!(
        call(http.get(&url).header("X-Api-Key", digest)).await.0,
        401
    );

    let open = Simulator::builder().start().await.unwrap();
    assert_eq!(
        call(http.get(format!("{}/api/sessions", open.url())))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn health_version_status_and_openapi() {
    let sim = crate::support::fast()
        .worker_id("worker-7")
        .engine(waha_sim::Engine::Noweb)
        .start()
        .await
        .unwrap();
    let api = Api::new(&sim);
    let (status, health) = call_json(api.get("/health")).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");

    let (status, version) = call_json(api.get("/api/server/version")).await;
    assert_eq!(status, 200);
    let keys: Vec<_> = version.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys.len(), 4);
    assert_eq!(version["engine"], "NOWEB");
    assert_eq!(version["tier"], "PLUS");
    assert!(version["version"].is_string());

    let (status, server) = call_json(api.get("/api/server/status")).await;
    assert_eq!(status, 200);
    assert!(server["startTimestamp"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(server["uptime"].is_u64());
    assert_eq!(server["worker"], json!({"id": "worker-7"}));

    let (status, doc) = call_json(api.get("/-json")).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].is_string());
    let (status, _) = call(api.get("/api-json")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn old_core_tier_answers_422_on_health() {
    let sim = crate::support::fast().tier("CORE").start().await.unwrap();
    let (status, body) = call_json(Api::new(&sim).get("/health")).await;
    assert_eq!(status, 422);
    assert_eq!(body["statusCode"], 422);
}

#[tokio::test]
async fn unknown_routes_are_nestjs_404s() {
    let sim = start().await;
    let (status, body) = call_json(Api::new(&sim).get("/api/nothing/here/at/all")).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"statusCode": 404, "message": "Cannot GET /api/nothing/here/at/all", "error": "Not Found"})
    );
}
