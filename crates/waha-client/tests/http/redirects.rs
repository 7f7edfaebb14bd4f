//! Redirects are never followed: a redirect to another host would carry `X-Api-Key` (reqwest
//! strips only `Authorization`, `Cookie` and `Proxy-Authorization`), and a 307/308 would re-send
//! a body holding proxy passwords, HMAC keys and header tokens.

use waha_client::{
    ApiKey, ClientConfig, NewSession, ProxyConfig, SessionConfig, WahaApi, WahaClient, WahaError,
    WebhookConfig,
};
use wiremock::{MockServer, ResponseTemplate};

use crate::support::*;

fn redirect(status: u16, to: &MockServer, route: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("location", format!("{}{route}", to.uri()))
        .set_body_string("<html>moved</html>")
}

fn config_with_secrets() -> SessionConfig {
    SessionConfig {
        proxy: Some(
            ProxyConfig::new("127.0.0.1:3128")
                .with_credentials("u", ProxyPassword::new("proxy-pw-2202").unwrap()),
        ),
        webhooks: vec![
            WebhookConfig::new("http://127.0.0.1:9/hook", ["message"])
                .signed_with(HmacKey::new("hmac-key-2203").unwrap()),
        ],
        ..SessionConfig::default()
    }
}

/// WAHA's server answers 307/308 to a second server: the second one receives nothing, and the
/// call fails with `Api { status }`, not retried.
#[tokio::test]
async fn redirects_are_not_followed_and_surface_as_api_errors() {
    let waha = server().await;
    let elsewhere = server().await;
    mount(
        &waha,
        "GET /api/sessions/s1",
        redirect(307, &elsewhere, "/api/sessions/s1"),
        1,
    )
    .await;
    mount(
        &waha,
        "POST /api/sessions",
        redirect(308, &elsewhere, "/api/sessions"),
        1,
    )
    .await;
    mount(
        &waha,
        "PUT /api/sessions/s1",
        redirect(301, &elsewhere, "/api/sessions/s1"),
        1,
    )
    .await;

    // Retries on: a redirect must not be taken for a transient failure.
    let api = client(&waha);
    let config = config_with_secrets();
    let errors = [
        (307, api.get_session("s1").await.unwrap_err()),
        (
            308,
            api.create_session(&NewSession::new("s1", config.clone()))
                .await
                .unwrap_err(),
        ),
        (301, api.update_session("s1", &config).await.unwrap_err()),
    ];
    for (expected, err) in errors {
        match &err {
            WahaError::Api { status, body } => {
                assert_eq!(*status, expected);
                assert!(body.contains("moved"), "{body}");
            }
            other => panic!("expected Api {{ status: {expected} }}, got {other:?}"),
        }
        assert!(!err.is_retryable());
    }
    let leaked = elsewhere.received_requests().await.unwrap();
    assert!(
        leaked.is_empty(),
        "the redirect target received {} request(s), e.g. {:?}",
        leaked.len(),
        leaked
            .first()
            .map(|r| (&r.method, r.url.path(), &r.headers))
    );
}

/// A caller-supplied `reqwest::Client` with the default (following) policy: the request does
/// reach the target (that cannot be prevented from here), but the answer is refused with a
/// typed error that tells the caller how to build the client.
#[tokio::test]
async fn an_answer_reached_through_a_followed_redirect_is_refused() {
    let waha = server().await;
    let elsewhere = server().await;
    mount(
        &waha,
        "GET /api/sessions/s1",
        redirect(302, &elsewhere, "/api/sessions/s1"),
        1,
    )
    .await;
    mount(
        &elsewhere,
        "GET /api/sessions/s1",
        json_response(200, session_json("s1", "WORKING")),
        1,
    )
    .await;
    let api = WahaClient::with_http_client(
        waha.uri().parse().unwrap(),
        ApiKey::new(API_KEY).unwrap(),
        ClientConfig {
            retry: fast_retries(),
            ..ClientConfig::default()
        },
        reqwest::Client::new(),
    )
    .unwrap();
    match api.get_session("s1").await {
        Err(WahaError::Invalid { messages }) => {
            let text = messages.join(" ");
            assert!(
                text.contains("redirect") && text.contains("Policy::none"),
                "{text}"
            );
            assert!(!text.contains(API_KEY), "{text}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// reqwest moves a base URL's credentials into a header and drops them from the URL it reports;
/// that is not a redirect.
#[tokio::test]
async fn a_base_url_with_credentials_is_not_taken_for_a_redirect() {
    let waha = server().await;
    mount(
        &waha,
        "GET /prefix/api/sessions/s1",
        json_response(200, session_json("s1", "WORKING")),
        1,
    )
    .await;
    let port = waha.address().port();
    let api = WahaClient::new(
        format!("http://user:pass@127.0.0.1:{port}/prefix/")
            .parse()
            .unwrap(),
        ApiKey::new(API_KEY).unwrap(),
    )
    .unwrap();
    assert_eq!(api.get_session("s1").await.unwrap().name, "s1");
}
