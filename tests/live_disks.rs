//! Disk provisioning against the real libvirt daemon: volumes in a storage pool, qemu-img
//! outside any pool, every path safety refusal, and existing disks left byte for byte.

mod libvirt;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use libvirt::{
    Cleanup, TestPool, bkt, disk_dir, image_info, traced_processes, unique_name, virsh, vm_json,
    write_manifest,
};
use serde_json::json;

const GIB: u64 = 1024 * 1024 * 1024;

fn inactive_xml(name: &str) -> String {
    virsh(&["dumpxml", "--inactive", name])
}

#[test]
#[ignore = "needs a running libvirtd"]
fn disks_in_a_pool_are_created_as_its_volumes_in_one_virsh_process() {
    let pool = TestPool::new("pool", true);
    let (a, b) = (unique_name("vol"), unique_name("vol"));
    let _cleanup = (Cleanup(a.clone()), Cleanup(b.clone()));
    let dir = tempfile::tempdir().unwrap();
    write_manifest(
        dir.path(),
        &[
            (&a, vm_json(&a, pool.path(), json!({}))),
            (&b, vm_json(&b, pool.path(), json!({"disk_size_gb": 2}))),
        ],
    );

    let (code, out, err) = bkt(dir.path(), &["vm", "sync", "-vv"]);
    assert_eq!(code, 0, "{out}{err}");
    for (name, size) in [(&a, 1), (&b, 2)] {
        let disk = pool.path().join(format!("{name}.qcow2"));
        assert!(
            out.contains(&format!(
                "    create disk {} ({size} GiB, qcow2) in storage pool {}\n",
                disk.display(),
                pool.name
            )),
            "{out}"
        );
        assert_eq!(image_info(&disk), ("qcow2".to_string(), size * GIB));
        assert!(inactive_xml(name).contains(&format!("<source file='{}'/>", disk.display())));
    }
    // libvirt made them: they are volumes of the pool without a refresh.
    let volumes = virsh(&["vol-list", "--pool", &pool.name]);
    assert!(volumes.contains(&format!("{a}.qcow2")) && volumes.contains(&format!("{b}.qcow2")));

    // observe; pool lists; pool definitions; every vol-create-as; define; read back.
    let processes = traced_processes(&err);
    let creating: Vec<&Vec<String>> = processes
        .iter()
        .filter(|p| p.iter().any(|c| c.starts_with("vol-create-as ")))
        .collect();
    assert_eq!(creating.len(), 1, "{err}");
    assert_eq!(creating[0].len(), 2, "{err}");
    assert_eq!(processes.len(), 6, "{err}");

    let (code, out, err) = bkt(dir.path(), &["vm", "sync", "-vv"]);
    let (first, second) = if a < b { (&a, &b) } else { (&b, &a) };
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, format!("= unchanged {first}\n= unchanged {second}\n"));
    assert_eq!(
        traced_processes(&err).len(),
        1,
        "a disk that exists needs no pool: {err}"
    );
}

#[test]
#[ignore = "needs a running libvirtd"]
fn a_disk_outside_any_pool_is_made_by_qemu_img_for_its_owner_only() {
    let name = unique_name("qimg");
    let _cleanup = Cleanup(name.clone());
    let disks = disk_dir();
    let dir = tempfile::tempdir().unwrap();
    write_manifest(
        dir.path(),
        &[(
            &name,
            vm_json(&name, disks.path(), json!({"disk_size_gb": 3})),
        )],
    );
    let (code, out, err) = bkt(dir.path(), &["vm", "sync", "-vv"]);
    assert_eq!(code, 0, "{out}{err}");
    let disk = disks.path().join(format!("{name}.qcow2"));
    assert!(
        out.contains(&format!(
            "    create disk {} (3 GiB, qcow2)\n",
            disk.display()
        )),
        "{out}"
    );
    assert!(!err.contains("vol-create-as"), "{err}");
    assert_eq!(image_info(&disk), ("qcow2".to_string(), 3 * GIB));
    let mode = std::fs::metadata(&disk).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// The bytes and modification time of a file, to prove it was not touched.
fn fingerprint(path: &Path) -> (Vec<u8>, std::time::SystemTime) {
    (
        std::fs::read(path).unwrap(),
        std::fs::metadata(path).unwrap().modified().unwrap(),
    )
}

#[test]
#[ignore = "needs a running libvirtd"]
fn existing_disks_are_used_as_they_are_in_their_own_format() {
    let pool = TestPool::new("keep", true);
    let (qcow, raw) = (unique_name("keep-qcow"), unique_name("keep-raw"));
    let _cleanup = (Cleanup(qcow.clone()), Cleanup(raw.clone()));
    // An image in the pool's directory that the pool has not seen (no refresh), and a raw
    // image elsewhere; each with content, and a size different from the manifest's.
    let qcow_disk = pool.path().join("mine.qcow2");
    let status = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&qcow_disk)
        .arg("1G")
        .status()
        .unwrap();
    assert!(status.success());
    let disks = disk_dir();
    let raw_disk = disks.path().join("mine.img");
    std::fs::write(&raw_disk, vec![0x5a; 3 * 1024 * 1024]).unwrap();
    let before = (fingerprint(&qcow_disk), fingerprint(&raw_disk));

    let dir = tempfile::tempdir().unwrap();
    write_manifest(
        dir.path(),
        &[
            (
                &qcow,
                vm_json(
                    &qcow,
                    pool.path(),
                    json!({"disk_path": qcow_disk, "disk_size_gb": 50}),
                ),
            ),
            (
                &raw,
                vm_json(
                    &raw,
                    disks.path(),
                    json!({"disk_path": raw_disk, "disk_size_gb": 50}),
                ),
            ),
        ],
    );
    let (code, out, err) = bkt(dir.path(), &["vm", "sync"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("create disk"), "{out}");
    assert!(inactive_xml(&qcow).contains("<driver name='qemu' type='qcow2'/>"));
    assert!(inactive_xml(&raw).contains("<driver name='qemu' type='raw'/>"));
    assert_eq!((fingerprint(&qcow_disk), fingerprint(&raw_disk)), before);
    assert_eq!(image_info(&qcow_disk).1, GIB, "never resized");

    // libvirt refuses to make a volume over a file it has not seen either.
    let out = std::process::Command::new("virsh")
        .args(["-c", &libvirt::uri(), "vol-create-as", "--pool", &pool.name])
        .args([
            "--name",
            "mine.qcow2",
            "--capacity",
            "2GiB",
            "--format",
            "qcow2",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(fingerprint(&qcow_disk), before.0);
}

#[test]
#[ignore = "needs a running libvirtd"]
fn every_refusal_names_the_vm_and_the_rule_and_creates_nothing() {
    let sleeping = TestPool::new("asleep", false);
    let disks = disk_dir();
    let base = disks.path();
    std::fs::create_dir(base.join("a-directory.qcow2")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("redirected.qcow2");
    std::os::unix::fs::symlink(&target, base.join("link.qcow2")).unwrap();

    let names: Vec<String> = (0..6).map(|_| unique_name("refuse")).collect();
    let _cleanup: Vec<Cleanup> = names.iter().cloned().map(Cleanup).collect();
    let good = unique_name("fine");
    let _good = Cleanup(good.clone());
    let cases = [
        (
            base.join("no/such/dir/d.qcow2"),
            format!(
                "cannot create disk {}/no/such/dir/d.qcow2: directory {}/no does not exist (bkt creates no directories: make it, or fix disk_path)",
                base.display(),
                base.display()
            ),
        ),
        (
            base.join("link.qcow2"),
            format!(
                "cannot create disk {}/link.qcow2: it is a symbolic link to {}, which does not exist, and bkt does not create disks through symbolic links (point disk_path at the real file)",
                base.display(),
                target.display()
            ),
        ),
        (
            base.join("a-directory.qcow2"),
            format!(
                "disk {}/a-directory.qcow2 is a directory, not a disk image",
                base.display()
            ),
        ),
        (
            "/dev/null".into(),
            "disk /dev/null is a device; bkt manages disk image files (qcow2 or raw)".into(),
        ),
        (
            sleeping.path().join("d.qcow2"),
            format!(
                "cannot create disk {}/d.qcow2: its directory {} is the target of storage pool {}, which is not active (`virsh pool-start {}` starts it)",
                sleeping.path().display(),
                sleeping.path().display(),
                sleeping.name,
                sleeping.name
            ),
        ),
        (
            base.join("missing.qcow2"),
            format!(
                "disk {}/missing.qcow2 does not exist (create it, or set \"create_if_missing\": true to let sync create it)",
                base.display()
            ),
        ),
    ];
    let mut vms: Vec<(&str, serde_json::Value)> = names
        .iter()
        .zip(&cases)
        .map(|(name, (path, _))| {
            let create = !path.ends_with("missing.qcow2");
            (
                name.as_str(),
                vm_json(
                    name,
                    base,
                    json!({"disk_path": path, "create_if_missing": create}),
                ),
            )
        })
        .collect();
    vms.push((&good, vm_json(&good, base, json!({}))));
    let dir = tempfile::tempdir().unwrap();
    write_manifest(dir.path(), &vms);

    let (code, out, err) = bkt(dir.path(), &["vm", "sync"]);
    assert_eq!(code, 1, "{out}{err}");
    for (name, (_, message)) in names.iter().zip(&cases) {
        assert!(
            out.contains(&format!("! error {name}: {message}\n")),
            "{message}\nnot in\n{out}"
        );
        assert!(
            err.contains(&format!("error: VM {name}: {message}\n")),
            "{err}"
        );
    }
    assert!(out.contains(&format!("+ create {good}\n")), "{out}");
    assert!(
        out.ends_with("1 created, 0 updated, 0 unchanged, 6 failed\n"),
        "{out}"
    );
    assert!(!target.exists(), "nothing was created through the link");
    assert!(!base.join("no").exists());
    assert_eq!(std::fs::read_dir(sleeping.path()).unwrap().count(), 0);
    let domains = virsh(&["list", "--all", "--name"]);
    assert!(names.iter().all(|n| !domains.lines().any(|l| l == n)));
}

/// A user who cannot write a directory that no pool covers gets a refusal, not a qemu-img
/// error. Root can write anywhere, so this runs bkt as `nobody`, on libvirt's test driver
/// (which needs no daemon and has no pool for that directory).
#[test]
#[ignore = "needs root (to run bkt as another user) and virsh"]
fn an_unwritable_directory_outside_any_pool_is_refused() {
    if !std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
    {
        eprintln!("skipped: not root");
        return;
    }
    let disks = disk_dir(); // root's, mode 0755
    let dir = disk_dir();
    write_manifest(
        dir.path(),
        &[("vm", vm_json("vm", disks.path(), json!({})))],
    );
    std::fs::set_permissions(
        dir.path().join("vms.json"),
        PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let out = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", env!("CARGO_BIN_EXE_bkt")])
        .args(["-c", "test:///default", "-C"])
        .arg(dir.path())
        .args(["vm", "sync"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let d = disks.path().display();
    assert!(
        stdout.contains(&format!("! error vm: cannot create disk {d}/vm.qcow2: you cannot write to {d} and no libvirt storage pool has it as its target")),
        "{stdout}"
    );
    assert_eq!(std::fs::read_dir(disks.path()).unwrap().count(), 0);
}
