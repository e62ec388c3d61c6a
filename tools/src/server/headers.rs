//! Security headers on every answer of the server.
//!
//! They matter on the HTML pages: no script may run in them (nothing
//! inline, nothing loaded), no other site may frame them (clickjacking),
//! a browser may not guess a type other than the declared one, and a link
//! followed from a page does not tell the next site which run was open.
//! The JSON answers carry the same headers: cheap, and a JSON body opened
//! in a browser tab is then just as inert.

use axum::extract::Request;
use axum::http::header::{
    HeaderName, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// The pages load only their own stylesheet (`/admin/style.css`) and post
/// forms only to themselves; `default-src 'none'` leaves no source for
/// scripts at all, inline or not.
pub const PAGE_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Every header [`security_headers`] sets, with its value.
pub const SECURITY_HEADERS: [(HeaderName, &str); 4] = [
    (CONTENT_SECURITY_POLICY, PAGE_CONTENT_SECURITY_POLICY),
    (X_FRAME_OPTIONS, "DENY"),
    (X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (REFERRER_POLICY, "no-referrer"),
];

/// Adds [`SECURITY_HEADERS`] to the answer, error pages included.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
