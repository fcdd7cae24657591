//! Helpers for tests that drive the real libvirt daemon: unique domain names, cleanup that
//! runs even when a test fails, and the `bkt` binary with a pinned environment.
#![allow(dead_code)] // each test crate uses its own part of this module

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The libvirt URI of the tests: qemu:///system unless BKT_TEST_URI says otherwise.
pub fn uri() -> String {
    std::env::var("BKT_TEST_URI").unwrap_or_else(|_| "qemu:///system".into())
}

/// virsh on the test URI; panics with virsh's stderr when it fails.
pub fn virsh(args: &[&str]) -> String {
    let out = Command::new("virsh")
        .arg("-c")
        .arg(uri())
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .expect("virsh runs");
    assert!(
        out.status.success(),
        "virsh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A domain name no other test (or test run) uses: `bkt-test-<pid>-<tag>-<n>`.
pub fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "bkt-test-{}-{tag}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes its domain (destroy, then undefine with NVRAM) when dropped, pass or fail.
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in [
            vec!["destroy", self.0.as_str()],
            vec!["undefine", "--nvram", "--tpm", self.0.as_str()],
        ] {
            let _ = Command::new("virsh")
                .arg("-c")
                .arg(uri())
                .args(&args)
                .output();
        }
    }
}

/// A small hand-written domain, as a person would define it with virsh: no disk, so it
/// sits in the firmware when started and never reacts to an ACPI shutdown.
pub fn define_plain_domain(name: &str) -> Cleanup {
    let xml = format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices><console type='pty'/></devices>
</domain>"
    );
    let cleanup = Cleanup(name.to_string());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("domain.xml");
    std::fs::write(&file, xml).unwrap();
    virsh(&["define", file.to_str().unwrap()]);
    cleanup
}

/// `bkt` against the test URI, with the manifest in `manifest_dir`.
pub fn bkt(manifest_dir: &Path, args: &[&str]) -> (i32, String, String) {
    run_bkt(&uri(), manifest_dir, args, &[])
}

/// [`bkt`] against libvirt at `uri`.
pub fn bkt_at(uri: &str, manifest_dir: &Path, args: &[&str]) -> (i32, String, String) {
    run_bkt(uri, manifest_dir, args, &[])
}

/// [`bkt`] with extra environment variables (`XDG_CACHE_HOME` for the ISO cache, ...).
pub fn bkt_env(manifest_dir: &Path, args: &[&str], env: &[(&str, &Path)]) -> (i32, String, String) {
    run_bkt(&uri(), manifest_dir, args, env)
}

/// `bkt` with a pinned environment: its exit code, stdout and stderr.
fn run_bkt(
    uri: &str,
    manifest_dir: &Path,
    args: &[&str],
    env: &[(&str, &Path)],
) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bkt"));
    cmd.arg("-c")
        .arg(uri)
        .arg("-C")
        .arg(manifest_dir)
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("BKT_MANIFEST_DIR");
    // Downloads in tests go to 127.0.0.1; no proxy may stand between.
    for proxy in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(proxy);
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A URI whose daemon is not there.
pub const UNREACHABLE: &str = "qemu+unix:///system?socket=/nonexistent/sock";

/// A manifest directory whose vms.json holds `vms` (a JSON object body).
pub fn manifest_dir(vms: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vms.json"),
        format!("{{ \"vms\": {{ {vms} }} }}\n"),
    )
    .unwrap();
    dir
}

/// A manifest entry for a small software-emulated VM.
pub fn small_vm(name: &str) -> String {
    format!(
        "\"{name}\": {{ \"memory_gb\": 1, \"vcpus\": 1, \"disk_path\": \"/var/lib/libvirt/images/{name}.qcow2\", \"disk_size_gb\": 1, \"boot\": \"bios\", \"network\": \"none\", \"graphics\": \"none\", \"virt_type\": \"qemu\" }}"
    )
}

/// A directory for test disks that QEMU (running as its own user) can reach.
pub fn disk_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A manifest VM as JSON: small, software-emulated, its disk created in `disks`, with
/// `overrides` merged over it.
pub fn vm_json(name: &str, disks: &Path, overrides: serde_json::Value) -> serde_json::Value {
    let mut vm = serde_json::json!({
        "memory_gb": 1,
        "vcpus": 1,
        "disk_path": disks.join(format!("{name}.qcow2")),
        "disk_size_gb": 1,
        "create_if_missing": true,
        "boot": "bios",
        "network": "none",
        "graphics": "none",
        "virt_type": "qemu"
    });
    for (k, v) in overrides.as_object().unwrap() {
        vm[k] = v.clone();
    }
    vm
}

/// Writes `vms.json` with these VMs into `dir`.
pub fn write_manifest(dir: &Path, vms: &[(&str, serde_json::Value)]) {
    let vms: serde_json::Map<String, serde_json::Value> = vms
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    let text = serde_json::to_string_pretty(&serde_json::json!({ "vms": vms })).unwrap();
    std::fs::write(dir.join("vms.json"), text).unwrap();
}

/// A libvirt `dir` storage pool on a temporary directory (QEMU can reach it), named like a
/// test domain; destroyed and undefined when dropped, pass or fail, and its directory (with
/// the volumes in it) removed.
pub struct TestPool {
    pub name: String,
    pub dir: tempfile::TempDir,
}

impl TestPool {
    /// Defines the pool and, when `start`, starts it.
    pub fn new(tag: &str, start: bool) -> TestPool {
        let pool = TestPool {
            name: unique_name(tag),
            dir: disk_dir(),
        };
        virsh(&[
            "pool-define-as",
            "--name",
            &pool.name,
            "--type",
            "dir",
            "--target",
            pool.dir.path().to_str().unwrap(),
        ]);
        if start {
            virsh(&["pool-start", &pool.name]);
        }
        pool
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        for args in [
            vec!["pool-destroy", self.name.as_str()],
            vec!["pool-undefine", self.name.as_str()],
        ] {
            let _ = Command::new("virsh")
                .arg("-c")
                .arg(uri())
                .args(&args)
                .output();
        }
    }
}

/// The virsh processes of a `-vv` run, each with the commands batched into it.
pub fn traced_processes(stderr: &str) -> Vec<Vec<String>> {
    let mut processes: Vec<Vec<String>> = Vec::new();
    for line in stderr.lines() {
        if line.starts_with("virsh ") {
            processes.push(Vec::new());
        } else if let (Some(command), Some(last)) = (line.strip_prefix("  "), processes.last_mut())
        {
            last.push(command.to_string());
        }
    }
    processes
}

/// `qemu-img info` of an image: its format and virtual size in bytes.
pub fn image_info(path: &Path) -> (String, u64) {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-U"])
        .arg(path)
        .output()
        .expect("qemu-img runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        info["format"].as_str().unwrap().to_string(),
        info["virtual-size"].as_u64().unwrap(),
    )
}
