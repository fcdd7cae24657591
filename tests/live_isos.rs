//! Installer ISOs against the real libvirt daemon: CD-ROMs in manifest order, a missing local
//! ISO left out with a warning, and a URL source attached once `fetch-iso` has cached it
//! (after a refused bad checksum and an interrupted transfer), never downloaded by sync.

mod http;
mod libvirt;

use std::path::Path;

use http::{Mode, Server, iso_image, sha256_hex};
use libvirt::{Cleanup, bkt_env, disk_dir, unique_name, virsh, vm_json, write_manifest};
use serde_json::json;

/// The source files of the domain's CD-ROMs, in document order.
fn cdroms(name: &str) -> Vec<String> {
    let xml = virsh(&["dumpxml", "--inactive", name]);
    xml.split("<disk ")
        .skip(1)
        .filter(|disk| disk.starts_with("type='file' device='cdrom'"))
        .filter_map(|disk| {
            let start = disk.find("<source file='")? + "<source file='".len();
            let end = disk[start..].find('\'')? + start;
            Some(disk[start..end].to_string())
        })
        .collect()
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
#[ignore = "needs a running libvirtd"]
fn local_isos_keep_their_order_and_a_missing_one_is_left_out_with_a_warning() {
    let name = unique_name("isos");
    let _cleanup = Cleanup(name.clone());
    let isos = disk_dir();
    let (a, gone, b) = (
        isos.path().join("a installer.iso"),
        isos.path().join("later.iso"),
        isos.path().join("b-drivers.iso"),
    );
    std::fs::write(&a, iso_image(64 * 1024)).unwrap();
    std::fs::write(&b, iso_image(64 * 1024)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sources = json!([{"path": a}, {"path": gone}, {"path": b}]);
    write_manifest(
        dir.path(),
        &[(
            &name,
            vm_json(&name, isos.path(), json!({"iso_sources": sources})),
        )],
    );
    let cache = tempfile::tempdir().unwrap();
    let env = [("XDG_CACHE_HOME", cache.path())];

    let (code, out, err) = bkt_env(dir.path(), &["vm", "sync"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        err,
        format!(
            "warning: VM {name}: ISO {} does not exist; its CD-ROM is left out until it does\n",
            gone.display()
        )
    );
    assert_eq!(cdroms(&name), [path(&a), path(&b)]);
    let (_, out, _) = bkt_env(dir.path(), &["vm", "status", &name], &env);
    assert!(
        out.contains("in sync"),
        "a CD-ROM left out is not drift: {out}"
    );
    let (code, out, _) = bkt_env(dir.path(), &["vm", "sync"], &env);
    assert_eq!((code, out.as_str()), (0, "nothing to do: 1 VM in sync\n"));

    // The file arrives: now the CD-ROM is wanted, in its place.
    std::fs::write(&gone, iso_image(64 * 1024)).unwrap();
    let (_, out, _) = bkt_env(dir.path(), &["vm", "status", &name], &env);
    assert!(out.contains("drift: iso_sources"), "{out}");
    let (code, out, err) = bkt_env(dir.path(), &["vm", "sync"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!(
            "    iso_sources: {}, {} -> {}, {}, {}\n",
            a.display(),
            b.display(),
            a.display(),
            gone.display(),
            b.display()
        )),
        "{out}"
    );
    assert_eq!(cdroms(&name), [path(&a), path(&gone), path(&b)]);
}

#[test]
#[ignore = "needs a running libvirtd"]
fn a_url_iso_is_attached_once_fetch_iso_has_cached_it() {
    let name = unique_name("url-iso");
    let _cleanup = Cleanup(name.clone());
    let body = iso_image(3 * 1024 * 1024);
    let server = Server::start("virtio-win.iso", body.clone(), Mode::Normal);
    // A second copy whose first answer breaks off after 1 MiB: fetch-iso must continue it.
    let flaky = Server::start(
        "virtio-win.iso",
        body.clone(),
        Mode::DropFirstAfter(1 << 20),
    );
    let disks = disk_dir();
    let local = disks.path().join("installer.iso");
    std::fs::write(&local, iso_image(64 * 1024)).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let env = [("XDG_CACHE_HOME", cache.path())];
    let cached = cache.path().join("bkt/isos/virtio-win.iso");
    let dir = tempfile::tempdir().unwrap();
    let manifest = |url: &str, sha256: &str| {
        let sources = json!([{"path": local}, {"url": url, "sha256": sha256}]);
        write_manifest(
            dir.path(),
            &[(
                &name,
                vm_json(&name, disks.path(), json!({"iso_sources": sources})),
            )],
        );
    };
    let url = server.url("stable/virtio-win.iso");
    manifest(&url, &"0".repeat(64));

    // Sync never downloads: it warns, says how to get the ISO, and leaves the CD-ROM out.
    let (code, out, err) = bkt_env(dir.path(), &["vm", "sync"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        err,
        format!(
            "warning: VM {name}: ISO {url} is not in the ISO cache ({}); its CD-ROM is left out until it is: `bkt vm fetch-iso {name}` downloads it\n",
            cached.display()
        )
    );
    assert!(server.seen().is_empty(), "sync asked the server nothing");
    assert_eq!(cdroms(&name), [path(&local)]);

    // A wrong checksum: the download is refused and nothing reaches the cache or the domain.
    let (code, _, err) = bkt_env(dir.path(), &["vm", "fetch-iso", &name], &env);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("it was deleted"), "{err}");
    assert!(!cached.exists());
    let (code, out, _) = bkt_env(dir.path(), &["vm", "sync"], &env);
    assert_eq!((code, out.as_str()), (0, "nothing to do: 1 VM in sync\n"));

    // The right checksum, from the flaky server: fetched (the interrupted transfer
    // continued), then attached.
    manifest(&flaky.url("stable/virtio-win.iso"), &sha256_hex(&body));
    let (code, out, err) = bkt_env(dir.path(), &["vm", "fetch-iso", &name], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(3.0 MiB, resumed, sha256 verified)"), "{out}");
    assert!(std::fs::read(&cached).unwrap() == body);
    let (_, out, _) = bkt_env(dir.path(), &["vm", "status", &name], &env);
    assert!(out.contains("drift: iso_sources"), "{out}");
    let (code, out, err) = bkt_env(dir.path(), &["vm", "sync"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(err, "", "no warning once it is cached");
    assert_eq!(cdroms(&name), [path(&local), path(&cached)]);
    let (_, out, _) = bkt_env(dir.path(), &["vm", "status", &name], &env);
    assert!(out.contains("in sync"), "{out}");
}
