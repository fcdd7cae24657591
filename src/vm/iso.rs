//! The ISO cache: `bkt vm fetch-iso` downloads a VM's URL sources into it, on explicit
//! request only (sync never downloads; it attaches what is already here).
//!
//! A download is written to `.<file name>.part` beside its final name and renamed into place
//! only when it is complete and, when the manifest gives a `sha256`, verified: sync never
//! sees half a file or a wrong one. An interrupted transfer resumes where it stopped (an HTTP
//! `Range` request, guarded by `If-Range` so that a file changed on the server starts over),
//! both within one run (a few retries) and in the next run (the `.part` file is kept); a
//! server that ignores ranges simply sends the whole file again. A checksum mismatch deletes
//! the download.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::manifest::vm::{IsoSource, iso_url_file_name};

/// How long connecting, and then each read, may take before the attempt counts as
/// interrupted.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts in a row that may end without one new byte before the download fails.
const ATTEMPTS: u32 = 5;
/// The pause before the first retry, doubled for each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// A URL source to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub url: String,
    /// The expected digest, lower case.
    pub sha256: Option<String>,
    /// Where it lives in the cache.
    pub path: PathBuf,
}

/// The URL sources among `sources`, with their place in `cache`.
pub fn wanted(sources: &[IsoSource], cache: &Path) -> Vec<Wanted> {
    sources
        .iter()
        .filter_map(|source| match source {
            IsoSource::Url { url, sha256 } => {
                let name = iso_url_file_name(url).ok()?;
                Some(Wanted {
                    url: url.clone(),
                    sha256: sha256.as_ref().map(|s| s.to_ascii_lowercase()),
                    path: cache.join(name),
                })
            }
            IsoSource::Path { .. } => None,
        })
        .collect()
}

/// What fetching one source did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The file was already in the cache (and matched its `sha256`, when there is one).
    AlreadyCached { verified: bool },
    /// It was downloaded (`resumed`: it continued an earlier partial download).
    Downloaded {
        bytes: u64,
        verified: bool,
        resumed: bool,
    },
}

/// What the caller hears while a download runs.
pub trait Progress {
    /// `done` bytes of `total` (when the server says) are in the file.
    fn update(&mut self, done: u64, total: Option<u64>);
    /// A message for the user (a retry, a cached file that did not match).
    fn note(&mut self, text: &str);
}

/// Fetches `wanted` into its place in the cache, unless a good copy is already there.
pub fn fetch(wanted: &Wanted, progress: &mut dyn Progress) -> Result<Fetched, String> {
    let dir = wanted
        .path
        .parent()
        .ok_or("the ISO cache has no directory")?;
    // The cache is bkt's own directory: making it is not creating anything the user named.
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if wanted.path.exists() {
        match &wanted.sha256 {
            None => return Ok(Fetched::AlreadyCached { verified: false }),
            Some(expected) => {
                let actual = sha256_of_file(&wanted.path)?;
                if actual == *expected {
                    return Ok(Fetched::AlreadyCached { verified: true });
                }
                progress.note(&format!(
                    "{} is in the cache but its sha256 is {actual}, not {expected}; downloading it again",
                    wanted.path.display()
                ));
            }
        }
    }
    let part = part_path(&wanted.path);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part)
        .map_err(|e| format!("cannot open {}: {e}", part.display()))?;
    // Two fetches of one file would write into each other's bytes.
    file.try_lock().map_err(|_| {
        format!(
            "another bkt is downloading {} ({} is locked)",
            wanted.url,
            part.display()
        )
    })?;
    let (bytes, resumed) = match download(&wanted.url, &mut file, &part, progress) {
        Ok(done) => done,
        Err(e) => {
            // Bytes already here are kept for the next run to continue; an empty file is
            // no help to anyone.
            if file.metadata().is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(&part);
            }
            return Err(e);
        }
    };
    let verified = match &wanted.sha256 {
        None => false,
        Some(expected) => {
            let actual = sha256_of_file(&part)?;
            if actual != *expected {
                drop(file);
                let _ = std::fs::remove_file(&part);
                return Err(format!(
                    "the download of {} has sha256 {actual}, not {expected} as the manifest says; it was deleted",
                    wanted.url
                ));
            }
            true
        }
    };
    file.sync_all()
        .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
    std::fs::rename(&part, &wanted.path).map_err(|e| {
        format!(
            "cannot move {} to {}: {e}",
            part.display(),
            wanted.path.display()
        )
    })?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(Fetched::Downloaded {
        bytes,
        verified,
        resumed,
    })
}

/// `.<name>.part` beside `path`: hidden, and never what sync looks for.
pub fn part_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.part"))
}

/// Downloads `url` into `file`, continuing after the bytes it already holds; the file's
/// final length, and whether some of it was continued rather than sent from the start.
fn download(
    url: &str,
    file: &mut File,
    part: &Path,
    progress: &mut dyn Progress,
) -> Result<(u64, bool), String> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(READ_TIMEOUT))
            // Statuses are answers here (206, 416), not errors.
            .http_status_as_error(false)
            .user_agent(concat!("bkt/", env!("CARGO_PKG_VERSION")))
            .build(),
    );
    let write_error = |e: std::io::Error| format!("cannot write {}: {e}", part.display());
    // The validator of the response being continued: a resumed range must be of the same file.
    let mut validator: Option<String> = None;
    let mut failures = 0;
    let mut resumed = false;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let have = file.seek(SeekFrom::End(0)).map_err(write_error)?;
        let mut request = agent.get(url);
        if have > 0 {
            request = request.header("Range", format!("bytes={have}-"));
            if let Some(v) = &validator {
                request = request.header("If-Range", v.as_str());
            }
        }
        let attempt = match request.call() {
            Ok(response) => {
                let status = response.status().as_u16();
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                validator = header("etag").or_else(|| header("last-modified"));
                let start = match status {
                    206 => match header("content-range").as_deref().and_then(range_start) {
                        Some(start) if start == have => have,
                        // A range we did not ask for: start again from nothing.
                        _ => {
                            file.set_len(0).map_err(write_error)?;
                            validator = None;
                            continue;
                        }
                    },
                    200 => 0,
                    // Our part is as long as the file, or longer: it cannot be continued.
                    416 if have > 0 => {
                        file.set_len(0).map_err(write_error)?;
                        validator = None;
                        continue;
                    }
                    _ => return Err(format!("{url} answered HTTP {status}")),
                };
                if start == 0 {
                    file.set_len(0).map_err(write_error)?;
                    file.seek(SeekFrom::Start(0)).map_err(write_error)?;
                } else {
                    resumed = true;
                }
                let length = response.body().content_length();
                let total = length.map(|n| start + n);
                progress.update(start, total);
                let mut reader = response.into_body().into_reader();
                copy(&mut reader, file, start, total, progress, write_error)
            }
            Err(e) => Err(Interrupted(e.to_string())),
        };
        match attempt {
            Ok(done) => return Ok((done, resumed)),
            Err(Interrupted(why)) => {
                let now = file.seek(SeekFrom::End(0)).map_err(write_error)?;
                failures = if now > have { 1 } else { failures + 1 };
                if failures >= ATTEMPTS {
                    return Err(format!(
                        "cannot download {url}: {why} ({failures} attempts in a row made no progress; run fetch-iso again to continue from {now} bytes)"
                    ));
                }
                if now > have {
                    backoff = FIRST_BACKOFF;
                }
                progress.note(&format!(
                    "{url}: {why}; continuing from byte {now} in {} ms",
                    backoff.as_millis()
                ));
                std::thread::sleep(backoff);
                backoff *= 2;
            }
        }
    }
}

/// Why an attempt ended early (the connection dropped, a read timed out): worth retrying.
struct Interrupted(String);

/// Copies the body to the end of `file`, which holds `start` bytes; the final length.
fn copy(
    reader: &mut impl Read,
    file: &mut File,
    start: u64,
    total: Option<u64>,
    progress: &mut dyn Progress,
    write_error: impl Fn(std::io::Error) -> String,
) -> Result<u64, Interrupted> {
    let mut done = start;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Interrupted(e.to_string())),
        };
        // A full disk is not an interruption that a retry fixes; it still ends the attempt,
        // and the retries then report it.
        file.write_all(&buffer[..n])
            .map_err(|e| Interrupted(write_error(e)))?;
        done += n as u64;
        progress.update(done, total);
    }
    match total {
        Some(total) if done < total => Err(Interrupted(format!(
            "the connection closed after {done} of {total} bytes"
        ))),
        _ => Ok(done),
    }
}

/// The first byte of a `Content-Range: bytes FIRST-LAST/TOTAL` header.
fn range_start(header: &str) -> Option<u64> {
    header
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// The SHA-256 of a file, in lower-case hex.
pub fn sha256_of_file(path: &Path) -> Result<String, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1024 * 1024];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_sources_map_to_their_cache_file() {
        let sources = [
            IsoSource::Path {
                path: "/x.iso".into(),
            },
            IsoSource::Url {
                url: "https://example.org/a/virtio-win.iso?x=1".into(),
                sha256: Some("AB".repeat(32)),
            },
        ];
        assert_eq!(
            wanted(&sources, Path::new("/cache")),
            [Wanted {
                url: "https://example.org/a/virtio-win.iso?x=1".into(),
                sha256: Some("ab".repeat(32)),
                path: "/cache/virtio-win.iso".into(),
            }]
        );
        assert_eq!(
            part_path(Path::new("/cache/virtio-win.iso")),
            Path::new("/cache/.virtio-win.iso.part")
        );
    }

    #[test]
    fn content_range_and_digests_read_right() {
        assert_eq!(range_start("bytes 1048576-3145727/3145728"), Some(1048576));
        assert_eq!(range_start("bytes */3145728"), None);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("abc");
        std::fs::write(&file, "abc").unwrap();
        assert_eq!(
            sha256_of_file(&file).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
