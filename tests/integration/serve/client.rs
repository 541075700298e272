//! A running `broker serve` and a plain HTTP/1.1 client for it (one request per connection).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::util::{BrokerDir, ChildGuard, DEADLINE, wait_for};

/// A `broker serve` on an ephemeral loopback port, stopped (SIGTERM) when dropped.
pub struct Served {
    pub child: ChildGuard,
    pub addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Served {
    /// Starts `broker serve --listen 127.0.0.1:0` in `dir` and waits for its address.
    pub fn start(dir: &BrokerDir) -> Served {
        Served::start_with(dir, &["--listen", "127.0.0.1:0"])
    }

    /// Starts `broker serve ARGS…` in `dir` and waits for its address.
    pub fn start_with(dir: &BrokerDir, extra: &[&str]) -> Served {
        let mut args = vec!["serve"];
        args.extend_from_slice(extra);
        let mut command = dir.command(&args);
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = ChildGuard::spawn(&mut command);
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let collected = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut all = collected.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let mut addr = String::new();
        let started = wait_for(DEADLINE, || {
            let text = stderr.lock().unwrap().clone();
            match text.lines().find_map(|l| {
                l.strip_prefix("listening on http://")
                    .or_else(|| l.strip_prefix("listening on https://"))
            }) {
                Some(at) => {
                    addr = at.trim().to_owned();
                    true
                }
                None => false,
            }
        });
        assert!(
            started,
            "broker serve did not start:\n{}",
            stderr.lock().unwrap()
        );
        Served {
            child,
            addr,
            stderr,
        }
    }

    /// What the server wrote to stderr so far (its console log).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// `METHOD PATH` with this token (none when empty), `body` as the request body.
    pub fn call(&self, method: &str, path: &str, token: &str, body: &str) -> Answer {
        self.call_typed(method, path, token, "application/json", body)
    }

    /// As [`Served::call`] with the body's content type.
    pub fn call_typed(
        &self,
        method: &str,
        path: &str,
        token: &str,
        content_type: &str,
        body: &str,
    ) -> Answer {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if !body.is_empty() {
            head.push_str(&format!("Content-Type: {content_type}\r\n"));
        }
        if !token.is_empty() {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        head.push_str(body);
        self.raw(head.as_bytes())
    }

    /// Sends `request` as it is and reads the answer to the end of the connection.
    pub fn raw(&self, request: &[u8]) -> Answer {
        let mut stream = self.connect();
        stream.write_all(request).unwrap();
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).unwrap();
        Answer::parse(&bytes)
    }

    /// A connection to the server, reads bounded by [`DEADLINE`].
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(&self.addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream
    }

    /// Stops the server with SIGTERM and returns its exit code and stderr.
    pub fn stop(mut self) -> (Option<i32>, String) {
        crate::util::signal(&self.child, "TERM");
        let status = self.child.wait(DEADLINE);
        // The reader thread ends with the pipe.
        wait_for(Duration::from_secs(5), || self.stderr().contains("stopped"));
        (status.code(), self.stderr())
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    fn parse(bytes: &[u8]) -> Answer {
        let text = String::from_utf8_lossy(bytes).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Answer {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    /// The header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}
