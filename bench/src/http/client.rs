//! A minimal HTTP/1.1 client for the load generator: one keep-alive
//! connection, one request in flight, bodies framed by Content-Length
//! (axum frames every response of these routes that way). Enough to put
//! load on the server without a client library's own costs in the figures.

use std::net::SocketAddr;

use std::io::ErrorKind;

use anyhow::{bail, Context};
use tokio::net::TcpStream;

/// Largest response head accepted before giving up on the connection.
const HEAD_BYTES_MAX: usize = 16 * 1024;
const READ_CHUNK_BYTES: usize = 16 * 1024;

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

pub struct Connection {
    stream: TcpStream,
    token: String,
    /// Bytes read past the last response (none with one request in flight,
    /// kept anyway so framing never depends on it).
    buffer: Vec<u8>,
    request: Vec<u8>,
}

impl Connection {
    pub async fn open(address: SocketAddr, token: &str) -> anyhow::Result<Connection> {
        let stream = TcpStream::connect(address).await.with_context(|| format!("connecting to {address}"))?;
        // A request is one write; without this a small write can wait for
        // the ACK of the previous one.
        stream.set_nodelay(true)?;
        Ok(Connection { stream, token: token.to_owned(), buffer: Vec::with_capacity(8192), request: Vec::new() })
    }

    /// POSTs `body` as JSON and reads the whole response.
    pub async fn post(&mut self, path: &str, body: &[u8]) -> anyhow::Result<Response> {
        self.request.clear();
        let head = format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            self.token,
            body.len()
        );
        self.request.extend_from_slice(head.as_bytes());
        self.request.extend_from_slice(body);
        self.write_request().await.context("sending a request")?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> anyhow::Result<Response> {
        let head_end = loop {
            if let Some(at) = self.buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                break at + 4;
            }
            if self.buffer.len() > HEAD_BYTES_MAX {
                bail!("a response head longer than {HEAD_BYTES_MAX} bytes");
            }
            self.fill().await?;
        };
        let (status, length) = parse_head(self.buffer.get(..head_end).unwrap_or_default())?;
        let end = head_end + length;
        while self.buffer.len() < end {
            self.fill().await?;
        }
        let body = self.buffer.get(head_end..end).unwrap_or_default().to_vec();
        self.buffer.drain(..end);
        Ok(Response { status, body })
    }

    /// Readiness and `try_write`/`try_read`: the workspace's tokio has no
    /// `io-util`, and these need nothing more than `net`.
    async fn write_request(&mut self) -> std::io::Result<()> {
        let mut written = 0;
        while written < self.request.len() {
            self.stream.writable().await?;
            match self.stream.try_write(self.request.get(written..).unwrap_or_default()) {
                Ok(count) => written += count,
                Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        loop {
            self.stream.readable().await.context("reading a response")?;
            match self.stream.try_read(&mut chunk) {
                Ok(0) => bail!("the server closed the connection"),
                Ok(count) => {
                    self.buffer.extend_from_slice(chunk.get(..count).unwrap_or_default());
                    return Ok(());
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                Err(error) => return Err(error).context("reading a response"),
            }
        }
    }
}

/// The status code and the Content-Length of a response head.
fn parse_head(head: &[u8]) -> anyhow::Result<(u16, usize)> {
    let head = std::str::from_utf8(head).context("a response head that is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split_whitespace().nth(1).and_then(|code| code.parse().ok());
    let Some(status) = status else { bail!("a malformed status line: {status_line:?}") };
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("a response framed by {}: this client reads Content-Length only", value.trim());
        }
    }
    let Some(length) = length else { bail!("a response without Content-Length") };
    Ok((status, length))
}

#[cfg(test)]
mod tests {
    use super::parse_head;

    #[test]
    fn heads_give_status_and_length() {
        let head = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nContent-Length: 42\r\n\r\n";
        assert_eq!(parse_head(head).unwrap(), (201, 42));
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }
}
