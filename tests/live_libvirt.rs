//! Against the real libvirt daemon, through the project's own runner. These need a running
//! libvirtd; `scripts/test` runs them (`--include-ignored`), and `.ci/run` starts the daemon.
//! The URI is qemu:///system unless BKT_TEST_URI says otherwise.

use bkt::virsh::{Error, SystemRunner, Virsh};

fn uri() -> String {
    std::env::var("BKT_TEST_URI").unwrap_or_else(|_| "qemu:///system".into())
}

#[test]
#[ignore = "needs a running libvirtd"]
fn virsh_reaches_the_daemon() {
    let uri = uri();
    let virsh = Virsh::new(&SystemRunner, Some(&uri));
    let version = virsh.run(&["version"]).unwrap();
    assert!(version.contains("Running hypervisor: QEMU"), "{version}");
    let caps = virsh
        .run(&["domcapabilities", "--virttype", "qemu"])
        .unwrap();
    assert!(caps.contains("<domainCapabilities>"), "{caps}");
}

#[test]
#[ignore = "needs virsh (libvirt-clients)"]
fn an_unreachable_daemon_is_a_clear_error_with_a_hint() {
    let virsh = Virsh::new(
        &SystemRunner,
        Some("qemu+unix:///system?socket=/nonexistent/libvirt-sock"),
    );
    let err = virsh.run(&["version"]).unwrap_err();
    let Error::Failed { ref argv, code, .. } = err else {
        panic!("{err:?}");
    };
    assert_eq!(
        argv[..3],
        [
            "virsh",
            "-c",
            "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
        ]
    );
    assert_eq!(code, Some(1));
    assert!(
        err.message()
            .contains("failed to connect to the hypervisor"),
        "{}",
        err.message()
    );
    assert_eq!(
        err.hint().as_deref(),
        Some("start libvirtd (or virtqemud), or pass --connect qemu:///session")
    );
}
