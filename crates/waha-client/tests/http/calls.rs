//! What each call sends, and that the real server's odd answers decode.

use serde_json::json;
use waha_client::{
    ChatRef, NewSession, ProxyConfig, SeenReceipt, SessionConfig, SessionStatus, TextMessage,
    WahaApi, WebhookConfig,
};
use wiremock::ResponseTemplate;
use wiremock::matchers::{body_json, header, query_param};

use crate::support::*;

#[tokio::test]
async fn server_calls_send_the_api_key() {
    let server = server().await;
    on("GET /ping")
        .and(header("x-api-key", API_KEY))
        .respond_with(json_response(200, json!({"message":"pong"})))
        .expect(1)
        .mount(&server)
        .await;
    on("GET /api/server/version")
        .and(header("x-api-key", API_KEY))
        .respond_with(json_response(
            200,
            json!({"version":"2024.10.8","engine":"NOWEB","tier":"CORE","browser":"/usr/bin/chromium"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    mount(
        &server,
        "GET /api/server/status",
        json_response(
            200,
            json!({"startTimestamp":1723788847247u64,"uptime":1234,"worker":{"id":""}}),
        ),
        1,
    )
    .await;
    let api = client(&server);
    api.ping().await.unwrap();
    assert_eq!(api.version().await.unwrap().version, "2024.10.8");
    assert_eq!(api.server_status().await.unwrap().uptime_ms, 1234);
}

#[tokio::test]
async fn session_lifecycle_requests_and_odd_answers() {
    let server = server().await;
    let mut config = SessionConfig::default();
    config.metadata.insert("tenant".into(), "t1".into());
    config.proxy = Some(
        ProxyConfig::new("127.0.0.1:3128")
            .with_credentials("u", ProxyPassword::new("p@ss:/").unwrap()),
    );
    config.webhooks.push(
        WebhookConfig::new("http://127.0.0.1:9/hook", ["session.status"])
            .signed_with(HmacKey::new("hk").unwrap()),
    );
    let config_json = serde_json::to_value(&config).unwrap();

    on("GET /api/sessions")
        .and(query_param("all", "true"))
        .respond_with(json_response(
            200,
            json!([{"name":"default","status":"STOPPED","config":null,"me":null}]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    on("POST /api/sessions")
        .and(body_json(
            json!({"name":"s1","config":config_json,"start":false}),
        ))
        .respond_with(json_response(201, session_json("s1", "STOPPED")))
        .expect(1)
        .mount(&server)
        .await;
    on("PUT /api/sessions/s1")
        .and(body_json(json!({"config": config_json})))
        .respond_with(json_response(200, session_json("s1", "STOPPED")))
        .expect(1)
        .mount(&server)
        .await;
    mount(
        &server,
        "POST /api/sessions/s1/start",
        json_response(201, session_json("s1", "STARTING")),
        1,
    )
    .await;
    mount(
        &server,
        "GET /api/sessions/s1",
        json_response(
            200,
            json!({"name":"s1","status":"SCAN_QR_CODE","me":null,"config":null,"engine":{}}),
        ),
        1,
    )
    .await;
    mount(
        &server,
        "GET /api/sessions/s1/me",
        ResponseTemplate::new(200),
        1,
    )
    .await;
    mount(
        &server,
        "POST /api/sessions/s1/restart",
        json_response(201, session_json("s1", "STARTING")),
        1,
    )
    .await;
    mount(
        &server,
        "POST /api/sessions/s1/logout",
        ResponseTemplate::new(201),
        1,
    )
    .await;
    mount(
        &server,
        "POST /api/sessions/s1/stop",
        ResponseTemplate::new(201),
        1,
    )
    .await;
    mount(
        &server,
        "DELETE /api/sessions/s1",
        ResponseTemplate::new(200),
        2,
    )
    .await;

    let api = client(&server);
    let all = api.list_sessions(true).await.unwrap();
    assert_eq!(all[0].config, None);
    let created = api
        .create_session(&NewSession::new("s1", config.clone()))
        .await
        .unwrap();
    assert_eq!(created.unwrap().status, SessionStatus::Stopped);
    api.update_session("s1", &config).await.unwrap();
    assert_eq!(
        api.start_session("s1").await.unwrap().status,
        SessionStatus::Starting
    );
    let info = api.get_session("s1").await.unwrap();
    assert_eq!(info.status, SessionStatus::ScanQrCode);
    assert_eq!(info.me, None);
    assert_eq!(api.me("s1").await.unwrap(), None);
    api.restart_session("s1").await.unwrap();
    api.logout_session("s1").await.unwrap();
    assert_eq!(api.stop_session("s1").await.unwrap(), None);
    api.delete_session("s1").await.unwrap();
    api.delete_session("s1").await.unwrap();
}

#[tokio::test]
async fn names_are_percent_encoded_in_paths() {
    let server = server().await;
    mount(
        &server,
        "GET /api/sessions/a%20b%2F..%2Fx",
        json_response(200, session_json("a b/../x", "STOPPED")),
        1,
    )
    .await;
    let info = client(&server).get_session("a b/../x").await.unwrap();
    assert_eq!(info.name, "a b/../x");
}

#[tokio::test]
async fn qr_forms_and_pairing_code() {
    let server = server().await;
    let png = b"\x89PNG\r\n\x1a\nrest-of-image".to_vec();
    on("GET /api/s1/auth/qr")
        .and(header("accept", "image/png"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(png.clone(), "image/png"))
        .expect(1)
        .mount(&server)
        .await;
    on("GET /api/s1/auth/qr")
        .and(header("accept", "application/json"))
        .and(query_param("format", "raw"))
        .respond_with(json_response(200, json!({"value":"2@qr-text"})))
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    on("GET /api/s1/auth/qr")
        .and(header("accept", "application/json"))
        .respond_with(json_response(
            200,
            json!({"mimetype":"image/png","data":"iVBORw0KGgo="}),
        ))
        .expect(1)
        .with_priority(2)
        .mount(&server)
        .await;
    on("POST /api/s1/auth/request-code")
        .and(body_json(json!({"phoneNumber":"5511999999999"})))
        .respond_with(json_response(201, json!({"code":"ABCD-ABCD"})))
        .expect(1)
        .mount(&server)
        .await;
    let api = client(&server);
    assert_eq!(api.qr_png("s1").await.unwrap(), png);
    assert_eq!(api.qr_raw("s1").await.unwrap().value, "2@qr-text");
    let image = api.qr_base64("s1").await.unwrap();
    assert!(image.to_bytes().unwrap().starts_with(b"\x89PNG"));
    let code = api
        .request_pairing_code("s1", "5511999999999")
        .await
        .unwrap();
    assert_eq!(code.code, "ABCD-ABCD");
}

#[tokio::test]
async fn message_calls() {
    let server = server().await;
    on("POST /api/sendText")
        .and(body_json(
            json!({"session":"s1","chatId":"5511999999999@c.us","text":"olá"}),
        ))
        .respond_with(json_response(
            201,
            json!({"id":"true_5511999999999@c.us_3EB0","body":"olá","fromMe":true}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    on("POST /api/sendSeen")
        .and(body_json(
            json!({"session":"s1","chatId":"5511999999999@c.us"}),
        ))
        .respond_with(ResponseTemplate::new(201).set_body_raw("{}", "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    for route in ["POST /api/startTyping", "POST /api/stopTyping"] {
        on(route)
            .and(body_json(
                json!({"session":"s1","chatId":"5511999999999@c.us"}),
            ))
            .respond_with(ResponseTemplate::new(201))
            .expect(1)
            .mount(&server)
            .await;
    }
    let api = client(&server);
    let sent = api
        .send_text(&TextMessage::new("s1", "5511999999999@c.us", "olá"))
        .await
        .unwrap();
    assert_eq!(sent.id.as_deref(), Some("true_5511999999999@c.us_3EB0"));
    api.send_seen(&SeenReceipt::new("s1", "5511999999999@c.us"))
        .await
        .unwrap();
    let chat = ChatRef::new("s1", "5511999999999@c.us");
    api.start_typing(&chat).await.unwrap();
    api.stop_typing(&chat).await.unwrap();
}

#[tokio::test]
async fn base_url_path_prefix_is_kept() {
    let server = server().await;
    mount(
        &server,
        "GET /waha/ping",
        json_response(200, json!({"message":"pong"})),
        1,
    )
    .await;
    let api = waha_client::WahaClient::new(
        format!("{}/waha/", server.uri()).parse().unwrap(),
        waha_client::ApiKey::new(API_KEY).unwrap(),
    )
    .unwrap();
    api.ping().await.unwrap();
}

/// A server started with `WAHA_NO_API_KEY` takes no key: `WahaClient::new(url, None)` sends no
/// `X-Api-Key` header at all (an `ApiKey` is never empty, so "no key" is `None`).
#[tokio::test]
async fn a_client_without_a_key_sends_no_key_header() {
    let server = server().await;
    mount(
        &server,
        "GET /ping",
        json_response(200, json!({"message":"pong"})),
        1,
    )
    .await;
    let api = waha_client::WahaClient::new(server.uri().parse().unwrap(), None).unwrap();
    api.ping().await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0].headers.get("x-api-key").is_none(),
        "{:?}",
        requests[0].headers
    );
}
