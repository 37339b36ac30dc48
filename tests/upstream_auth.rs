//! Upstream authentication: the Bearer token flow with and without credentials, Basic auth, the
//! realm policy, CDN redirects without the upstream's Authorization, and secrets kept out of every
//! response.

mod common;

use common::fake::{AuthMode, Fake};
use common::{client, Up, Wharf};

fn creds_extra(dir: &std::path::Path, password: &str) -> String {
    let file = dir.join("pw");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    format!(
        "username = \"alice\"\npassword_file = \"{}\"",
        file.display()
    )
}

async fn wharf_with(up: &Fake, extra: &str) -> Wharf {
    Wharf::start(
        "5m",
        &[Up {
            name: "upstream.test",
            url: up.url(),
            default: true,
            extra,
        }],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_with_credentials_gets_one_token_per_scope() {
    let up = Fake::start().await;
    let img = up.add_image("org/app", "1", 2, 1000, 1);
    up.knobs().auth = AuthMode::Bearer {
        creds: Some(("alice".into(), "s3cret-pw".into())),
        realm: None,
    };
    let pw_dir = tempfile::tempdir().unwrap();
    let w = wharf_with(&up, &creds_extra(pw_dir.path(), "s3cret-pw")).await;
    let c = client();
    let mut bodies = Vec::new();
    for path in [
        "/v2/org/app/manifests/1".to_owned(),
        format!("/v2/org/app/blobs/{}", img.layers[0]),
        format!("/v2/org/app/blobs/{}", img.layers[1]),
    ] {
        let res = c.get(w.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let headers = format!("{:?}", res.headers());
        let body = res.bytes().await.unwrap();
        bodies.push((headers, body));
    }
    assert_eq!(up.tokens(), 1, "the token is cached for the scope");
    let token_auth = up.state.token_auth.lock().clone();
    assert_eq!(token_auth[0].as_deref(), Some("Basic YWxpY2U6czNjcmV0LXB3"));
    // One 401 for the first request; later requests send the cached token up front.
    let unauthenticated = up
        .seen()
        .iter()
        .filter(|s| s.authorization.is_none())
        .count();
    assert_eq!(unauthenticated, 1);
    for (headers, body) in &bodies {
        for secret in ["s3cret-pw", "fake-token", "YWxpY2U6czNjcmV0LXB3"] {
            assert!(!headers.contains(secret));
            assert!(!String::from_utf8_lossy(body).contains(secret));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_bearer_tokens_work() {
    let up = Fake::start().await;
    up.add_image("org/app", "1", 0, 0, 1);
    up.knobs().auth = AuthMode::Bearer {
        creds: None,
        realm: None,
    };
    let w = Wharf::with_upstream(&up.url()).await;
    let res = client()
        .get(w.url("/v2/org/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(up.tokens(), 1);
    assert_eq!(
        up.state.token_auth.lock()[0],
        None,
        "no credentials configured, none sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_reported_without_the_password() {
    let up = Fake::start().await;
    up.add_image("org/app", "1", 0, 0, 1);
    up.knobs().auth = AuthMode::Bearer {
        creds: Some(("alice".into(), "right".into())),
        realm: None,
    };
    let pw_dir = tempfile::tempdir().unwrap();
    let w = wharf_with(&up, &creds_extra(pw_dir.path(), "wrong-pw-123")).await;
    let res = client()
        .get(w.url("/v2/org/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    let body = String::from_utf8(res.bytes().await.unwrap().to_vec()).unwrap();
    assert!(body.contains("refused the token request"), "{body}");
    assert!(!body.contains("wrong-pw-123"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_upstream() {
    let up = Fake::start().await;
    up.add_image("org/app", "1", 0, 0, 1);
    up.knobs().auth = AuthMode::Basic {
        user: "alice".into(),
        pass: "pw-basic".into(),
    };
    let pw_dir = tempfile::tempdir().unwrap();
    let w = wharf_with(&up, &creds_extra(pw_dir.path(), "pw-basic")).await;
    let c = client();
    let res = c
        .get(w.url("/v2/org/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = c.get(w.url("/v2/org/app/tags/list")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // After the first challenge, credentials go up front.
    let unauthenticated = up
        .seen()
        .iter()
        .filter(|s| s.authorization.is_none())
        .count();
    assert_eq!(unauthenticated, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realm_on_another_domain_is_refused() {
    let up = Fake::start().await;
    up.add_image("org/app", "1", 0, 0, 1);
    let evil = Fake::start().await;
    // Same machine, but a different host name than the upstream's 127.0.0.1.
    up.knobs().auth = AuthMode::Bearer {
        creds: Some(("alice".into(), "pw".into())),
        realm: Some(format!("http://localhost:{}/token", evil.addr.port())),
    };
    let pw_dir = tempfile::tempdir().unwrap();
    let w = wharf_with(&up, &creds_extra(pw_dir.path(), "pw")).await;
    let res = client()
        .get(w.url("/v2/org/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    let body = String::from_utf8(res.bytes().await.unwrap().to_vec()).unwrap();
    assert!(
        body.contains("localhost") && body.contains("token_realms"),
        "{body}"
    );
    assert_eq!(evil.tokens(), 0, "nothing was sent to the foreign realm");

    // Listing the host in token_realms lets it through.
    let extra = format!(
        "{}\ntoken_realms = [\"localhost\"]",
        creds_extra(pw_dir.path(), "pw")
    );
    let w = wharf_with(&up, &extra).await;
    let res = client()
        .get(w.url("/v2/org/app/manifests/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    let body = String::from_utf8(res.bytes().await.unwrap().to_vec()).unwrap();
    assert!(body.contains("plain http"), "{body}");
    assert_eq!(
        evil.tokens(),
        0,
        "plain http to another host: credentials are still withheld"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_redirects_do_not_carry_the_upstream_authorization() {
    let up = Fake::start().await;
    let cdn = Fake::start().await;
    let data = common::fake::random_bytes(100_000, 2);
    let d = up.add_blob(data.clone());
    cdn.add_blob(data.clone());
    {
        let mut k = up.knobs();
        k.auth = AuthMode::Bearer {
            creds: None,
            realm: None,
        };
        k.redirect_blobs_to = Some(cdn.url());
    }
    // The test's "CDN" is on loopback, where redirects go only when the operator lists it.
    let w = wharf_with(&up, "redirect_hosts = [\"127.0.0.1\"]").await;
    let res = client()
        .get(w.url(&format!("/v2/org/app/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.unwrap() == data);
    let cdn_seen = cdn.seen();
    assert_eq!(cdn_seen.len(), 1);
    assert_eq!(
        cdn_seen[0].authorization, None,
        "the CDN never sees the upstream's token"
    );
    assert!(up
        .seen()
        .iter()
        .any(|s| s.authorization.as_deref() == Some("Bearer fake-token-0123456789")));
}
