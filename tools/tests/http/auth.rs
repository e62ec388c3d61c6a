//! Authentication and the browser: the bearer scheme, the JSON media type
//! of writes, browser sessions (login, logout, revocation, expiry,
//! cross-origin refusal), the security headers of the HTML answers, and
//! the routes that only a service token may read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use opledger::{Durability, LogOptions};
use opledger_tools::server::router;
use opledger_tools::server::session::{SessionStore, SESSION_LIFETIME};
use opledger_tools::tokens::{Grant, TokenRecord, SHARED_TOKENS_REFRESH};
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::support::{actor, start_body, write_routes, Api, Reply};

/// The address the login requests claim to be sent to.
const HOST: &str = "127.0.0.1:7878";

/// What a loaded machine may add to [`SHARED_TOKENS_REFRESH`] before a
/// revocation in the shared log's database is seen (a look-up's own time).
const REVOKE_SEEN_SLACK: Duration = Duration::from_secs(1);

/// An answer with its headers (the support `Reply` keeps none).
struct Raw {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Raw {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers.get(&name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}

async fn raw(app: &Router, request: Request<Body>) -> Raw {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Raw { status, headers, text: String::from_utf8_lossy(&bytes).into_owned() }
}

/// A POST to `uri` with a service bearer, a body and this `Content-Type`.
fn post_typed(api: &Api, uri: &str, content_type: Option<&str>, body: &str) -> Request<Body> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {}", api.service));
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

/// The sign-in form's POST, as a browser on this server's own page sends it.
fn login_request(token: &str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/admin/login")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, format!("http://{HOST}"))
        .header("sec-fetch-site", "same-origin")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={token}")))
        .unwrap()
}

fn page_request(uri: &str, cookie: &str) -> Request<Body> {
    Request::builder().uri(uri).header(header::COOKIE, cookie).body(Body::empty()).unwrap()
}

/// Signs in with `token`; returns the `name=value` part of the cookie.
async fn sign_in(app: &Router, token: &str) -> String {
    let answer = raw(app, login_request(token)).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.text);
    assert_eq!(answer.header(header::LOCATION), "/admin/operations");
    let cookie = answer.header(header::SET_COOKIE).to_owned();
    cookie.split(';').next().unwrap().to_owned()
}

fn actor_record(api: &Api, actor_id: &str) -> (String, TokenRecord) {
    api.state.tokens.create(Grant::Actor { actor_id: actor_id.into() }).unwrap()
}

/// Every write route with a valid body (on `run`, a queued run), marking
/// a notification read included.
fn writes(run: &str) -> Vec<(String, Value)> {
    let mut routes = write_routes(run);
    routes.push((format!("/v1/notifications/{run}/read?actor_id=u1"), json!({})));
    routes
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let api = Api::seeded().await;
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let request = Request::builder()
            .uri("/v1/runs")
            .header(header::AUTHORIZATION, format!("{scheme} {}", api.service))
            .body(Body::empty())
            .unwrap();
        api.send(request).await.expect(StatusCode::OK);
    }
    let mut start = post_typed(&api, "/v1/runs", Some("application/json"), "");
    *start.body_mut() = Body::from(start_body("report", "t1", actor("u1")).to_string());
    start.headers_mut().insert(header::AUTHORIZATION, format!("bearer {}", api.service).parse().unwrap());
    assert_eq!(api.send(start).await.json()["result"], "accepted");
    // Another scheme is still no bearer token.
    let basic = Request::builder()
        .uri("/v1/runs")
        .header(header::AUTHORIZATION, format!("bearerx {}", api.service))
        .body(Body::empty())
        .unwrap();
    api.send(basic).await.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_cookie_never_authorizes_the_json_api() {
    let api = Api::seeded().await;
    let app = router(api.state.clone());
    let session = sign_in(&app, &api.service).await;
    let authority = writes("x").remove(0).1.to_string();
    for cookie in [session, format!("opledger_token={}", api.service)] {
        let before = api.head();
        let forged = Request::builder()
            .method(Method::POST)
            .uri("/v1/authority")
            .header(header::COOKIE, &cookie)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(authority.clone()))
            .unwrap();
        api.send(forged).await.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
        let read = Request::builder().uri("/v1/runs").header(header::COOKIE, &cookie).body(Body::empty()).unwrap();
        api.send(read).await.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(api.head(), before, "{cookie}: nothing appended");
    }
}

#[tokio::test]
async fn every_write_needs_the_json_media_type() {
    let api = Api::seeded().await;
    let queued = api.start_accepted(&start_body("inventory_sync", "t1", actor("u1"))).await;
    let queued = queued["id"].as_str().unwrap();
    for (uri, body) in writes(queued) {
        let body = body.to_string();
        for content_type in
            [Some("text/plain"), Some("application/x-www-form-urlencoded"), Some("multipart/form-data"), None]
        {
            let before = api.head();
            let reply = api.send(post_typed(&api, &uri, content_type, &body)).await;
            reply.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
            assert_eq!(api.head(), before, "POST {uri} as {content_type:?} was refused but appended");
        }
    }
    // Parameters of the media type are fine.
    let (uri, body) = writes(queued).remove(0);
    let reply = api.send(post_typed(&api, &uri, Some("Application/JSON; charset=utf-8"), &body.to_string())).await;
    reply.expect(StatusCode::OK);
}

#[tokio::test]
async fn a_write_without_a_body_needs_no_media_type() {
    let api = Api::seeded().await;
    let queued = api.start_accepted(&start_body("inventory_sync", "t1", actor("u1"))).await;
    let queued = queued["id"].as_str().unwrap();
    // `curl -X POST` sends neither a body nor a Content-Type.
    let begun = api.send(post_typed(&api, &format!("/v1/runs/{queued}/begin"), None, "")).await;
    assert_eq!(begun.expect(StatusCode::OK)["decision"]["outcome"], "allowed");
    // An empty body declared as something else is still refused.
    let progress = format!("/v1/runs/{queued}/progress");
    let reply = api.send(post_typed(&api, &progress, Some("text/plain"), "")).await;
    reply.expect_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
}

#[tokio::test]
async fn every_json_body_is_an_object() {
    let api = Api::seeded().await;
    let queued = api.start_accepted(&start_body("inventory_sync", "t1", actor("u1"))).await;
    let queued = queued["id"].as_str().unwrap();
    let service = Some(api.service.as_str());
    for (uri, _) in writes(queued) {
        for junk in ["[]", " [ ] ", "[{}]", "\"text\"", "1", "null", "true"] {
            let body = api
                .refused(Method::POST, &uri, service, Some(junk.into()), StatusCode::BAD_REQUEST, "invalid_json")
                .await;
            assert!(body["error"]["message"].as_str().unwrap().contains("object"), "{uri} {junk}: {body}");
        }
    }
    // The run is still queued: the `[]` begin decided nothing.
    let run = api.get(&format!("/v1/runs/{queued}"), &api.service).await.expect(StatusCode::OK);
    assert_eq!(run["run"]["status"], "queued");
}

#[tokio::test]
async fn signing_in_opens_a_session_that_is_not_the_token() {
    let api = Api::seeded().await;
    let app = router(api.state.clone());
    let viewer = api.actor("viewer");
    let answer = raw(&app, login_request(&viewer)).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let cookie = answer.header(header::SET_COOKIE);
    assert!(cookie.starts_with("opledger_session="), "{cookie}");
    let hex = viewer.trim_start_matches("opl_");
    assert!(!cookie.contains(hex) && !cookie.contains(&hex[..16]), "the cookie holds no part of the token: {cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age="] {
        assert!(cookie.contains(attribute), "{attribute}: {cookie}");
    }
    let id = cookie.split(';').next().unwrap().trim_start_matches("opledger_session=");
    assert_eq!(id.len(), 64, "256 random bits in hex: {id}");
    let session = format!("opledger_session={id}");
    let list = api.send(page_request("/admin/operations", &session)).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text());
    assert!(list.text().contains("Operations"));
    // Two sign-ins are two sessions.
    assert_ne!(sign_in(&app, &viewer).await, session);
    // A wrong token opens nothing.
    let refused = raw(&app, login_request("opl_nonsense")).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.headers.get(header::SET_COOKIE).is_none());
    assert_eq!(api.state.sessions.len(), 2);
}

#[tokio::test]
async fn signing_out_ends_the_session() {
    let api = Api::seeded().await;
    let app = router(api.state.clone());
    let session = sign_in(&app, &api.actor("viewer")).await;
    assert_eq!(api.send(page_request("/admin/operations", &session)).await.status, StatusCode::OK);
    let logout = Request::builder()
        .method(Method::POST)
        .uri("/admin/logout")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, format!("http://{HOST}"))
        .header(header::COOKIE, &session)
        .body(Body::empty())
        .unwrap();
    let answer = raw(&app, logout).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(answer.header(header::LOCATION), "/admin/login");
    let cleared = answer.header(header::SET_COOKIE);
    assert!(cleared.starts_with("opledger_session=;") && cleared.contains("Max-Age=0"), "{cleared}");
    let after = api.send(page_request("/admin/operations", &session)).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{}", after.text());
    assert!(api.state.sessions.is_empty());
}

#[tokio::test]
async fn revoking_the_token_ends_its_sessions() {
    let api = Api::seeded().await;
    let app = router(api.state.clone());
    let (viewer, record) = actor_record(&api, "viewer");
    let (other, _) = actor_record(&api, "viewer");
    let session = sign_in(&app, &viewer).await;
    let kept = sign_in(&app, &other).await;
    assert_eq!(api.send(page_request("/admin/operations", &session)).await.status, StatusCode::OK);
    api.state.tokens.revoke(record.id).unwrap();
    let after = api.send(page_request("/admin/operations", &session)).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED, "{}", after.text());
    assert!(after.text().contains("sign in again"), "{}", after.text());
    assert_eq!(api.send(page_request("/admin/operations", &kept)).await.status, StatusCode::OK, "another token's");
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let api = Api::seeded().await;
    let start = Instant::now();
    let passed = Arc::new(AtomicU64::new(0));
    let clock = {
        let passed = Arc::clone(&passed);
        Arc::new(move || start + Duration::from_secs(passed.load(Ordering::SeqCst)))
    };
    let mut state = api.state.clone();
    state.sessions = Arc::new(SessionStore::with_clock(clock));
    let app = router(state);
    let session = sign_in(&app, &api.actor("viewer")).await;
    passed.store(SESSION_LIFETIME.as_secs() - 1, Ordering::SeqCst);
    assert_eq!(raw(&app, page_request("/admin/operations", &session)).await.status, StatusCode::OK);
    passed.store(SESSION_LIFETIME.as_secs(), Ordering::SeqCst);
    let expired = raw(&app, page_request("/admin/operations", &session)).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED, "{}", expired.text);
}

#[tokio::test]
async fn a_cross_origin_sign_in_is_refused() {
    let api = Api::seeded().await;
    let app = router(api.state.clone());
    let viewer = api.actor("viewer");
    let foreign: [&[(&str, &str)]; 7] = [
        &[("origin", "http://evil.example")],
        &[("origin", "http://127.0.0.1:9999")],
        &[("origin", "null")],
        &[("origin", "null"), ("sec-fetch-site", "cross-site")],
        &[("origin", "http://evil.example"), ("sec-fetch-site", "same-origin")],
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site")],
    ];
    for headers in foreign {
        let mut request = login_request(&viewer);
        request.headers_mut().remove(header::ORIGIN);
        request.headers_mut().remove("sec-fetch-site");
        for (name, value) in headers {
            request.headers_mut().insert(*name, value.parse().unwrap());
        }
        let answer = raw(&app, request).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{headers:?}: {}", answer.text);
        assert!(answer.header(header::CONTENT_TYPE).starts_with("text/html"), "a page: {headers:?}");
        assert!(answer.headers.get(header::SET_COOKIE).is_none(), "{headers:?}");
    }
    assert!(api.state.sessions.is_empty(), "no session was opened");
    // A client that is no browser sends neither header.
    let mut plain = login_request(&viewer);
    plain.headers_mut().remove(header::ORIGIN);
    plain.headers_mut().remove("sec-fetch-site");
    assert_eq!(raw(&app, plain).await.status, StatusCode::SEE_OTHER);
    // Chromium posts our own form with `Origin: null` (the page's
    // `Referrer-Policy: no-referrer`) and `Sec-Fetch-Site: same-origin`.
    let mut own_form = login_request(&viewer);
    own_form.headers_mut().insert(header::ORIGIN, "null".parse().unwrap());
    assert_eq!(raw(&app, own_form).await.status, StatusCode::SEE_OTHER);
    // Nor may another site sign the browser out.
    let session = sign_in(&app, &viewer).await;
    let logout = Request::builder()
        .method(Method::POST)
        .uri("/admin/logout")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, "http://evil.example")
        .header(header::COOKIE, &session)
        .body(Body::empty())
        .unwrap();
    assert_eq!(raw(&app, logout).await.status, StatusCode::FORBIDDEN);
    assert_eq!(raw(&app, page_request("/admin/operations", &session)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn every_html_answer_carries_the_security_headers() {
    let api = Api::seeded().await;
    let app = router(api.state.clone());
    let run = api.start_accepted(&start_body("inventory_sync", "t1", actor("u1"))).await;
    let run = run["id"].as_str().unwrap();
    let session = sign_in(&app, &api.actor("viewer")).await;
    let stranger = sign_in(&app, &api.actor("stranger")).await;
    let mut foreign_login = login_request(&api.service);
    foreign_login.headers_mut().insert(header::ORIGIN, "http://evil.example".parse().unwrap());
    let answers = [
        ("list", raw(&app, page_request("/admin/operations", &session)).await),
        ("detail", raw(&app, page_request(&format!("/admin/operations/{run}"), &session)).await),
        ("login form", raw(&app, page_request("/admin/login", "")).await),
        ("401 page", raw(&app, page_request("/admin/operations", "")).await),
        ("404 page", raw(&app, page_request(&format!("/admin/operations/{run}"), &stranger)).await),
        ("403 login page", raw(&app, foreign_login).await),
    ];
    for (what, answer) in &answers {
        assert!(answer.header(header::CONTENT_TYPE).starts_with("text/html"), "{what}");
        let policy = answer.header(header::CONTENT_SECURITY_POLICY);
        assert!(policy.contains("frame-ancestors 'none'"), "{what}: {policy}");
        assert!(policy.contains("default-src 'none'") && !policy.contains("unsafe-inline"), "{what}: {policy}");
        assert_eq!(answer.header(header::X_FRAME_OPTIONS), "DENY", "{what}");
        assert_eq!(answer.header(header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{what}");
        assert_eq!(answer.header(header::REFERRER_POLICY), "no-referrer", "{what}");
        // Nothing inline that the policy would have to allow.
        let text = answer.text.to_ascii_lowercase();
        assert!(!text.contains("<script") && !text.contains("<style") && !text.contains(" style="), "{what}");
        assert!(text.contains("href=\"/admin/style.css\""), "{what} links the stylesheet");
    }
    let css = raw(&app, page_request("/admin/style.css", "")).await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.header(header::CONTENT_TYPE).starts_with("text/css"));
    assert!(css.text.contains(".badge"), "{}", css.text);
}

#[tokio::test]
async fn metrics_are_for_service_tokens() {
    let api = Api::seeded().await;
    let reply: Reply = api.get("/metrics", &api.actor("u1")).await;
    let body = reply.expect_error(StatusCode::FORBIDDEN, "forbidden");
    assert!(body["error"]["message"].as_str().unwrap().contains("service token"), "{body}");
    let counters = api.get("/metrics", &api.service).await;
    assert_eq!(counters.status, StatusCode::OK);
    assert!(counters.text().contains("opledger_log_head_position"));
}

#[tokio::test]
async fn the_raw_log_and_the_audit_trail_tell_an_actor_it_needs_a_service_token() {
    let api = Api::seeded().await;
    let actor = api.actor("u1");
    for uri in ["/v1/events/stream", "/v1/events", "/v1/audit"] {
        let body = api.get(uri, &actor).await.expect_error(StatusCode::FORBIDDEN, "forbidden");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains("service token") && !message.contains("read-only"), "{uri}: {message}");
    }
}

/// `opledger token revoke` is another process writing the token store
/// while the server runs: the data directory's file, which the server's
/// next look-up re-reads; or the shared log's database, which a node
/// re-reads at most [`SHARED_TOKENS_REFRESH`] after its last read (the
/// bound `tokens.rs` documents). Either way the session ends in that time.
#[tokio::test]
async fn opledger_token_revoke_beside_a_running_server_ends_its_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions { durability: Durability::Flush, ..Default::default() };
    let log = crate::backend::TestLog::fresh();
    let state = log.open_state(dir.path(), options);
    let follower = tokio::spawn({
        let projector = state.projector().unwrap();
        async move {
            let _ = projector.follow().await;
        }
    });
    let app = router(state.clone());
    let (token, record) = state.tokens.create(Grant::Actor { actor_id: "viewer".into() }).unwrap();
    let session = sign_in(&app, &token).await;
    assert_eq!(raw(&app, page_request("/admin/operations", &session)).await.status, StatusCode::OK);
    let revoke = std::process::Command::new(env!("CARGO_BIN_EXE_opledger"))
        .args(["token", "revoke", "--data"])
        .arg(dir.path())
        .args(log.args())
        .arg(record.id.to_string())
        .output()
        .unwrap();
    assert!(revoke.status.success(), "{}", String::from_utf8_lossy(&revoke.stderr));
    let deadline = Instant::now() + SHARED_TOKENS_REFRESH + REVOKE_SEEN_SLACK;
    loop {
        let after = raw(&app, page_request("/admin/operations", &session)).await;
        if after.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(after.status, StatusCode::OK, "{}", after.text);
        assert!(log.url.is_some(), "a revoke in the data directory's file holds at the next look-up");
        assert!(Instant::now() < deadline, "the revocation was not seen within {SHARED_TOKENS_REFRESH:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(state.sessions.is_empty(), "the revoked token's session is gone");
    follower.abort();
    state.ledger().unwrap().log().close();
}
