//! `bkt vm fetch-iso` against an HTTP server on 127.0.0.1 that the test starts: a good and a
//! bad checksum, an interrupted transfer that resumes, a partial file from an earlier run, a
//! server that ignores ranges, and what is already cached.

mod http;

use std::path::{Path, PathBuf};
use std::process::Command;

use http::{ETAG, Mode, Seen, Server, iso_image, sha256_hex};

const MIB: usize = 1024 * 1024;

/// A manifest whose VM `win` has the URL sources `isos` (and a local ISO, which fetch-iso
/// leaves alone), and an empty cache home.
struct Setup {
    manifest: tempfile::TempDir,
    cache_home: tempfile::TempDir,
}

impl Setup {
    fn new(isos: serde_json::Value) -> Setup {
        let manifest = tempfile::tempdir().unwrap();
        let mut sources = vec![serde_json::json!({"path": "/nowhere/local.iso"})];
        sources.extend(isos.as_array().unwrap().iter().cloned());
        let vms = serde_json::json!({"vms": {"win": {
            "memory_gb": 1, "vcpus": 1, "disk_path": "/nowhere/win.qcow2", "disk_size_gb": 1,
            "boot": "uefi", "network": "none", "graphics": "spice", "iso_sources": sources
        }}});
        std::fs::write(manifest.path().join("vms.json"), vms.to_string()).unwrap();
        Setup {
            manifest,
            cache_home: tempfile::tempdir().unwrap(),
        }
    }

    fn cache(&self) -> PathBuf {
        self.cache_home.path().join("bkt/isos")
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_bkt"))
            .arg("-C")
            .arg(self.manifest.path())
            .args(args)
            .env("XDG_CACHE_HOME", self.cache_home.path())
            .env("NO_COLOR", "1")
            // The server is on this machine; no proxy may stand between.
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("https_proxy")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY")
            .env_remove("all_proxy")
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn fetch(&self) -> (i32, String, String) {
        self.run(&["vm", "fetch-iso", "win"])
    }

    /// Every file in the cache, hidden ones too.
    fn cached(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.cache())
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn requests(server: &Server) -> Vec<Option<String>> {
    server.seen().into_iter().map(|s: Seen| s.range).collect()
}

#[test]
fn a_good_checksum_is_accepted_and_a_cached_match_is_not_fetched_again() {
    let body = iso_image(3 * MIB + 123);
    let server = Server::start("virtio-win.iso", body.clone(), Mode::Normal);
    let url = server.url("stable/virtio-win.iso");
    let setup =
        Setup::new(serde_json::json!([{ "url": url, "sha256": sha256_hex(&body).to_uppercase() }]));

    let (code, out, err) = setup.fetch();
    assert_eq!(code, 0, "{out}{err}");
    let file = setup.cache().join("virtio-win.iso");
    assert_eq!(
        out,
        format!(
            "fetched {url} -> {} (3.0 MiB, sha256 verified)\n",
            file.display()
        )
    );
    assert_eq!(
        err,
        "`bkt vm sync win` attaches the ISOs now in the cache\n"
    );
    assert!(read(&file) == body);
    assert_eq!(setup.cached(), ["virtio-win.iso"]);

    let (code, out, _) = setup.fetch();
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!(
            "cached {url} -> {} (already there, sha256 verified)\n",
            file.display()
        )
    );
    assert_eq!(requests(&server).len(), 1, "the second run asked nothing");
}

#[test]
fn a_bad_checksum_deletes_the_download_and_fails() {
    let body = iso_image(MIB);
    let server = Server::start("bad.iso", body, Mode::Normal);
    let url = server.url("bad.iso");
    let wrong = "0".repeat(64);
    let setup = Setup::new(serde_json::json!([{ "url": url, "sha256": wrong }]));

    let (code, out, err) = setup.fetch();
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    let actual = sha256_hex(&iso_image(MIB));
    assert_eq!(
        err,
        format!(
            "error: VM win: the download of {url} has sha256 {actual}, not {wrong} as the manifest says; it was deleted\n\
             error: VM win: 1 ISO not fetched: {url}\n"
        )
    );
    assert_eq!(
        setup.cached(),
        Vec::<String>::new(),
        "nothing is left behind"
    );
}

#[test]
fn an_interrupted_transfer_resumes_with_a_range_request() {
    let body = iso_image(4 * MIB);
    let server = Server::start("big.iso", body.clone(), Mode::DropFirstAfter(MIB + 7));
    let url = server.url("big.iso");
    let setup = Setup::new(serde_json::json!([{ "url": url, "sha256": sha256_hex(&body) }]));

    let (code, out, err) = setup.fetch();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(4.0 MiB, resumed, sha256 verified)"), "{out}");
    assert!(
        err.contains(&format!("continuing from byte {}", MIB + 7)),
        "the retry is reported: {err}"
    );
    assert!(read(&setup.cache().join("big.iso")) == body);
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].range, None);
    assert_eq!(seen[1].range, Some(format!("bytes={}-", MIB + 7)));
    assert_eq!(seen[1].if_range.as_deref(), Some(ETAG));
    assert_eq!(setup.cached(), ["big.iso"]);
}

#[test]
fn a_partial_file_from_an_earlier_run_is_continued() {
    let body = iso_image(2 * MIB);
    let server = Server::start("half.iso", body.clone(), Mode::Normal);
    let setup = Setup::new(serde_json::json!([{ "url": server.url("half.iso") }]));
    std::fs::create_dir_all(setup.cache()).unwrap();
    std::fs::write(setup.cache().join(".half.iso.part"), &body[..MIB]).unwrap();

    let (code, out, err) = setup.fetch();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(2.0 MiB, resumed)"), "{out}");
    assert_eq!(requests(&server), [Some(format!("bytes={MIB}-"))]);
    assert!(read(&setup.cache().join("half.iso")) == body);
    assert_eq!(setup.cached(), ["half.iso"]);
}

#[test]
fn a_server_that_ignores_ranges_sends_the_whole_file_again() {
    let body = iso_image(2 * MIB);
    let server = Server::start("whole.iso", body.clone(), Mode::IgnoreRange);
    let setup = Setup::new(
        serde_json::json!([{ "url": server.url("whole.iso"), "sha256": sha256_hex(&body) }]),
    );
    std::fs::create_dir_all(setup.cache()).unwrap();
    std::fs::write(setup.cache().join(".whole.iso.part"), vec![0xff; MIB]).unwrap();

    let (code, out, err) = setup.fetch();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(2.0 MiB, sha256 verified)"), "{out}");
    assert!(read(&setup.cache().join("whole.iso")) == body);
}

#[test]
fn what_cannot_be_fetched_fails_clearly_and_the_rest_is_fetched() {
    let body = iso_image(MIB);
    let server = Server::start("there.iso", body.clone(), Mode::Normal);
    let (missing, there) = (server.url("missing.iso"), server.url("there.iso"));
    let setup = Setup::new(serde_json::json!([{ "url": missing }, { "url": there }]));

    let (code, out, err) = setup.fetch();
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(&format!("fetched {there} -> ")), "{out}");
    assert_eq!(
        err,
        format!(
            "error: VM win: {missing} answered HTTP 404\nerror: VM win: 1 ISO not fetched: {missing}\n"
        )
    );
    assert_eq!(setup.cached(), ["there.iso"]);
}

#[test]
fn a_cached_file_without_checksum_is_kept_and_one_that_does_not_match_is_replaced() {
    let body = iso_image(MIB);
    let server = Server::start("x.iso", body.clone(), Mode::Normal);
    let url = server.url("x.iso");
    let setup = Setup::new(serde_json::json!([{ "url": url }]));
    std::fs::create_dir_all(setup.cache()).unwrap();
    std::fs::write(setup.cache().join("x.iso"), b"put there by hand").unwrap();
    let (code, out, _) = setup.fetch();
    assert_eq!(code, 0);
    assert!(out.contains("(already there)"), "{out}");
    assert!(server.seen().is_empty());

    let setup_checked = Setup {
        cache_home: setup.cache_home,
        ..Setup::new(serde_json::json!([{ "url": url, "sha256": sha256_hex(&body) }]))
    };
    let (code, out, err) = setup_checked.fetch();
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("is in the cache but its sha256 is"), "{err}");
    assert!(out.contains("(1.0 MiB, sha256 verified)"), "{out}");
    assert!(read(&setup_checked.cache().join("x.iso")) == body);
}

#[test]
fn only_manifest_vms_with_url_sources_have_anything_to_fetch() {
    let setup = Setup::new(serde_json::json!([]));
    let (code, out, err) = setup.run(&["vm", "fetch-iso", "win"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "", "VM win has no URL ISO sources: nothing to fetch\n")
    );
    let (code, _, err) = setup.run(&["vm", "fetch-iso", "other"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: VM other is not in "), "{err}");
}

/// On a terminal (here the pseudo-terminal of `script`), stderr shows a progress bar that
/// reaches 100% and is erased again.
#[test]
fn a_terminal_gets_a_progress_bar() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` (util-linux) to make a terminal");
        return;
    }
    let body = iso_image(2 * MIB);
    let server = Server::start("tty.iso", body, Mode::Normal);
    let setup = Setup::new(serde_json::json!([{ "url": server.url("tty.iso") }]));
    let command = format!(
        "{} -C {} vm fetch-iso win",
        env!("CARGO_BIN_EXE_bkt"),
        setup.manifest.path().display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("XDG_CACHE_HOME", setup.cache_home.path())
        .env("NO_COLOR", "1")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen
            .contains("\r\x1b[Ktty.iso  [##############################]  100%  2.0 MiB / 2.0 MiB"),
        "{screen:?}"
    );
    assert!(
        screen.contains("\r\x1b[Kfetched "),
        "the bar is erased: {screen:?}"
    );
}
