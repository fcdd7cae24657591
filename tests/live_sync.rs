//! `bkt vm sync` and `bkt vm status` against the real libvirt daemon.

mod libvirt;

use libvirt::{
    Cleanup, UNREACHABLE, bkt, bkt_at, define_plain_domain, disk_dir, unique_name, virsh, vm_json,
    write_manifest,
};
use serde_json::json;

/// The virsh processes and the batched commands that a `-vv` run traced.
struct Trace {
    processes: usize,
    commands: Vec<String>,
    /// Processes that only read storage pools (sync reads them when it creates a disk: one
    /// process for the lists, a second for their XML when there is any pool).
    pool_reads: usize,
}

fn trace(stderr: &str) -> Trace {
    let mut batches: Vec<Vec<String>> = Vec::new();
    for line in stderr.lines() {
        if line.starts_with("virsh ") {
            batches.push(Vec::new());
        } else if let (Some(command), Some(batch)) = (line.strip_prefix("  "), batches.last_mut()) {
            batch.push(command.to_string());
        }
    }
    Trace {
        processes: batches.len(),
        commands: batches.iter().flatten().cloned().collect(),
        pool_reads: batches
            .iter()
            .filter(|b| b.iter().all(|c| c.starts_with("pool-")))
            .count(),
    }
}

fn count(commands: &[String], verb: &str) -> usize {
    commands
        .iter()
        .filter(|c| c.split(' ').next() == Some(verb))
        .count()
}

fn inactive_xml(name: &str) -> String {
    virsh(&["dumpxml", "--inactive", "--security-info", name])
}

/// The text of the first element `tag` (with its attributes) in `xml`, e.g. `<uuid>`.
fn element<'a>(xml: &'a str, open: &str, close: &str) -> &'a str {
    let start = xml
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in {xml}"));
    let end = xml[start..].find(close).unwrap() + start + close.len();
    &xml[start..end]
}

#[test]
#[ignore = "needs a running libvirtd"]
fn create_then_a_second_sync_defines_nothing() {
    let (a, b) = (unique_name("create"), unique_name("create"));
    let _cleanup = (Cleanup(a.clone()), Cleanup(b.clone()));
    let disks = disk_dir();
    let dir = tempfile::tempdir().unwrap();
    write_manifest(
        dir.path(),
        &[
            (&a, vm_json(&a, disks.path(), json!({}))),
            (
                &b,
                vm_json(
                    &b,
                    disks.path(),
                    json!({"boot": "uefi", "tpm": "2.0", "graphics": "spice", "autostart": true}),
                ),
            ),
        ],
    );

    let (code, out, err) = bkt(dir.path(), &["vm", "sync", "-vv"]);
    assert_eq!(code, 0, "{out}{err}");
    let (first, second) = if a < b { (&a, &b) } else { (&b, &a) };
    assert!(
        out.contains(&format!("+ create {first}\n"))
            && out.contains(&format!("+ create {second}\n")),
        "{out}"
    );
    assert!(
        out.ends_with("2 created, 0 updated, 0 unchanged, 0 failed\n"),
        "{out}"
    );
    let t = trace(&err);
    // observe, the storage pools (their disks are created), define+autostart, read back:
    // the same virsh processes for any number of VMs.
    assert!((1..=2).contains(&t.pool_reads), "{err}");
    assert_eq!(
        (t.processes - t.pool_reads, count(&t.commands, "define")),
        (3, 2),
        "{err}"
    );
    assert!(disks.path().join(format!("{a}.qcow2")).exists());
    assert_eq!(
        virsh(&["list", "--all", "--name", "--autostart"])
            .lines()
            .filter(|l| *l == b)
            .count(),
        1
    );

    let before = (inactive_xml(&a), inactive_xml(&b));
    let (code, out, err) = bkt(dir.path(), &["vm", "sync", "-vv"]);
    assert_eq!(code, 0);
    assert_eq!(out, format!("= unchanged {first}\n= unchanged {second}\n"));
    let t = trace(&err);
    assert_eq!(
        (t.processes, count(&t.commands, "define")),
        (1, 0),
        "a no-op sync is one read and no define: {err}"
    );
    assert_eq!((inactive_xml(&a), inactive_xml(&b)), before);

    let (code, out, _) = bkt(dir.path(), &["vm", "sync"]);
    assert_eq!((code, out.as_str()), (0, "nothing to do: 2 VMs in sync\n"));
}

#[test]
#[ignore = "needs a running libvirtd"]
fn update_keeps_what_the_manifest_does_not_own() {
    let name = unique_name("update");
    let _cleanup = Cleanup(name.clone());
    let disks = disk_dir();
    let dir = tempfile::tempdir().unwrap();
    let base = json!({"network": "default", "graphics": "spice"});
    write_manifest(dir.path(), &[(&name, vm_json(&name, disks.path(), base))]);
    assert_eq!(bkt(dir.path(), &["vm", "sync"]).0, 0);

    // A person adds a device by hand (a virtio RNG), as with `virsh edit`.
    let xml = inactive_xml(&name);
    let edited = xml.replace(
        "</devices>",
        "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>\n</devices>",
    );
    let file = dir.path().join("edited.xml");
    std::fs::write(&file, edited).unwrap();
    virsh(&["define", file.to_str().unwrap()]);
    let uuid = element(&xml, "<uuid>", "</uuid>").to_string();
    let mac = element(&xml, "<mac address=", "/>").to_string();

    let changed = json!({"memory_gb": 2, "vcpus": 2, "graphics": "vnc", "tpm": "2.0", "boot": "uefi", "network": "default"});
    write_manifest(
        dir.path(),
        &[(&name, vm_json(&name, disks.path(), changed))],
    );
    let (code, out, err) = bkt(dir.path(), &["vm", "sync"]);
    assert_eq!(code, 0, "{out}{err}");
    for line in [
        format!("~ update {name}\n"),
        "    memory_gb: 1 -> 2\n".into(),
        "    vcpus: 1 -> 2\n".into(),
        "    boot: bios -> uefi\n".into(),
        "    tpm: none -> 2.0\n".into(),
        "    graphics: spice -> vnc\n".into(),
    ] {
        assert!(out.contains(&line), "{line:?} not in\n{out}");
    }
    assert!(
        out.contains("note: the firmware changes from BIOS to UEFI"),
        "{out}"
    );

    let after = inactive_xml(&name);
    assert_eq!(element(&after, "<uuid>", "</uuid>"), uuid);
    assert_eq!(element(&after, "<mac address=", "/>"), mac);
    assert!(
        after.contains("<rng model='virtio'>"),
        "the hand-added device is kept:\n{after}"
    );
    assert!(after.contains("<memory unit='KiB'>2097152</memory>"));
    assert!(after.contains("<graphics type='vnc'") && !after.contains("<graphics type='spice'"));
    assert!(after.contains("<tpm model='tpm-crb'>"));
    assert!(after.contains("<os firmware='efi'>"));
    let (_, out, _) = bkt(dir.path(), &["vm", "status"]);
    assert!(out.contains("in sync"), "{out}");
}

#[test]
#[ignore = "needs a running libvirtd"]
fn a_running_vm_is_updated_for_its_next_boot() {
    let name = unique_name("running");
    let _cleanup = Cleanup(name.clone());
    let disks = disk_dir();
    let dir = tempfile::tempdir().unwrap();
    write_manifest(
        dir.path(),
        &[(&name, vm_json(&name, disks.path(), json!({})))],
    );
    assert_eq!(bkt(dir.path(), &["vm", "sync"]).0, 0);
    assert_eq!(bkt(dir.path(), &["vm", "start", &name]).0, 0);

    write_manifest(
        dir.path(),
        &[(&name, vm_json(&name, disks.path(), json!({"memory_gb": 2})))],
    );
    let (code, out, _) = bkt(dir.path(), &["vm", "sync"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!(
            "note: {name} is running; the new definition takes effect at its next boot"
        )),
        "{out}"
    );
    assert!(inactive_xml(&name).contains("<memory unit='KiB'>2097152</memory>"));
    assert!(
        virsh(&["dumpxml", &name]).contains("<memory unit='KiB'>1048576</memory>"),
        "the live domain keeps its memory"
    );
    let (_, out, _) = bkt(dir.path(), &["vm", "status", &name]);
    assert!(out.contains("running  in sync"), "{out}");
}

#[test]
#[ignore = "needs a running libvirtd"]
fn status_shows_running_stopped_missing_and_unmanaged() {
    let (running, stopped, missing, other) = (
        unique_name("st-run"),
        unique_name("st-stop"),
        unique_name("st-miss"),
        unique_name("st-other"),
    );
    let _cleanup = (
        Cleanup(running.clone()),
        Cleanup(stopped.clone()),
        define_plain_domain(&other),
    );
    let disks = disk_dir();
    let dir = tempfile::tempdir().unwrap();
    let vms = [
        (running.as_str(), vm_json(&running, disks.path(), json!({}))),
        (stopped.as_str(), vm_json(&stopped, disks.path(), json!({}))),
    ];
    write_manifest(dir.path(), &vms);
    assert_eq!(bkt(dir.path(), &["vm", "sync"]).0, 0);
    assert_eq!(bkt(dir.path(), &["vm", "start", &running]).0, 0);
    // The manifest now wants more memory for `stopped` and knows a VM libvirt has not.
    let vms = [
        vms[0].clone(),
        (
            stopped.as_str(),
            vm_json(&stopped, disks.path(), json!({"memory_gb": 2})),
        ),
        (missing.as_str(), vm_json(&missing, disks.path(), json!({}))),
    ];
    write_manifest(dir.path(), &vms);

    let (code, out, _) = bkt(dir.path(), &["vm", "status", "--all", "--json"]);
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let row = |name: &str| {
        report["vms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {out}"))
    };
    assert_eq!(
        row(&running),
        json!({"name": running, "state": "running", "managed": true, "in_sync": true, "drift": []})
    );
    assert_eq!(
        row(&stopped),
        json!({"name": stopped, "state": "stopped", "managed": true, "in_sync": false, "drift": ["memory_gb"]})
    );
    assert_eq!(
        row(&missing),
        json!({"name": missing, "state": "missing", "managed": true, "in_sync": null, "drift": []})
    );
    assert_eq!(
        row(&other),
        json!({"name": other, "state": "stopped", "managed": false, "in_sync": null, "drift": []})
    );

    let (code, out, _) = bkt(dir.path(), &["vm", "status"]);
    assert_eq!(code, 0, "drift is not an error");
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&stopped) && l.ends_with("stopped  drift: memory_gb")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(&missing) && l.ends_with("missing  -")),
        "{out}"
    );
    assert!(!out.contains(&other), "unmanaged domains only with --all");

    let (code, out, _) = bkt(dir.path(), &["vm", "status", &other]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with(&other) && l.ends_with("unmanaged")),
        "{out}"
    );
    let (code, _, err) = bkt(dir.path(), &["vm", "status", "bkt-test-nowhere"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(
            "error: bkt-test-nowhere is neither in the manifest nor a libvirt domain\n"
        ),
        "{err}"
    );
    assert_eq!(bkt(dir.path(), &["vm", "stop", &running, "--force"]).0, 0);
}

#[test]
#[ignore = "needs a running libvirtd"]
fn one_broken_vm_does_not_stop_the_others() {
    let (good, broken) = (unique_name("good"), unique_name("broken"));
    let _cleanup = (Cleanup(good.clone()), Cleanup(broken.clone()));
    let disks = disk_dir();
    let dir = tempfile::tempdir().unwrap();
    let missing_disk = disks.path().join("not-there.qcow2");
    write_manifest(
        dir.path(),
        &[
            (&good, vm_json(&good, disks.path(), json!({}))),
            (
                &broken,
                vm_json(
                    &broken,
                    disks.path(),
                    json!({"create_if_missing": false, "disk_path": missing_disk}),
                ),
            ),
        ],
    );
    // A dry run already fails for the broken VM, and changes nothing.
    let (code, out, err) = bkt(dir.path(), &["vm", "sync", "--dry-run"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.ends_with(&format!("error: could not sync 1 VM: {broken}\n")),
        "{err}"
    );
    assert!(
        !virsh(&["list", "--all", "--name"])
            .lines()
            .any(|l| l == good)
    );

    let (code, out, err) = bkt(dir.path(), &["vm", "sync"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(&format!("+ create {good}\n")), "{out}");
    assert!(
        out.contains(&format!(
            "! error {broken}: disk {} does not exist (create it, or set \"create_if_missing\": true to let sync create it)\n",
            missing_disk.display()
        )),
        "{out}"
    );
    assert!(
        out.ends_with("1 created, 0 updated, 0 unchanged, 1 failed\n"),
        "{out}"
    );
    assert!(
        err.ends_with(&format!("error: could not sync 1 VM: {broken}\n")),
        "{err}"
    );
    assert_eq!(virsh(&["domstate", &good]).trim(), "shut off");
    assert!(
        !virsh(&["list", "--all", "--name"])
            .lines()
            .any(|l| l == broken)
    );
}

#[test]
#[ignore = "needs a running libvirtd"]
fn domains_outside_the_manifest_are_left_byte_identical() {
    let (managed, other) = (unique_name("mine"), unique_name("theirs"));
    let _cleanup = (Cleanup(managed.clone()), define_plain_domain(&other));
    let before = inactive_xml(&other);
    let disks = disk_dir();
    let dir = tempfile::tempdir().unwrap();
    write_manifest(
        dir.path(),
        &[(&managed, vm_json(&managed, disks.path(), json!({})))],
    );
    assert_eq!(bkt(dir.path(), &["vm", "sync"]).0, 0);
    write_manifest(
        dir.path(),
        &[(
            &managed,
            vm_json(&managed, disks.path(), json!({"vcpus": 2})),
        )],
    );
    assert_eq!(bkt(dir.path(), &["sync"]).0, 0);
    assert_eq!(inactive_xml(&other), before);
}

#[test]
#[ignore = "needs virsh (libvirt-clients)"]
fn sync_with_libvirt_unreachable_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let disks = disk_dir();
    write_manifest(
        dir.path(),
        &[("anything", vm_json("anything", disks.path(), json!({})))],
    );
    let (code, _, err) = bkt_at(UNREACHABLE, dir.path(), &["vm", "sync"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: `virsh -q -c qemu+unix:///system?socket=/nonexistent/sock <4 commands>` failed (exit status 1): failed to connect to the hypervisor"), "{err}");
    assert!(
        err.ends_with("hint: start libvirtd (or virtqemud), or pass --connect qemu:///session\n"),
        "{err}"
    );
    assert!(
        !disks.path().join("anything.qcow2").exists(),
        "nothing was created"
    );
}

#[test]
#[ignore = "needs a running libvirtd"]
fn turning_secure_boot_on_says_how_to_enrol_the_keys() {
    let name = unique_name("secure");
    let _cleanup = Cleanup(name.clone());
    let disks = disk_dir();
    let dir = tempfile::tempdir().unwrap();
    write_manifest(
        dir.path(),
        &[(&name, vm_json(&name, disks.path(), json!({"boot": "uefi"})))],
    );
    assert_eq!(bkt(dir.path(), &["vm", "sync"]).0, 0);
    write_manifest(
        dir.path(),
        &[(
            &name,
            vm_json(
                &name,
                disks.path(),
                json!({"boot": "uefi", "secure_boot": true}),
            ),
        )],
    );
    let (code, out, err) = bkt(dir.path(), &["vm", "sync"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("    secure_boot: false -> true\n"), "{out}");
    assert!(
        out.contains(&format!("`virsh start --reset-nvram {name}`")),
        "{out}"
    );
    let (_, out, _) = bkt(dir.path(), &["vm", "status", &name]);
    assert!(out.contains("in sync"), "{out}");
}
