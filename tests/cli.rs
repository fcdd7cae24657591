//! The `bkt` binary as a user runs it: exit codes, where output goes, global flags.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `bkt` with a pinned environment: no manifest dir from the caller, no colour.
fn bkt(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bkt"));
    cmd.args(args)
        .current_dir(root())
        .env_remove("BKT_MANIFEST_DIR")
        .env_remove("LIBVIRT_DEFAULT_URI")
        .env("NO_COLOR", "1")
        .env("HOME", "/home/tester");
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        status.code().unwrap(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

#[test]
fn validate_accepts_the_example_with_the_flag_before_or_after() {
    for args in [
        &["-C", "examples/manifests", "vm", "validate"][..],
        &["vm", "validate", "--manifest-dir", "examples/manifests"],
        &["vm", "-C", "examples/manifests", "validate"],
    ] {
        assert_eq!(
            run(&mut bkt(args)),
            (0, "ok: 1 VM\n".into(), String::new()),
            "{args:?}"
        );
    }
    let (code, out, _) =
        run(bkt(&["vm", "validate", "-q"]).env("BKT_MANIFEST_DIR", "examples/manifests"));
    assert_eq!((code, out.as_str()), (0, ""));
}

#[test]
fn validate_reports_every_error_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vms.json"),
        "{\n  \"vms\": {\n    \"a\": { \"memroy_gb\": 2, \"vcpus\": 0, \"disk_path\": \"a.qcow2\", \"disk_size_gb\": 1,\n      \"boot\": \"bios\", \"network\": \"default\", \"graphics\": \"none\" }\n  }\n}\n",
    )
    .unwrap();
    let file = dir.path().join("vms.json");
    let (code, out, err) = run(&mut bkt(&[
        "vm",
        "validate",
        "-C",
        dir.path().to_str().unwrap(),
    ]));
    assert_eq!((code, out.as_str()), (2, ""));
    let f = file.display();
    assert_eq!(
        err,
        format!(
            "{f}:3:12: vms.a.memroy_gb: unknown field \"memroy_gb\" (did you mean \"memory_gb\"?)\n\
             {f}:3:37: vms.a.vcpus: must be >= 1\n\
             {f}:3:53: vms.a.disk_path: must be an absolute path (after ~ expansion), not \"a.qcow2\"\n\
             error: {f} is not valid (3 errors); nothing was changed\n"
        )
    );
}

#[test]
fn a_missing_manifest_names_the_path_it_looked_at() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(bkt(&["vm", "validate"]).current_dir(dir.path()));
    assert_eq!(code, 2);
    assert_eq!(
        err,
        "error: no manifest at manifests/vms.json\nhint: pass --manifest-dir DIR or set BKT_MANIFEST_DIR to the directory that holds vms.json\n"
    );
}

#[test]
fn schema_prints_the_checked_in_schema() {
    let (code, out, _) = run(&mut bkt(&["schema", "vms"]));
    assert_eq!(code, 0);
    assert_eq!(
        out,
        std::fs::read_to_string(root().join("schemas/vms.schema.json")).unwrap()
    );
}

#[test]
fn completions_for_each_supported_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef bkt"),
        ("fish", "complete -c bkt"),
    ] {
        let (code, out, _) = run(&mut bkt(&["completions", shell]));
        assert_eq!(code, 0, "{shell}");
        assert!(out.contains(marker), "{shell}: no {marker:?}");
        assert!(out.contains("validate"), "{shell} completes subcommands");
    }
    assert_eq!(run(&mut bkt(&["completions", "tcsh"])).0, 2);
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&mut bkt(&["vm", "frobnicate"])).0, 2);
    assert_eq!(
        run(&mut bkt(&["--color", "sometimes", "vm", "validate"])).0,
        2
    );
    assert_eq!(run(&mut bkt(&["-q", "-v", "vm", "validate"])).0, 2);
}

#[test]
fn colour_only_when_asked_or_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap();
    let (_, _, plain) = run(&mut bkt(&["vm", "validate", "-C", dir]));
    assert!(plain.starts_with("error: ") && !plain.contains('\x1b'));
    let (_, _, coloured) =
        run(bkt(&["vm", "validate", "-C", dir, "--color", "always"]).env_remove("NO_COLOR"));
    assert!(coloured.starts_with("\x1b[1;31merror:\x1b[0m "));
}
