//! Webhook envelopes as WAHA sends them.

use super::*;

use crate::model::SessionStatus;

#[test]
fn observed_core_session_status_event() {
    let body = br#"{"event":"session.status","session":"default","metadata":{"user.id":"123","tenant":"t1"},"me":null,
 "payload":{"name":"default","status":"STARTING"},"engine":"NOWEB",
 "environment":{"version":"2024.10.8","engine":"NOWEB","tier":"CORE","browser":"/usr/bin/chromium"}}"#;
    let event = WebhookEvent::from_slice(body).unwrap();
    assert_eq!(event.session, "default");
    assert_eq!(event.metadata["tenant"], "t1");
    assert_eq!(event.me, None);
    assert_eq!(event.id, None);
    assert_eq!(event.engine.as_deref(), Some("NOWEB"));
    assert_eq!(event.environment.unwrap().version, "2024.10.8");
    assert_eq!(
        event.payload,
        EventPayload::SessionStatus(SessionStatusChange {
            name: "default".into(),
            status: SessionStatus::Starting
        })
    );
}

#[test]
fn newer_server_fields_and_typed_payloads() {
    let body = br#"{"id":"evt_01HZY","timestamp":1717000000123,"event":"message","session":"s1",
        "metadata":null,"me":{"id":"5511@c.us","pushName":"Me"},"engine":"WEBJS",
        "payload":{"id":"false_5522@c.us_AAA","timestamp":1717000000,"from":"5522@c.us","fromMe":false,
        "to":"5511@c.us","body":"hi","hasMedia":false,"ack":1,"ackName":"SERVER","_data":{"x":1}}}"#;
    let event = WebhookEvent::from_slice(body).unwrap();
    assert_eq!(event.id.as_deref(), Some("evt_01HZY"));
    assert_eq!(event.timestamp_ms, Some(1_717_000_000_123));
    assert!(event.metadata.is_empty());
    let EventPayload::Message(message) = event.payload else {
        panic!("message payload")
    };
    assert_eq!(message.body.as_deref(), Some("hi"));
    assert_eq!(message.ack, Some(MessageAck::Server));

    let ack = br#"{"event":"message.ack","session":"s1","payload":{"id":"m1","from":"a","to":"b",
        "participant":null,"fromMe":true,"ack":-1,"ackName":"ERROR"}}"#;
    let EventPayload::MessageAck(ack) = WebhookEvent::from_slice(ack).unwrap().payload else {
        panic!("ack payload")
    };
    assert_eq!(ack.ack, MessageAck::Error);

    let any = br#"{"event":"message.any","session":"s1","payload":{"id":"m2","from":"a","fromMe":true,"hasMedia":false}}"#;
    assert!(matches!(
        WebhookEvent::from_slice(any).unwrap().payload,
        EventPayload::MessageAny(_)
    ));
    let state =
        br#"{"event":"state.change","session":"s1","payload":{"state":"CONFLICT","extra":1}}"#;
    let EventPayload::StateChange(state) = WebhookEvent::from_slice(state).unwrap().payload else {
        panic!("state payload")
    };
    assert_eq!(state.state.as_deref(), Some("CONFLICT"));
    let engine = br#"{"event":"engine.event","session":"s1","payload":{"event":"connection.update","data":{"reason":"replaced"}}}"#;
    let EventPayload::EngineEvent(engine) = WebhookEvent::from_slice(engine).unwrap().payload
    else {
        panic!("engine payload")
    };
    assert_eq!(engine.data["reason"], "replaced");
}

#[test]
fn other_events_are_kept_raw() {
    let body = br#"{"event":"group.join","session":"s1","payload":{"anything":[1,2]}}"#;
    assert_eq!(
        WebhookEvent::from_slice(body).unwrap().payload,
        EventPayload::Other(serde_json::json!({"anything": [1, 2]}))
    );
}

#[test]
fn bad_payload_names_its_path() {
    let body = br#"{"event":"message.ack","session":"s1","payload":{"id":"m1","ack":"read"}}"#;
    match WebhookEvent::from_slice(body).unwrap_err() {
        WebhookError::Decode { path, .. } => assert_eq!(path, "payload.ack"),
        other => panic!("expected Decode, got {other:?}"),
    }
    match WebhookEvent::from_slice(br#"{"session":"s1"}"#).unwrap_err() {
        WebhookError::Decode { path, message, .. } => {
            // A missing field is named in the path, not only in the message.
            assert_eq!(path, "event");
            assert!(message.contains("missing field"), "{message}");
        }
        other => panic!("expected Decode, got {other:?}"),
    }
}

#[test]
fn signed_events_are_verified_before_parsing() {
    let key = crate::HmacKey::new("tenant-key").unwrap();
    let body =
        br#"{"event":"session.status","session":"s1","payload":{"name":"s1","status":"WORKING"}}"#;
    let mut headers = http::HeaderMap::new();
    headers.insert(SIGNATURE_HEADER, sign(&key, body).parse().unwrap());
    assert!(WebhookEvent::from_signed(&key, &headers, body).is_ok());
    let tampered =
        br#"{"event":"session.status","session":"s2","payload":{"name":"s1","status":"WORKING"}}"#;
    assert!(matches!(
        WebhookEvent::from_signed(&key, &headers, tampered),
        Err(WebhookError::SignatureMismatch)
    ));
}

#[test]
fn long_non_ascii_value_in_a_wrong_typed_field_is_a_decode_error_not_a_panic() {
    // serde quotes the offending string; the quote is dropped (it could hold a secret), and
    // what is left is bounded. Both parities, for the byte boundaries of `é`.
    for prefix in ["", "x"] {
        let long = format!("{prefix}{}", "é".repeat(400));
        let body = serde_json::json!({
            "event": "session.status",
            "session": "s1",
            "metadata": {"tenant": "t1"},
            "timestamp": long,
            "payload": {"name": "s1", "status": "WORKING"},
        });
        match WebhookEvent::from_slice(body.to_string().as_bytes()) {
            Err(WebhookError::Decode { path, message, .. }) => {
                assert_eq!(path, "timestamp");
                // serde's message would quote the string; it is never kept.
                assert!(!message.contains('é'), "{message}");
                assert!(message.len() < 340, "bounded: {} bytes", message.len());
            }
            other => panic!("expected Decode, got {other:?}"),
        }
        let body = serde_json::json!({
            "event": "message.ack",
            "session": "s1",
            "payload": {"id": "m1", "ack": long},
        });
        assert!(matches!(
            WebhookEvent::from_slice(body.to_string().as_bytes()),
            Err(WebhookError::Decode { .. })
        ));
    }
}

/// `docs/waha-contract.md`, "Messages and acks" (WAHA's OpenAPI): a message always carries
/// `from`, `fromMe` and `hasMedia` (and an ack `fromMe`). A missing one is a decode error
/// naming it, never an invented `""` or `false`: an outgoing message taken for an incoming one
/// would be answered by its own sender.
#[test]
fn message_fields_the_server_always_sends_are_required() {
    let complete = serde_json::json!({"id": "m1", "timestamp": 1_717_000_000, "from": "5522@c.us",
        "fromMe": false, "to": "5511@c.us", "body": "hi", "hasMedia": false, "ack": 1});
    for event in ["message", "message.any"] {
        for field in ["from", "fromMe", "hasMedia"] {
            let mut payload = complete.clone();
            payload.as_object_mut().unwrap().remove(field);
            let body = serde_json::json!({"event": event, "session": "s1", "payload": payload});
            match WebhookEvent::from_slice(body.to_string().as_bytes()) {
                Err(WebhookError::Decode { path, message, .. }) => {
                    assert_eq!(path, format!("payload.{field}"), "{event}");
                    assert!(message.contains("missing field"), "{message}");
                }
                other => panic!("{event} without {field}: expected Decode, got {other:?}"),
            }
        }
    }
    let ack = br#"{"event":"message.ack","session":"s1","payload":{"id":"m1","from":"a","to":"b","ack":3}}"#;
    match WebhookEvent::from_slice(ack) {
        Err(WebhookError::Decode { path, .. }) => assert_eq!(path, "payload.fromMe"),
        other => panic!("ack without fromMe: expected Decode, got {other:?}"),
    }

    // The fields that really are optional (`null` or absent on some engines) stay optional.
    let minimal = br#"{"event":"message","session":"s1","payload":{"id":"m1","from":"5522@c.us",
        "fromMe":true,"hasMedia":false,"to":null,"participant":null,"body":null}}"#;
    let EventPayload::Message(message) = WebhookEvent::from_slice(minimal).unwrap().payload else {
        panic!("message payload")
    };
    assert_eq!(message.from, "5522@c.us");
    assert!(message.from_me);
    assert_eq!(
        (message.timestamp, message.to, message.body),
        (None, None, None)
    );
}

#[test]
fn acks_only_move_forward_along_one_order() {
    use MessageAck::{Device, Error, Other, Pending, Played, Read, Server};
    let order = [
        Pending,
        Error,
        Server,
        Device,
        Read,
        Played,
        Other(5),
        Other(9),
    ];
    for (i, old) in order.iter().enumerate() {
        for (j, new) in order.iter().enumerate() {
            assert_eq!(
                MessageAck::supersedes(*old, *new),
                j > i,
                "{old:?} -> {new:?}"
            );
        }
    }
    // An unknown failure ranks as `Error`; a hand-built known number ranks as its variant.
    assert!(!MessageAck::supersedes(Error, Other(-7)));
    assert!(!MessageAck::supersedes(Other(-7), Error));
    assert!(MessageAck::supersedes(Other(-7), Server));
    assert!(!MessageAck::supersedes(Device, Other(2)));
    assert!(MessageAck::supersedes(Other(2), Read));
}
