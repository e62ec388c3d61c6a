//! Signing a browser in and out of the Monitoring pages.
//!
//! `POST /admin/login` takes a token once from the sign-in form and, when
//! it is live, opens a session (`session.rs`) and sets its cookie;
//! `POST /admin/logout` ends the session and clears the cookie. Both
//! refuse a request from another origin with 403: a foreign page must not
//! sign a browser in with the foreign page's token (login CSRF) or out.

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;

use crate::server::error::ApiError;
use crate::server::pages::{layout, PageError};
use crate::server::session::{self, clear_cookie, set_cookie};
use crate::server::state::AppState;

/// `GET /admin/login`: the sign-in form.
#[utoipa::path(get, path = "/admin/login", tag = "monitoring",
    responses((status = 200, description = "The form.", content_type = "text/html", body = String)))]
pub async fn login_form() -> Response {
    layout(
        "Sign in",
        html! {
            h1 { "Sign in" }
            form method="post" action="/admin/login" {
                label { "Token " input type="password" name="token" autocomplete="off"; }
                button type="submit" { "Sign in" }
            }
        },
    )
    .into_response()
}

/// The sign-in form's field.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Login {
    token: String,
}

/// `POST /admin/login`: a live token opens a browser session.
#[utoipa::path(post, path = "/admin/login", tag = "monitoring",
    request_body(content = Login, content_type = "application/x-www-form-urlencoded"),
    responses((status = 303, description = "Signed in: to `/admin/operations`, with the session cookie.",
        headers(("Location" = String), ("Set-Cookie" = String, description = "`opledger_session=<id>; HttpOnly; SameSite=Strict; Path=/admin; Max-Age=28800`")))))]
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<Login>, FormRejection>,
) -> Result<Response, PageError> {
    same_origin(&headers)?;
    let Form(login) = form.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    match state.tokens.authenticate_record(&login.token) {
        Ok(Some(record)) => {
            let id = state.sessions.open(record.id);
            Ok(([(header::SET_COOKIE, set_cookie(&id))], Redirect::to("/admin/operations")).into_response())
        }
        Ok(None) => Err(ApiError::unauthorized().into()),
        Err(error) => Err(ApiError::internal(error.to_string()).into()),
    }
}

/// `POST /admin/logout`: ends the session.
#[utoipa::path(post, path = "/admin/logout", tag = "monitoring",
    responses((status = 303, description = "Signed out: to `/admin/login`, the cookie cleared.",
        headers(("Location" = String), ("Set-Cookie" = String)))),
    security((), ("session" = [])))]
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, PageError> {
    same_origin(&headers)?;
    if let Some(id) = session::session_id(&headers) {
        state.sessions.close(id);
    }
    Ok(([(header::SET_COOKIE, clear_cookie())], Redirect::to("/admin/login")).into_response())
}

/// Refuses a request a browser sent from another origin: `Sec-Fetch-Site`
/// other than `same-origin` (or `none`, the user's own navigation), or an
/// `Origin` whose host and port differ from the request's `Host`.
///
/// A browser sends `Origin: null` on our own form's POST, because the page
/// it comes from has `Referrer-Policy: no-referrer` (`headers.rs`); a
/// sandboxed frame on another site can send `null` as well, so `null`
/// passes only with `Sec-Fetch-Site: same-origin` (a header no page can
/// set). A client that sends neither header (curl, a script) is not a
/// browser carrying someone else's page, and passes.
fn same_origin(headers: &HeaderMap) -> Result<(), PageError> {
    let text = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let site = text("sec-fetch-site");
    let site_ok = site.is_none_or(|site| site == "same-origin" || site == "none");
    let origin_ok = match (text(header::ORIGIN.as_str()), text(header::HOST.as_str())) {
        (None, _) => true,
        (Some("null"), _) => site == Some("same-origin"),
        (Some(origin), Some(host)) => {
            let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
            authority.is_some_and(|authority| authority.eq_ignore_ascii_case(host))
        }
        (Some(_), None) => false,
    };
    if site_ok && origin_ok {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "cross_origin",
        "sign-in and sign-out are taken only from this server's own pages, not from another site",
    )
    .into())
}
