//! `ensure_session` and `ensure_started` against the server's real answers.

use std::time::Duration;

use serde_json::json;
use waha_client::{
    ClientConfig, HmacKey, ProxyPassword, SessionConfig, SessionStatus, Timeouts, WahaApiExt,
    WahaError, WebhookConfig,
};
use wiremock::{MockServer, ResponseTemplate};

use crate::support::*;

fn desired() -> SessionConfig {
    let mut config = SessionConfig::default();
    config.metadata.insert("tenant".into(), "t1".into());
    config.metadata.insert("chip".into(), "c1".into());
    config.webhooks.push(
        WebhookConfig::new("http://127.0.0.1:9/hook", ["session.status", "message"])
            .signed_with(HmacKey::new("tenant-hmac").unwrap()),
    );
    config
}

/// `default` is found STOPPED with `config: null`, and must be updated exactly once to
/// `desired()`.
async fn mount_configless_default_and_its_update(server: &MockServer) {
    mount(
        server,
        "GET /api/sessions/default",
        json_response(200, session_json("default", "STOPPED")),
        1,
    )
    .await;
    let mut updated = session_json("default", "STOPPED");
    updated["config"] = serde_json::to_value(desired()).unwrap();
    on("PUT /api/sessions/default")
        .and(wiremock::matchers::body_json(
            json!({"config": serde_json::to_value(desired()).unwrap()}),
        ))
        .respond_with(json_response(200, updated))
        .expect(1)
        .mount(server)
        .await;
}

#[tokio::test]
async fn creates_then_is_a_no_op_on_the_second_call() {
    let server = server().await;
    let config = desired();
    let mut stored = session_json("s1", "STOPPED");
    stored["config"] = serde_json::to_value(&config).unwrap();
    // The server echoes the defaults it filled in; still the same config.
    stored["config"]["debug"] = json!(false);
    mount_first(
        &server,
        "POST /api/sessions",
        json_response(201, stored.clone()),
        1,
    )
    .await;
    mount(&server, "POST /api/sessions", already_exists("s1"), 1).await;
    mount(
        &server,
        "GET /api/sessions/s1",
        json_response(200, stored),
        1,
    )
    .await;
    mount(
        &server,
        "PUT /api/sessions/s1",
        ResponseTemplate::new(500),
        0,
    )
    .await;
    let api = client(&server);
    let first = api.ensure_session("s1", &config).await.unwrap();
    let second = api.ensure_session("s1", &config).await.unwrap();
    assert_eq!(first, second);
}

#[tokio::test]
async fn existing_session_with_another_config_is_updated() {
    let server = server().await;
    mount(&server, "POST /api/sessions", already_exists("default"), 1).await;
    // Old Core's built-in `default`: STOPPED, `config: null`.
    mount_configless_default_and_its_update(&server).await;
    let info = client(&server)
        .ensure_session("default", &desired())
        .await
        .unwrap();
    assert_eq!(info.config, Some(desired()));
}

#[tokio::test]
async fn empty_201_after_delete_is_checked() {
    let server = server().await;
    mount(&server, "POST /api/sessions", ResponseTemplate::new(201), 2).await;
    mount(
        &server,
        "GET /api/sessions/gone",
        not_found("Session not found"),
        1,
    )
    .await;
    let mut there = session_json("there", "STOPPED");
    there["config"] = serde_json::to_value(desired()).unwrap();
    mount(
        &server,
        "GET /api/sessions/there",
        json_response(200, there),
        1,
    )
    .await;
    // Found with the desired config: no PUT (the catch-all would answer one with 599).
    let api = client(&server);
    match api.ensure_session("gone", &desired()).await.unwrap_err() {
        WahaError::SessionNotCreated { name } => assert_eq!(name, "gone"),
        other => panic!("expected SessionNotCreated, got {other:?}"),
    }
    assert_eq!(
        api.ensure_session("there", &desired()).await.unwrap().name,
        "there"
    );
}

#[tokio::test]
async fn single_session_server_is_reported_not_hidden() {
    let server = server().await;
    mount(
        &server,
        "POST /api/sessions",
        unprocessable("WAHA Core support only 'default' session."),
        1,
    )
    .await;
    assert!(matches!(
        client(&server).ensure_session("chip_1", &desired()).await,
        Err(WahaError::SingleSessionServer { .. })
    ));
}

#[tokio::test]
async fn ensure_started_accepts_already_started() {
    let server = server().await;
    mount(
        &server,
        "POST /api/sessions/s1/start",
        already_started("s1"),
        1,
    )
    .await;
    mount(
        &server,
        "GET /api/sessions/s1",
        json_response(200, session_json("s1", "WORKING")),
        1,
    )
    .await;
    let info = client(&server).ensure_started("s1").await.unwrap();
    assert_eq!(info.status, SessionStatus::Working);
}

/// After an empty 201 the session that the GET finds is checked like an existing one: a
/// different stored config is replaced.
#[tokio::test]
async fn empty_201_then_a_session_with_another_config_is_updated() {
    let server = server().await;
    mount(&server, "POST /api/sessions", ResponseTemplate::new(201), 1).await;
    // Old Core: the session the server holds has no config at all.
    mount_configless_default_and_its_update(&server).await;
    let info = client(&server)
        .ensure_session("default", &desired())
        .await
        .unwrap();
    assert_eq!(info.config, Some(desired()));
}

/// The create's answer is lost to a time-out although the server applied it; the retried
/// create answers "already exists", and `ensure_session` still ends with the desired config
/// and no `PUT`.
#[tokio::test]
async fn a_timed_out_create_that_was_applied_still_converges() {
    let server = server().await;
    let mut stored = session_json("s1", "STOPPED");
    stored["config"] = serde_json::to_value(desired()).unwrap();
    mount_first(
        &server,
        "POST /api/sessions",
        json_response(201, stored.clone()).set_delay(Duration::from_secs(3)),
        1,
    )
    .await;
    mount(&server, "POST /api/sessions", already_exists("s1"), 1).await;
    mount(
        &server,
        "GET /api/sessions/s1",
        json_response(200, stored),
        1,
    )
    .await;
    let api = client_with(
        &server,
        ClientConfig {
            timeouts: Timeouts {
                session: Duration::from_millis(200),
                ..Timeouts::default()
            },
            retry: fast_retries(),
            ..ClientConfig::default()
        },
    );
    let info = api.ensure_session("s1", &desired()).await.unwrap();
    assert_eq!(info.name, "s1");
    assert!(info.config.unwrap().is_equivalent_to(&desired()));
}

#[test]
fn an_empty_hmac_key_cannot_be_configured_and_an_odd_stored_one_reads_as_none() {
    // WAHA would send a webhook with an empty key unsigned: the key type refuses it up front.
    assert!(HmacKey::new("").is_err());
    assert!(ProxyPassword::new("").is_err());
    // A config another client stored on the server with such values still decodes (a whole
    // session list must not become unreadable), with the refused secrets as absent.
    let config: waha_client::SessionConfig = serde_json::from_value(serde_json::json!({
        "webhooks": [{"url": "http://127.0.0.1:9/hook", "events": ["message"], "hmac": {"key": ""}}],
        "proxy": {"server": "127.0.0.1:3128", "username": "u", "password": "bad\u{1}"}
    }))
    .unwrap();
    assert_eq!(config.webhooks[0].hmac.as_ref().unwrap().key, None);
    assert_eq!(config.proxy.unwrap().password, None);
}

#[tokio::test]
async fn an_existing_session_is_adopted_without_a_create() {
    let server = server().await;
    let config = desired();
    let mut stored = session_json("s1", "WORKING");
    stored["config"] = serde_json::to_value(&config).unwrap();
    // No POST at all: the session is known to exist; no PUT: its config is already right.
    mount(&server, "POST /api/sessions", ResponseTemplate::new(500), 0).await;
    mount(
        &server,
        "PUT /api/sessions/s1",
        ResponseTemplate::new(500),
        0,
    )
    .await;
    mount(
        &server,
        "GET /api/sessions/s1",
        json_response(200, stored),
        1,
    )
    .await;
    let api = client(&server);
    let adopted = api.ensure_existing_session("s1", &config).await.unwrap();
    assert_eq!(adopted.status, SessionStatus::Working);
}

#[tokio::test]
async fn an_existing_session_deleted_meanwhile_is_created() {
    let server = server().await;
    let config = desired();
    let mut stored = session_json("s1", "STOPPED");
    stored["config"] = serde_json::to_value(&config).unwrap();
    mount(
        &server,
        "GET /api/sessions/s1",
        json_response(
            404,
            json!({"statusCode": 404, "message": "Session not found"}),
        ),
        1,
    )
    .await;
    mount(&server, "POST /api/sessions", json_response(201, stored), 1).await;
    let api = client(&server);
    let created = api.ensure_existing_session("s1", &config).await.unwrap();
    assert_eq!(created.status, SessionStatus::Stopped);
}
