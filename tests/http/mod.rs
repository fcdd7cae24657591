//! A small HTTP/1.1 file server on 127.0.0.1 for download tests: it serves one generated
//! file, honours `Range` and `If-Range`, records each request, and can misbehave on purpose
//! (drop the connection midway, ignore ranges). It stops when dropped, and on its own after
//! a minute.
#![allow(dead_code)] // each test crate uses its own part of this module

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Like a well-behaved file server.
    Normal,
    /// The first answer announces the whole rest of the file, sends this many bytes and
    /// closes the connection; later answers are normal.
    DropFirstAfter(usize),
    /// Every answer is the whole file with status 200, whatever the request's range.
    IgnoreRange,
}

/// One request the server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
}

pub const ETAG: &str = "\"bkt-test-v1\"";

pub struct Server {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Serves `body` at every path that ends in `file`; anything else is 404.
    pub fn start(file: &str, body: Vec<u8>, mode: Mode) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (file, thread_seen, thread_stop) = (file.to_string(), seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut answered = 0;
            while !thread_stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let misbehave = match mode {
                            Mode::DropFirstAfter(n) if answered == 0 => Some(n),
                            _ => None,
                        };
                        answered += 1;
                        let _ = serve(stream, &file, &body, mode, misbehave, &thread_seen);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            port,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    file: &str,
    body: &[u8],
    mode: Mode,
    drop_after: Option<usize>,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let (mut range, mut if_range) = (None, None);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = Some(value.trim().to_string());
            match name.to_ascii_lowercase().as_str() {
                "range" => range = value,
                "if-range" => if_range = value,
                _ => {}
            }
        }
    }
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        range: range.clone(),
        if_range: if_range.clone(),
    });
    let mut out = stream;
    if !path.ends_with(file) {
        return out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    let total = body.len();
    let start = match (range.as_deref(), mode) {
        (_, Mode::IgnoreRange) => 0,
        (Some(_), _) if if_range.as_deref().is_some_and(|v| v != ETAG) => 0,
        (Some(r), _) => r
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0),
        (None, _) => 0,
    };
    if start >= total && start > 0 {
        return out.write_all(
            format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
    }
    let head = if start > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{total}\r\n",
            total - 1
        )
    } else {
        "HTTP/1.1 200 OK\r\n".to_string()
    };
    out.write_all(
        format!(
            "{head}Content-Length: {}\r\nETag: {ETAG}\r\nAccept-Ranges: bytes\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
            total - start
        )
        .as_bytes(),
    )?;
    let end = match drop_after {
        Some(n) => (start + n).min(total),
        None => total,
    };
    out.write_all(&body[start..end])?;
    out.flush()?;
    // Dropping the stream closes the connection, midway when `drop_after` said so.
    Ok(())
}

/// An ISO-like file of `len` bytes: deterministic noise with the ISO 9660 signature where a
/// real image has it.
pub fn iso_image(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    if len > 0x8006 {
        bytes[0x8001..0x8006].copy_from_slice(b"CD001");
    }
    bytes
}

/// The SHA-256 of `bytes` in hex, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
