//! One test per session call of `docs/waha-contract.md`, "Sessions" ("Calls and their
//! answers"): status code and body shape.

use serde_json::json;
use waha_sim::SessionStatus;

use crate::support::{Api, WAIT, call, call_json, start};

#[tokio::test]
async fn list_leaves_out_stopped_sessions_unless_all() {
    let sim = start().await;
    let api = Api::new(&sim);
    call(api.post("/api/sessions", json!({"name": "a-stopped"}))).await;
    call(api.post("/api/sessions", json!({"name": "b-running", "start": true}))).await;

    let (status, list) = call_json(api.get("/api/sessions")).await;
    assert_eq!(status, 200);
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("b-running")]);

    let (_, all) = call_json(api.get("/api/sessions?all=true")).await;
    assert_eq!(all.as_array().unwrap().len(), 2);
    assert_eq!(all[0]["name"], "a-stopped");
    assert_eq!(all[0]["status"], "STOPPED");
    assert_eq!(all[0]["config"], json!(null));
    assert_eq!(all[0]["me"], json!(null));

    let (status, body) = call_json(api.get("/api/sessions?all=maybe")).await;
    assert_eq!(status, 400);
    assert_eq!(body["message"], json!(["all must be a boolean value"]));
}

/// `all` goes through WAHA's `BooleanString` transform before `@IsBoolean()`: `1`/`True` and
/// `0`/`False` are booleans too; anything else, empty or repeated is a 400 message list.
#[tokio::test]
async fn list_all_takes_waha_boolean_spellings_and_refuses_the_rest() {
    let sim = start().await;
    let api = Api::new(&sim);
    call(api.post("/api/sessions", json!({"name": "a-stopped"}))).await;
    call(api.post("/api/sessions", json!({"name": "b-running", "start": true}))).await;

    for (query, expected) in [
        ("all=1", 2),
        ("all=True", 2),
        ("all=true", 2),
        ("all=0", 1),
        ("all=False", 1),
        ("all=false", 1),
        ("other=x", 1),
    ] {
        let (status, list) = call_json(api.get(&format!("/api/sessions?{query}"))).await;
        assert_eq!(status, 200, "{query}: {list}");
        assert_eq!(list.as_array().unwrap().len(), expected, "{query}: {list}");
    }
    for query in [
        "all=TRUE",
        "all=yes",
        "all=",
        "all",
        "all=true&all=true",
        "all=2",
    ] {
        let (status, body) = call_json(api.get(&format!("/api/sessions?{query}"))).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(
            body,
            json!({"statusCode": 400, "message": ["all must be a boolean value"], "error": "Bad Request"}),
            "{query}"
        );
    }
}

#[tokio::test]
async fn get_has_engine_and_404s() {
    let sim = start().await;
    let api = Api::new(&sim);
    call(api.post("/api/sessions", json!({"name": "s1"}))).await;
    let (status, body) = call_json(api.get("/api/sessions/s1")).await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "s1");
    assert_eq!(body["status"], "STOPPED");
    assert_eq!(body["engine"], json!({}));

    call(api.post("/api/sessions/s1/start", json!({}))).await;
    let (_, body) = call_json(api.get("/api/sessions/s1")).await;
    assert_eq!(body["engine"]["engine"], "WEBJS");

    let (status, body) = call_json(api.get("/api/sessions/nope")).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"statusCode": 404, "message": "Session not found", "error": "Not Found"})
    );
}

#[tokio::test]
async fn create_is_201_stopped_by_default_and_echoes_config() {
    let sim = start().await;
    let api = Api::new(&sim);
    let config = json!({
        "metadata": {"tenant": "t1", "chip": "c1"},
        "proxy": {"server": "10.0.0.1:3128", "username": "u@x", "password": "p:w/d"},
        "webhooks": [{"url": "http://127.0.0.1:9/hook", "events": ["session.status"],
                      "hmac": {"key": "k"}, "surprise": true}],
        "unknownTopLevel": {"x": 1}
    });
    let (status, body) =
        call_json(api.post("/api/sessions", json!({"name": "c1", "config": config}))).await;
    assert_eq!(status, 201);
    assert_eq!(body["name"], "c1");
    assert_eq!(body["status"], "STOPPED");
    assert_eq!(
        body["config"]["metadata"],
        json!({"tenant": "t1", "chip": "c1"})
    );
    assert_eq!(
        body["config"]["proxy"]["password"], "p:w/d",
        "secrets come back in clear"
    );
    assert_eq!(body["config"]["webhooks"][0]["hmac"]["key"], "k");
    assert!(
        body["config"].get("unknownTopLevel").is_none(),
        "unknown fields dropped"
    );
    assert!(body["config"]["webhooks"][0].get("surprise").is_none());

    let (status, body) =
        call_json(api.post("/api/sessions", json!({"name": "c2", "start": true}))).await;
    assert_eq!(status, 201);
    assert_eq!(body["status"], "STARTING");
}

#[tokio::test]
async fn create_without_name_generates_one() {
    let sim = start().await;
    let (status, body) = call_json(Api::new(&sim).post("/api/sessions", json!({}))).await;
    assert_eq!(status, 201);
    let name = body["name"].as_str().unwrap();
    assert!(name.starts_with("session_") && name.len() <= 54, "{name}");
}

#[tokio::test]
async fn create_twice_is_422_already_exists() {
    let sim = start().await;
    let api = Api::new(&sim);
    call(api.post("/api/sessions", json!({"name": "dup"}))).await;
    let (status, body) = call_json(api.post("/api/sessions", json!({"name": "dup"}))).await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!({"statusCode": 422,
               "message": "Session 'dup' already exists. Use PUT to update it.",
               "error": "Unprocessable Entity"})
    );
}

#[tokio::test]
async fn create_validation_is_a_400_message_list() {
    let sim = start().await;
    let api = Api::new(&sim);
    let (status, body) =
        call_json(api.post("/api/sessions", json!({"name": "x".repeat(55)}))).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"statusCode": 400,
               "message": ["name must be shorter than or equal to 54 characters"],
               "error": "Bad Request"})
    );
    let (status, _) = call(api.post("/api/sessions", json!({"name": "x".repeat(54)}))).await;
    assert_eq!(status, 201);

    let bad = json!({"name": "v", "config": {
        "metadata": {"n": 5},
        "proxy": {"username": "u"},
        "webhooks": [{"url": "not a url", "events": ["*"]}]
    }});
    let (status, body) = call_json(api.post("/api/sessions", bad)).await;
    assert_eq!(status, 400);
    let messages = body["message"].as_array().unwrap();
    assert_eq!(messages.len(), 4, "{body}");
    // The real server's wording for a non-string metadata value.
    assert!(
        messages.contains(&json!(
            "config.metadata accepts string key-value pairs only"
        )),
        "{body}"
    );
    assert_eq!(
        api_get_status(&api, "v").await,
        404,
        "nothing stored on a 400"
    );

    // Names are not checked for characters; a path-encoded name decodes.
    let (status, _) = call(api.post("/api/sessions", json!({"name": "../x"}))).await;
    assert_eq!(status, 201);
    let (status, body) = call_json(api.get("/api/sessions/..%2Fx")).await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "../x");
}

async fn api_get_status(api: &Api, name: &str) -> u16 {
    call(api.get(&format!("/api/sessions/{name}"))).await.0
}

#[tokio::test]
async fn malformed_json_is_400_with_the_parser_message() {
    let sim = start().await;
    let api = Api::new(&sim);
    let request = api
        .http
        .post(format!("{}/api/sessions", sim.url()))
        .header("X-Api-Key", crate::support::KEY)
        .header("Content-Type", "application/json")
        .body("{\"name\": ");
    let (status, body) = call_json(request).await;
    assert_eq!(status, 400);
    assert!(body["message"].is_string());
    assert_eq!(body["error"], "Bad Request");
}

#[tokio::test]
async fn put_replaces_the_config_and_restarts_a_running_session() {
    let sim = start().await;
    let api = Api::new(&sim);
    call(api.post(
        "/api/sessions",
        json!({"name": "p", "config": {"metadata": {"a": "1"}, "debug": true}}),
    ))
    .await;
    let (status, body) = call_json(api.put(
        "/api/sessions/p",
        json!({"config": {"metadata": {"b": "2"}}}),
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["config"],
        json!({"metadata": {"b": "2"}}),
        "whole config replaced"
    );
    assert_eq!(body["status"], "STOPPED");

    call(api.post("/api/sessions/p/start", json!({}))).await;
    sim.control()
        .wait_for_status("p", SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
    let (status, body) = call_json(api.put("/api/sessions/p", json!({"config": null}))).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["status"], "STARTING",
        "running session stopped and started again"
    );

    let (status, body) = call_json(api.put("/api/sessions/none", json!({}))).await;
    assert_eq!((status, body["statusCode"].clone()), (404, json!(404)));
}

#[tokio::test]
async fn delete_is_200_with_an_empty_body_and_idempotent() {
    let sim = start().await;
    let api = Api::new(&sim);
    call(api.post("/api/sessions", json!({"name": "d", "start": true}))).await;
    for _ in 0..2 {
        let (status, body) = call(api.delete("/api/sessions/d")).await;
        assert_eq!((status, body.as_str()), (200, ""));
    }
    assert_eq!(api_get_status(&api, "d").await, 404);
}

#[tokio::test]
async fn start_is_201_starting_then_422_already_started() {
    let sim = start().await;
    let api = Api::new(&sim);
    call(api.post("/api/sessions", json!({"name": "st"}))).await;
    let (status, body) = call_json(api.post("/api/sessions/st/start", json!({}))).await;
    assert_eq!((status, body["status"].clone()), (201, json!("STARTING")));
    let (status, body) = call_json(api.post("/api/sessions/st/start", json!({}))).await;
    assert_eq!(status, 422);
    assert_eq!(body["message"], "Session 'st' is already started.");
    let (status, _) = call(api.post("/api/sessions/ghost/start", json!({}))).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn stop_is_201_stopped_idempotent_and_empty_for_a_deleted_session() {
    let sim = start().await;
    let api = Api::new(&sim);
    call(api.post("/api/sessions", json!({"name": "sp", "start": true}))).await;
    for _ in 0..2 {
        let (status, body) = call_json(api.post("/api/sessions/sp/stop", json!({}))).await;
        assert_eq!((status, body["status"].clone()), (201, json!("STOPPED")));
    }
    call(api.delete("/api/sessions/sp")).await;
    let (status, body) = call(api.post("/api/sessions/sp/stop", json!({}))).await;
    assert_eq!((status, body.as_str()), (201, ""));
}

#[tokio::test]
async fn restart_is_201_and_404_for_unknown() {
    let sim = start().await;
    let api = Api::new(&sim);
    call(api.post("/api/sessions", json!({"name": "r", "start": true}))).await;
    let (status, body) = call_json(api.post("/api/sessions/r/restart", json!({}))).await;
    assert_eq!((status, body["status"].clone()), (201, json!("STARTING")));
    let (status, _) = call(api.post("/api/sessions/zzz/restart", json!({}))).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn logout_removes_auth_and_a_running_session_starts_again() {
    let sim = start().await;
    let api = Api::new(&sim);
    let control = sim.control();
    call(api.post("/api/sessions", json!({"name": "lo", "start": true}))).await;
    control
        .wait_for_status("lo", SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
    control.scan("lo").unwrap();
    let (status, body) = call_json(api.post("/api/sessions/lo/logout", json!({}))).await;
    assert_eq!(status, 201);
    assert_eq!(body["me"], json!(null));
    assert_eq!(body["status"], "STARTING");
    // Without auth it needs a QR again.
    control
        .wait_for_status("lo", SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
    let (status, _) = call(api.post("/api/sessions/nobody/logout", json!({}))).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn me_is_the_account_empty_when_not_logged_in_404_when_not_running() {
    let sim = start().await;
    let api = Api::new(&sim);
    let control = sim.control();
    call(api.post("/api/sessions", json!({"name": "m"}))).await;
    let (status, _) = call(api.get("/api/sessions/m/me")).await;
    assert_eq!(status, 404);

    call(api.post("/api/sessions/m/start", json!({}))).await;
    let (status, body) = call(api.get("/api/sessions/m/me")).await;
    assert_eq!((status, body.as_str()), (200, ""));

    control
        .wait_for_status("m", SessionStatus::ScanQrCode, WAIT)
        .await
        .unwrap();
    control
        .scan_as("m", waha_sim::Me::phone("5511999990001", "Ana"))
        .unwrap();
    let (status, body) = call_json(api.get("/api/sessions/m/me")).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"id": "5511999990001@c.us", "pushName": "Ana"}));
}

#[tokio::test]
async fn non_string_metadata_values_are_refused_in_the_servers_words() {
    let sim = start().await;
    let api = Api::new(&sim);
    let metadata = json!({"n": 5, "flag": true, "nested": {"a": "b"}, "ok": "fine"});
    let (status, body) = call_json(api.post(
        "/api/sessions",
        json!({"name": "meta", "config": {"metadata": metadata}}),
    ))
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["message"],
        json!(["config.metadata accepts string key-value pairs only"]),
        "one message, however many values are wrong"
    );
    call(api.post("/api/sessions", json!({"name": "meta"}))).await;
    let (status, body) = call_json(api.put(
        "/api/sessions/meta",
        json!({"config": {"metadata": {"n": 1}}}),
    ))
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["message"],
        json!(["config.metadata accepts string key-value pairs only"])
    );
}
