//! `bkt vm start` and `bkt vm stop` against the real libvirt daemon.

mod libvirt;

use libvirt::{
    UNREACHABLE, bkt, bkt_at, define_plain_domain, manifest_dir, small_vm, unique_name, virsh,
};

fn state(name: &str) -> String {
    virsh(&["domstate", name]).trim().to_string()
}

#[test]
#[ignore = "needs a running libvirtd"]
fn start_and_stop_a_managed_vm() {
    let name = unique_name("ctl");
    let _cleanup = define_plain_domain(&name);
    let dir = manifest_dir(&small_vm(&name));
    let m = dir.path();

    assert_eq!(
        bkt(m, &["vm", "start", &name]),
        (0, format!("{name}: started\n"), String::new())
    );
    assert_eq!(state(&name), "running");
    assert_eq!(
        bkt(m, &["vm", "start", &name]).1,
        format!("{name}: already running\n")
    );

    // No guest OS answers ACPI: the graceful stop runs out of time and says what to do.
    let (code, out, err) = bkt(m, &["vm", "stop", &name, "--timeout", "1"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(
        err,
        format!(
            "error: VM {name} did not shut down within 1 s\nhint: the guest may not react to ACPI shutdown; `bkt vm stop {name} --force` powers it off at once\n"
        )
    );
    assert_eq!(state(&name), "running");

    assert_eq!(
        bkt(m, &["vm", "stop", &name, "--force"]).1,
        format!("{name}: powered off (destroyed)\n")
    );
    assert_eq!(state(&name), "shut off");
    assert_eq!(
        bkt(m, &["vm", "stop", &name]),
        (0, format!("{name}: already stopped\n"), String::new())
    );
}

#[test]
#[ignore = "needs a running libvirtd"]
fn unmanaged_domains_need_the_flag() {
    let name = unique_name("unmanaged");
    let _cleanup = define_plain_domain(&name);
    let dir = manifest_dir("");
    let m = dir.path();
    let path = m.join("vms.json");

    let (code, _, err) = bkt(m, &["vm", "start", &name]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "error: VM {name} is not in {}\nhint: it is a libvirt domain: pass --unmanaged to act on it anyway\n",
            path.display()
        )
    );
    assert_eq!(state(&name), "shut off", "a refused start changes nothing");

    assert_eq!(bkt(m, &["vm", "start", &name, "--unmanaged"]).0, 0);
    assert_eq!(state(&name), "running");
    assert_eq!(
        bkt(m, &["vm", "stop", &name, "--force", "--unmanaged"]).0,
        0
    );
    assert_eq!(state(&name), "shut off");
}

#[test]
#[ignore = "needs a running libvirtd"]
fn names_libvirt_does_not_have() {
    let defined_nowhere = unique_name("nowhere");
    let only_in_manifest = unique_name("undefined");
    let dir = manifest_dir(&small_vm(&only_in_manifest));
    let m = dir.path();

    let (code, _, err) = bkt(m, &["vm", "start", &only_in_manifest]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "error: libvirt has no domain named {only_in_manifest}\nhint: `bkt vm sync` defines it\n"
        )
    );

    let (code, _, err) = bkt(m, &["vm", "stop", &defined_nowhere, "--unmanaged"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!(
            "error: libvirt has no domain named {defined_nowhere}\n"
        )),
        "{err}"
    );
    let (code, _, err) = bkt(m, &["vm", "stop", &defined_nowhere]);
    assert_eq!(code, 1);
    assert!(err.contains("is not in"), "{err}");
}

#[test]
#[ignore = "needs virsh (libvirt-clients)"]
fn an_unreachable_daemon_exits_1_with_a_hint() {
    let dir = manifest_dir(&small_vm("anything"));
    let (code, _, err) = bkt_at(UNREACHABLE, dir.path(), &["vm", "start", "anything"]);
    assert_eq!(code, 1);
    assert!(err.contains("failed to connect to the hypervisor"), "{err}");
    assert!(
        err.ends_with("hint: start libvirtd (or virtqemud), or pass --connect qemu:///session\n"),
        "{err}"
    );
}
