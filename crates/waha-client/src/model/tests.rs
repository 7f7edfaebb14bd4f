//! The real server's odd answers (`docs/waha-contract.md`, "Sessions") all decode.

use super::*;
use crate::response::{decode, decode_optional};
use crate::secret::{HmacKey, ProxyPassword};

#[test]
fn old_core_default_session_with_nulls() {
    let info: SessionInfo = decode(
        "get_session",
        br#"{"name":"default","status":"STOPPED","config":null,"me":null,"engine":{}}"#,
    )
    .unwrap();
    assert_eq!(info.name, "default");
    assert_eq!(info.status, SessionStatus::Stopped);
    assert_eq!(info.config, None);
    assert_eq!(info.me, None);
    assert_eq!(info.engine, Some(EngineInfo::default()));
}

#[test]
fn running_session_with_engine_details_and_unknown_status() {
    let info: SessionInfo = decode(
        "get_session",
        br#"{"name":"s","status":"PASSKEY_SOMETHING","me":{"id":"5511999999999@c.us","pushName":"Ana"},
            "assignedWorker":"w1","engine":{"engine":"NOWEB","state":"CONNECTED","WWebVersion":"2.3"},
            "unknownField":true}"#,
    )
    .unwrap();
    assert_eq!(
        info.status,
        SessionStatus::Other("PASSKEY_SOMETHING".into())
    );
    assert_eq!(info.me.unwrap().push_name.as_deref(), Some("Ana"));
    let engine = info.engine.unwrap();
    assert_eq!(engine.state.as_deref(), Some("CONNECTED"));
    assert!(engine.other.contains_key("WWebVersion"));
}

#[test]
fn full_config_round_trips_with_secrets() {
    let body = r#"{"webhooks":[{"url":"http://h/w","events":["session.status","message"],
        "hmac":{"key":"hk"},"retries":{"policy":"exponential","delaySeconds":2,"attempts":15},
        "customHeaders":[{"name":"Authorization","value":"Bearer t"}]}],
        "metadata":{"tenant":"t1","chip":"c1"},
        "proxy":{"server":"p:3128","username":"u@x","password":"p:/@"},
        "debug":false,"noweb":{"store":{"enabled":true,"fullSync":false},"markOnline":true},
        "client":{"deviceName":"Fleet","browserName":"Chrome"}}"#;
    let config: SessionConfig = decode("get_session", body.as_bytes()).unwrap();
    let proxy = config.proxy.as_ref().unwrap();
    assert_eq!(proxy.password, Some(ProxyPassword::new("p:/@").unwrap()));
    assert_eq!(
        config.webhooks[0].hmac.as_ref().unwrap().key,
        Some(HmacKey::new("hk").unwrap())
    );
    assert_eq!(
        config.webhooks[0].retries.as_ref().unwrap().policy,
        Some(WebhookRetryPolicy::Exponential)
    );
    // Serialising sends the real values (WAHA needs them) and decodes back to the same config.
    let sent = serde_json::to_string(&config).unwrap();
    assert!(sent.contains("\"password\":\"p:/@\"") && sent.contains("\"key\":\"hk\""));
    let back: SessionConfig = serde_json::from_str(&sent).unwrap();
    assert_eq!(back, config);
}

#[test]
fn null_lists_and_maps_decode_as_empty_and_are_left_out() {
    let config: SessionConfig = decode(
        "get_session",
        br#"{"webhooks":null,"metadata":null,"proxy":null,"noweb":null}"#,
    )
    .unwrap();
    assert_eq!(config, SessionConfig::default());
    assert_eq!(serde_json::to_string(&config).unwrap(), "{}");
}

#[test]
fn equivalence_fills_in_server_defaults() {
    let mut desired = SessionConfig::default();
    desired
        .webhooks
        .push(WebhookConfig::new("http://h", ["message"]));
    let mut echoed = desired.clone();
    echoed.debug = Some(false);
    echoed.webhooks[0].hmac = Some(WebhookHmac { key: None });
    assert!(desired.is_equivalent_to(&echoed));
    echoed.metadata.insert("k".into(), "v".into());
    assert!(!desired.is_equivalent_to(&echoed));
}

#[test]
fn empty_bodies_are_none_where_allowed() {
    assert_eq!(
        decode_optional::<SessionInfo>("create_session", b"").unwrap(),
        None
    );
    assert_eq!(decode_optional::<Me>("me", b"  \n").unwrap(), None);
    assert!(matches!(
        decode::<SessionInfo>("start_session", b""),
        Err(crate::WahaError::Decode { .. })
    ));
}

#[test]
fn decode_errors_name_the_path() {
    let err = decode::<SessionInfo>(
        "get_session",
        br#"{"name":"s","status":"WORKING","config":{"proxy":{"server":5}}}"#,
    )
    .unwrap_err();
    match err {
        crate::WahaError::Decode {
            operation, path, ..
        } => {
            assert_eq!(operation, "get_session");
            assert_eq!(path, "config.proxy.server");
        }
        other => panic!("expected Decode, got {other:?}"),
    }
}

#[test]
fn decode_errors_never_quote_a_secret() {
    let err = decode::<SessionInfo>(
        "get_session",
        br#"{"name":"s","status":"WORKING","config":{"proxy":{"server":"p","password":987654321}}}"#,
    )
    .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(text.contains("config.proxy.password"), "{text}");
    assert!(!text.contains("987654321"), "{text}");
}

#[test]
fn server_answers() {
    let status: ServerStatus = decode(
        "server_status",
        br#"{"startTimestamp":1723788847247,"uptime":3600000.75,"worker":{"id":""}}"#,
    )
    .unwrap();
    assert_eq!(status.start_timestamp_ms, 1_723_788_847_247);
    assert_eq!(status.uptime_ms, 3_600_000);
    let version: ServerVersion = decode(
        "version",
        br#"{"version":"2024.10.8","engine":"NOWEB","tier":"CORE","browser":"/usr/bin/chromium"}"#,
    )
    .unwrap();
    assert_eq!(version.tier.as_deref(), Some("CORE"));
    let sessions: Vec<SessionInfo> = decode("list_sessions", b"[]").unwrap();
    assert!(sessions.is_empty());
}

#[test]
fn qr_forms() {
    let image: QrImage = decode(
        "qr_base64",
        br#"{"mimetype":"image/png","data":"iVBORw0KGgo="}"#,
    )
    .unwrap();
    assert_eq!(image.to_bytes().unwrap(), b"\x89PNG\r\n\x1a\n");
    let broken = QrImage {
        mimetype: "image/png".into(),
        data: "***".into(),
    };
    assert!(matches!(
        broken.to_bytes(),
        Err(crate::WahaError::Decode { .. })
    ));
    let raw: QrValue = decode("qr_raw", br#"{"value":"2@abc,def"}"#).unwrap();
    assert_eq!(raw.value, "2@abc,def");
}

#[test]
fn new_session_always_sends_start() {
    let body = serde_json::to_value(NewSession::new("s1", SessionConfig::default())).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"name": "s1", "config": {}, "start": false})
    );
}
