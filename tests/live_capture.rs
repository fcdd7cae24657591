//! `bkt vm capture` against the real libvirt daemon, on domains written by hand the way a
//! person defines them with virsh.

mod libvirt;

use std::path::Path;
use std::process::Command;

use libvirt::{Cleanup, bkt, disk_dir, unique_name, virsh};

fn define(dir: &Path, xml: &str) {
    let file = dir.join("domain.xml");
    std::fs::write(&file, xml).unwrap();
    virsh(&["define", file.to_str().unwrap()]);
}

fn image(dir: &Path, file: &str, format: &str) -> String {
    let path = dir.join(file);
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", format])
        .arg(&path)
        .arg("1G")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path.to_string_lossy().into_owned()
}

/// UEFI without Secure Boot, TPM 2.0, SPICE, on the default network, with a second disk,
/// an installer CD-ROM and a hand-added RNG.
fn uefi_xml(name: &str, disk: &str, data: &str, iso: &str) -> String {
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='GiB'>2</memory>
  <vcpu>2</vcpu>
  <os firmware='efi'>
    <type arch='x86_64' machine='q35'>hvm</type>
    <firmware><feature enabled='no' name='secure-boot'/></firmware>
  </os>
  <features><acpi/><apic/></features>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/><source file='{disk}'/><target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/><source file='{data}'/><target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/><source file='{iso}'/><target dev='sda' bus='sata'/><readonly/>
    </disk>
    <interface type='network'><source network='default'/><model type='virtio'/></interface>
    <graphics type='spice' autoport='yes'/>
    <video><model type='qxl'/></video>
    <tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
</domain>"
    )
}

/// BIOS, VNC, no network, a raw disk and a guest agent channel.
fn bios_xml(name: &str, disk: &str) -> String {
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>1024</memory>
  <vcpu placement='static'>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/><source file='{disk}'/><target dev='vda' bus='virtio'/>
    </disk>
    <graphics type='vnc' port='-1' autoport='yes'/>
    <video><model type='vga'/></video>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
  </devices>
</domain>"
    )
}

/// No graphics, a serial console, a bridge interface and a named CPU model.
fn headless_xml(name: &str, disk: &str) -> String {
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory>1048576</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>Skylake-Client</model></cpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/><source file='{disk}'/><target dev='vda' bus='virtio'/>
    </disk>
    <interface type='bridge'><source bridge='br0'/><model type='virtio'/></interface>
    <serial type='pty'/><console type='pty'/>
  </devices>
</domain>"
    )
}

/// What a manifest cannot say: 1.5 GiB of memory and two interfaces.
fn lossy_xml(name: &str, disk: &str) -> String {
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>1536</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/><source file='{disk}'/><target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'><source network='default'/><model type='virtio'/></interface>
    <interface type='network'><source network='default'/><model type='e1000'/></interface>
  </devices>
</domain>"
    )
}

fn inactive(name: &str) -> String {
    virsh(&["dumpxml", "--inactive", "--security-info", name])
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("vms.json")).unwrap()).unwrap()
}

#[test]
#[ignore = "needs a running libvirtd"]
fn hand_made_domains_are_captured_and_a_sync_after_changes_nothing() {
    let (uefi, bios, headless, lossy) = (
        unique_name("hand-uefi"),
        unique_name("hand-bios"),
        unique_name("hand-headless"),
        unique_name("hand-lossy"),
    );
    let _cleanup = [&uefi, &bios, &headless, &lossy].map(|n| Cleanup(n.clone()));
    let disks = disk_dir();
    let d = disks.path();
    let iso = d.join("install.iso");
    std::fs::write(&iso, b"").unwrap();
    define(
        d,
        &uefi_xml(
            &uefi,
            &image(d, "uefi.qcow2", "qcow2"),
            &image(d, "data.img", "raw"),
            iso.to_str().unwrap(),
        ),
    );
    define(d, &bios_xml(&bios, &image(d, "bios.img", "raw")));
    define(
        d,
        &headless_xml(&headless, &image(d, "headless.qcow2", "qcow2")),
    );
    define(d, &lossy_xml(&lossy, &image(d, "lossy.qcow2", "qcow2")));

    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    let (code, out, err) = bkt(m, &["vm", "capture", &uefi, &bios, &headless, &lossy]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.ends_with("captured 3 VMs: 3 added, 0 changed, 0 unchanged; skipped 1\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!("! skip {lossy}: memory_gb: ")) && out.contains("network: "),
        "the lossy domain is skipped with each field and why:\n{out}"
    );
    let vms = &manifest(m)["vms"];
    assert_eq!(manifest(m)["$schema"], "vms.schema.json");
    assert!(m.join("vms.schema.json").exists());
    assert_eq!(
        vms[&uefi],
        serde_json::json!({
            "memory_gb": 2, "vcpus": 2, "disk_path": d.join("uefi.qcow2"), "disk_size_gb": 1, "boot": "uefi",
            "tpm": "2.0", "network": "default", "graphics": "spice",
            "iso_sources": [{"path": iso}], "virt_type": "qemu"
        })
    );
    assert_eq!(
        vms[&bios],
        serde_json::json!({
            "memory_gb": 1, "vcpus": 1, "disk_path": d.join("bios.img"), "disk_size_gb": 1, "boot": "bios",
            "network": "none", "graphics": "vnc", "virt_type": "qemu"
        })
    );
    assert_eq!(
        vms[&headless],
        serde_json::json!({
            "memory_gb": 1, "vcpus": 1, "disk_path": d.join("headless.qcow2"), "disk_size_gb": 1, "boot": "bios",
            "network": "bridge:br0", "graphics": "none", "cpu_model": "Skylake-Client", "virt_type": "qemu"
        })
    );
    assert!(vms.get(&lossy).is_none());

    let before: Vec<String> = [&uefi, &bios, &headless]
        .iter()
        .map(|n| inactive(n))
        .collect();
    let (code, out, _) = bkt(m, &["vm", "sync"]);
    assert_eq!((code, out.as_str()), (0, "nothing to do: 3 VMs in sync\n"));
    let after: Vec<String> = [&uefi, &bios, &headless]
        .iter()
        .map(|n| inactive(n))
        .collect();
    assert_eq!(after, before, "a sync right after capture defines nothing");
}

#[test]
#[ignore = "needs a running libvirtd"]
fn a_hand_change_is_captured_as_exactly_that_field() {
    let name = unique_name("hand-change");
    let _cleanup = Cleanup(name.clone());
    let disks = disk_dir();
    let d = disks.path();
    define(d, &bios_xml(&name, &image(d, "disk.img", "raw")));
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    assert_eq!(bkt(m, &["vm", "capture", &name]).0, 0);
    // The author spells out a default; capture must keep it.
    let text = std::fs::read_to_string(m.join("vms.json"))
        .unwrap()
        .replace(
            "\"boot\": \"bios\",",
            "\"boot\": \"bios\",\n      \"tpm\": \"none\",",
        );
    std::fs::write(m.join("vms.json"), &text).unwrap();

    // Nothing changed: the file is not even rewritten.
    let mtime = std::fs::metadata(m.join("vms.json"))
        .unwrap()
        .modified()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let (code, out, _) = bkt(m, &["vm", "capture"]);
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            "captured 1 VM: 0 added, 0 changed, 1 unchanged; skipped 0\n"
        )
    );
    assert_eq!(
        std::fs::metadata(m.join("vms.json"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );

    virsh(&["setmaxmem", &name, "3G", "--config"]);
    virsh(&["setmem", &name, "3G", "--config"]);
    virsh(&["setvcpus", &name, "2", "--config", "--maximum"]);
    virsh(&["setvcpus", &name, "2", "--config"]);

    let (code, out, _) = bkt(m, &["vm", "capture", "--dry-run"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!(
            "~ change {name}\n    memory_gb: 1 -> 3\n    vcpus: 1 -> 2\ncaptured 1 VM: 0 added, 1 changed, 0 unchanged; skipped 0\n"
        )
    );
    assert_eq!(
        std::fs::read_to_string(m.join("vms.json")).unwrap(),
        text,
        "--dry-run writes nothing"
    );

    let (code, out2, _) = bkt(m, &["vm", "capture"]);
    assert_eq!((code, out2), (0, out));
    let expected = text
        .replace("\"memory_gb\": 1,", "\"memory_gb\": 3,")
        .replace("\"vcpus\": 1,", "\"vcpus\": 2,");
    assert_eq!(
        std::fs::read_to_string(m.join("vms.json")).unwrap(),
        expected,
        "only those fields changed; \"tpm\": \"none\" stays"
    );
    let (_, out, _) = bkt(m, &["vm", "sync"]);
    assert_eq!(out, "nothing to do: 1 VM in sync\n");
}

#[test]
#[ignore = "needs a running libvirtd"]
fn a_field_that_cannot_round_trip_keeps_its_manifest_value() {
    let name = unique_name("hand-lossy-field");
    let _cleanup = Cleanup(name.clone());
    let disks = disk_dir();
    let d = disks.path();
    define(d, &bios_xml(&name, &image(d, "disk.img", "raw")));
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    assert_eq!(bkt(m, &["vm", "capture", &name]).0, 0);
    let text = std::fs::read_to_string(m.join("vms.json")).unwrap();

    // By hand: two interfaces, and memory that is not a whole GiB.
    let nic =
        "<interface type='network'><source network='default'/><model type='virtio'/></interface>\n";
    let xml = inactive(&name).replace("</devices>", &format!("{nic}{nic}</devices>"));
    define(d, &xml);
    virsh(&["setmaxmem", &name, "1536M", "--config"]);
    virsh(&["setmem", &name, "1536M", "--config"]);
    let (code, out, err) = bkt(m, &["vm", "capture"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "captured 1 VM: 0 added, 0 changed, 1 unchanged; skipped 0\n"
    );
    assert!(
        err.contains(&format!(
            "warning: VM {name}: memory_gb keeps its manifest value: "
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "warning: VM {name}: network keeps its manifest value: "
        )),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(m.join("vms.json")).unwrap(), text);
}

#[test]
#[ignore = "needs a running libvirtd"]
fn concurrent_captures_lose_no_write() {
    let names: Vec<String> = (0..4).map(|_| unique_name("race")).collect();
    let _cleanup: Vec<Cleanup> = names.iter().map(|n| Cleanup(n.clone())).collect();
    let disks = disk_dir();
    let d = disks.path();
    for (i, name) in names.iter().enumerate() {
        define(d, &bios_xml(name, &image(d, &format!("{i}.img"), "raw")));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vms.json"), "{ \"vms\": {} }\n").unwrap();
    // All four at once, each adding its own domain to the same manifest.
    let handles: Vec<_> = names
        .iter()
        .map(|name| {
            let (name, dir) = (name.clone(), dir.path().to_path_buf());
            std::thread::spawn(move || bkt(&dir, &["vm", "capture", &name]))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().0, 0);
    }
    let vms = manifest(dir.path())["vms"].as_object().unwrap().clone();
    let mut captured: Vec<&String> = vms.keys().collect();
    captured.sort();
    let mut expected: Vec<&String> = names.iter().collect();
    expected.sort();
    assert_eq!(captured, expected);
}
