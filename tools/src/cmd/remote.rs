//! `--url URL --token TOKEN`: the read commands against a running server,
//! through its JSON API (API.md). A small HTTP/1.1 client on a std
//! `TcpStream`: one request per connection (`Connection: close`), plain
//! HTTP only (the server listens on loopback), every answer bounded.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::de::DeserializeOwned;

/// Largest answer accepted (an audit page of 1000 entries is far smaller).
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server may stay silent (a read waits for the projections).
const IO_TIMEOUT: Duration = Duration::from_secs(120);

/// A running server and the token to ask it with.
#[derive(Clone)]
pub struct Remote {
    host: String,
    port: u16,
    base_path: String,
    token: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url()).finish_non_exhaustive()
    }
}

/// A 4xx or 5xx answer, with the API's error body when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the server answered {} ({}): {}", self.status, self.code, self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// Whether `error` is the server's answer with this status.
pub fn is_status(error: &anyhow::Error, status: u16) -> bool {
    error.downcast_ref::<ApiFailure>().is_some_and(|failure| failure.status == status)
}

impl Remote {
    /// `url` is `http://HOST[:PORT][/BASE]`.
    pub fn new(url: &str, token: &str) -> anyhow::Result<Remote> {
        let (host, port, base_path) = parse_url(url)?;
        if token.trim().is_empty() || token.bytes().any(|b| b.is_ascii_control()) {
            bail!("--token must be a non-empty token without control characters");
        }
        Ok(Remote { host, port, base_path, token: token.trim().to_owned() })
    }

    pub fn url(&self) -> String {
        format!("http://{}{}", self.authority(), self.base_path)
    }

    fn authority(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }

    /// `GET path?query`, decoded from JSON. A 4xx/5xx answer is an [`ApiFailure`].
    pub fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<T> {
        let mut target = format!("{}{path}", self.base_path);
        let query = encode_query(query);
        if !query.is_empty() {
            target = format!("{target}?{query}");
        }
        let response =
            self.exchange("GET", &target, None).with_context(|| format!("asking {} for {path}", self.url()))?;
        decode(&response, &self.url(), path)
    }

    /// `POST path` with a JSON body, decoded from JSON. A 4xx/5xx answer is
    /// an [`ApiFailure`] (check it with [`is_status`]).
    pub fn post<T: DeserializeOwned>(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<T> {
        let target = format!("{}{path}", self.base_path);
        let body = serde_json::to_vec(body)?;
        let response =
            self.exchange("POST", &target, Some(&body)).with_context(|| format!("posting to {} {path}", self.url()))?;
        decode(&response, &self.url(), path)
    }

    fn exchange(&self, method: &str, target: &str, body: Option<&[u8]>) -> anyhow::Result<Response> {
        let addresses: Vec<_> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        let mut last_error = None;
        let mut stream = None;
        for address in addresses {
            match TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        let mut stream = match (stream, last_error) {
            (Some(stream), _) => stream,
            (None, Some(error)) => return Err(anyhow!(error).context("connecting")),
            (None, None) => bail!("{} resolves to no address", self.host),
        };
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let body = body.unwrap_or_default();
        let request = format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: application/json\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: opledger/{}\r\n\
             Connection: close\r\n\r\n",
            self.authority(),
            self.token,
            body.len(),
            env!("CARGO_PKG_VERSION")
        );
        stream.write_all(request.as_bytes())?;
        stream.write_all(body)?;
        stream.flush()?;
        let mut raw = Vec::new();
        let limit = RESPONSE_BYTES_MAX as u64 + 64 * 1024;
        (&mut stream).take(limit + 1).read_to_end(&mut raw)?;
        if raw.len() as u64 > limit {
            bail!("the answer is larger than {RESPONSE_BYTES_MAX} bytes");
        }
        parse_response(&raw)
    }
}

fn decode<T: DeserializeOwned>(response: &Response, url: &str, path: &str) -> anyhow::Result<T> {
    if !(200..300).contains(&response.status) {
        return Err(failure(response).into());
    }
    serde_json::from_slice(&response.body)
        .with_context(|| format!("the answer of {url} to {path} is not the JSON expected"))
}

fn failure(response: &Response) -> ApiFailure {
    let body: Option<serde_json::Value> = serde_json::from_slice(&response.body).ok();
    let error = body.as_ref().and_then(|body| body.get("error"));
    let text = |name: &str| error.and_then(|e| e.get(name)).and_then(|v| v.as_str()).map(str::to_owned);
    ApiFailure {
        status: response.status,
        code: text("code").unwrap_or_else(|| "http_error".to_owned()),
        message: text("message")
            .unwrap_or_else(|| String::from_utf8_lossy(&response.body).chars().take(200).collect::<String>()),
    }
}

/// `http://HOST[:PORT][/BASE]` → host, port (80 when not given), base path
/// without a trailing slash.
pub fn parse_url(url: &str) -> anyhow::Result<(String, u16, String)> {
    let url = url.trim();
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("--url takes http://HOST[:PORT] (plain HTTP, as `opledger serve` listens), got {url:?}");
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if path.contains(['?', '#']) {
        bail!("--url takes no query or fragment, got {url:?}");
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or_else(|| anyhow!("unclosed [ in --url {url:?}"))?;
        match after {
            "" => (host, None),
            after => (host, Some(after.strip_prefix(':').ok_or_else(|| anyhow!("bad port in --url {url:?}"))?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains('@') {
        bail!("--url needs a host (and no user info), got {url:?}");
    }
    let port = match port {
        None => 80,
        Some(port) => port.parse().map_err(|_| anyhow!("bad port in --url {url:?}"))?,
    };
    Ok((host.to_owned(), port, path.trim_end_matches('/').to_owned()))
}

/// `a=1&b=x%20y`, leaving out nothing: callers pass only the set parameters.
pub fn encode_query(pairs: &[(&str, String)]) -> String {
    let encoded: Vec<String> =
        pairs.iter().map(|(name, value)| format!("{}={}", escape(name), escape(value))).collect();
    encoded.join("&")
}

/// Percent-encodes everything but the unreserved characters of RFC 3986.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(byte)),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Status and body of a whole HTTP/1.1 answer (read up to the close).
pub fn parse_response(raw: &[u8]) -> anyhow::Result<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| anyhow!("the answer has no header end"))?;
    let head = std::str::from_utf8(&raw[..end]).context("the answer's header is not UTF-8")?;
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = match status_line.split_whitespace().collect::<Vec<_>>().as_slice() {
        [version, code, ..] if version.starts_with("HTTP/1.") => code.parse::<u16>().ok(),
        _ => None,
    };
    let status = status.ok_or_else(|| anyhow!("not an HTTP/1.x status line: {status_line:?}"))?;
    let (mut chunked, mut length) = (false, None);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        } else if name == "content-length" {
            length = Some(value.parse::<usize>().map_err(|_| anyhow!("bad content-length {value:?}"))?);
        }
    }
    let body = match (chunked, length) {
        (true, _) => dechunk(body)?,
        (false, Some(length)) => {
            let body = body.get(..length).ok_or_else(|| anyhow!("the answer ended before its {length} bytes"))?;
            body.to_vec()
        }
        (false, None) => body.to_vec(),
    };
    Ok(Response { status, body })
}

/// Decodes a chunked body.
fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").ok_or_else(|| anyhow!("truncated chunk size"))?;
        let size_text = std::str::from_utf8(&body[..line_end]).context("chunk size is not text")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| anyhow!("bad chunk size {size_text:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).ok_or_else(|| anyhow!("the answer ended inside a chunk"))?;
        out.extend_from_slice(chunk);
        body = body.get(size..).and_then(|rest| rest.strip_prefix(b"\r\n")).ok_or_else(|| anyhow!("bad chunk end"))?;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn urls_parse_into_host_port_and_base() {
        assert_eq!(parse_url("http://127.0.0.1:7878").unwrap(), ("127.0.0.1".into(), 7878, String::new()));
        assert_eq!(parse_url("http://localhost/").unwrap(), ("localhost".into(), 80, String::new()));
        assert_eq!(parse_url("http://h:1/ledger/").unwrap(), ("h".into(), 1, "/ledger".into()));
        assert_eq!(parse_url("http://[::1]:9000").unwrap(), ("::1".into(), 9000, String::new()));
        assert!(parse_url("https://h").is_err());
        assert!(parse_url("h:1").is_err());
        assert!(parse_url("http://h:port").is_err());
        assert!(parse_url("http://h/?x=1").is_err());
        assert!(parse_url("http://user@h").is_err());
    }

    #[test]
    fn queries_are_percent_encoded() {
        let query = encode_query(&[("from", "2026-01-01T00:00:00+00:00".into()), ("actor_id", "a b&c".into())]);
        assert_eq!(query, "from=2026-01-01T00%3A00%3A00%2B00%3A00&actor_id=a%20b%26c");
        assert_eq!(encode_query(&[]), "");
    }

    #[test]
    fn responses_with_length_or_chunks_decode() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}trailing";
        assert_eq!(parse_response(plain).unwrap(), Response { status: 200, body: b"{}".to_vec() });
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), Response { status: 404, body: b"abcde".to_vec() });
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort").is_err());
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"SMTP 200\r\n\r\n").is_err());
    }

    #[test]
    fn error_bodies_become_api_failures() {
        let body = br#"{"error": {"code": "forbidden", "message": "no"}}"#.to_vec();
        let failure = failure(&Response { status: 403, body });
        assert_eq!((failure.status, failure.code.as_str(), failure.message.as_str()), (403, "forbidden", "no"));
        assert!(is_status(&anyhow::Error::new(failure), 403));
        let bare = super::failure(&Response { status: 502, body: b"bad gateway".to_vec() });
        assert_eq!((bare.code.as_str(), bare.message.as_str()), ("http_error", "bad gateway"));
    }
}
