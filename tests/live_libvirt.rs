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
        argv[..4],
        [
            "virsh",
            "-q",
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

fn cmd(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

#[test]
#[ignore = "needs a running libvirtd"]
fn a_batch_keeps_hostile_arguments_whole_and_replies_per_command() {
    let uri = uri();
    let virsh = Virsh::new(&SystemRunner, Some(&uri));
    let hostile = [
        "plain",
        "it's",
        "\"double\"",
        "semi;colon",
        "#hash",
        "back\\slash",
        "new\nline",
        "tab\there",
        "<xml a='1'>&amp;</xml>",
        "$HOME",
        "`id`",
        "é ünïcødé",
        " lead and trail ",
        "--looks-like-an-option",
    ];
    let mut commands: Vec<Vec<String>> = Vec::new();
    for arg in hostile {
        commands.push(cmd(&["echo", "--", arg]));
        commands.push(cmd(&["domstate", "--domain", "bkt-no-such-domain-ever"]));
    }
    commands.push(cmd(&["list", "--all", "--name"]));
    let replies = virsh.batch(&commands).unwrap();
    assert_eq!(replies.len(), commands.len());
    for (i, arg) in hostile.iter().enumerate() {
        let echo = &replies[2 * i];
        assert_eq!(
            (echo.stdout.as_str(), &echo.error),
            (*arg, &None),
            "argument {arg:?}"
        );
        let failed = &replies[2 * i + 1];
        assert_eq!(failed.stdout, "");
        assert!(
            failed
                .error
                .as_deref()
                .unwrap()
                .contains("failed to get domain 'bkt-no-such-domain-ever'"),
            "{failed:?}"
        );
    }
    assert_eq!(
        replies.last().unwrap().error,
        None,
        "commands after failures still run"
    );
}

/// A daemon that accepts the connection and never answers: virsh would wait forever; the
/// runner stops it at its deadline and says so.
#[test]
#[ignore = "needs virsh (libvirt-clients)"]
fn a_hung_daemon_ends_in_a_timeout_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hung.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in listener.incoming() {
            held.push(connection);
        }
    });
    let uri = format!("qemu+unix:///system?socket={}", socket.display());
    let virsh =
        Virsh::new(&SystemRunner, Some(&uri)).with_timeout(std::time::Duration::from_secs(2));
    let err = virsh.run(&["version"]).unwrap_err();
    assert!(matches!(err, Error::TimedOut { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("`virsh -q -c {uri} version` did not finish within 2 s and was stopped")
    );
    assert!(err.hint().unwrap().contains("hung"));
}
