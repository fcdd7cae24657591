//! Patch: bring an existing domain's owned elements to the manifest, and keep the rest.
//!
//! Every field is read with the same function as [`super::parse`] and only changed when its
//! value differs from the manifest's, so a domain that is in sync comes back unchanged and
//! an update touches only the fields that drifted. A device whose kind changes (another
//! graphics type, an interface that was not on a network) is rebuilt by [`super::render`]'s
//! function for it, carrying over what still applies (MAC, passwords, listen addresses);
//! what no longer applies (the old PCI address of a video device, SPICE-only channels) is
//! dropped, and libvirt fills in new values on define.

use std::fmt;

use xot::Node;

use super::dom::{self, Dom};
use super::parse::{self, managed_disk};
use super::render::{self, DISK_TARGET_PREFIX, Writer};
use super::{ParseError, Resolved};
use crate::manifest::vm::{Boot, Graphics, HOST_MODEL, HOST_PASSTHROUGH, Tpm, VmDefinition};

/// Why a domain could not be patched.
#[derive(Debug)]
pub enum PatchError {
    /// The existing XML is not a domain.
    Parse(ParseError),
    /// The change would need an edit that bkt does not make to this domain.
    Unsupported { field: &'static str, reason: String },
    /// The XML tree refused an edit (a bug in bkt).
    Tree(xot::Error),
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchError::Parse(e) => e.fmt(f),
            PatchError::Unsupported { field, reason } => {
                write!(f, "cannot change {field}: {reason}")
            }
            PatchError::Tree(e) => write!(f, "editing the domain XML failed: {e}"),
        }
    }
}

impl std::error::Error for PatchError {}

impl From<xot::Error> for PatchError {
    fn from(e: xot::Error) -> Self {
        PatchError::Tree(e)
    }
}

/// `existing_xml` (from `virsh dumpxml --inactive --security-info`) with every element the
/// manifest owns brought to `def`; `resolved` holds `def`'s facts from outside the manifest.
/// The domain's name is never changed.
pub fn patch(
    existing_xml: &str,
    def: &VmDefinition,
    resolved: &Resolved,
) -> Result<String, PatchError> {
    let mut dom = Dom::parse(existing_xml).map_err(PatchError::Parse)?;
    let dom_ = &mut dom;
    virt_type(dom_, def);
    cpu_model(dom_, def)?;
    vcpus(dom_, def)?;
    memory(dom_, def)?;
    firmware(dom_, def)?;
    disk(dom_, resolved)?;
    cdroms(dom_, resolved)?;
    network(dom_, def)?;
    graphics(dom_, def.graphics)?;
    tpm(dom_, def.tpm())?;
    Ok(dom.to_xml()?)
}

/// Renders one element with `write`, indented for a child of `parent`, into `dom`.
fn fragment(dom: &mut Dom, parent: Node, write: impl FnOnce(&mut Writer)) -> dom::Result<Node> {
    let mut w = Writer::new(dom.depth(parent) + 1);
    write(&mut w);
    dom.fragment(w.finish().trim())
}

fn devices(dom: &mut Dom) -> dom::Result<Node> {
    let domain = dom.domain;
    dom.ensure_child(domain, "devices")
}

/// Adds a device after the last device of the same kind (libvirt orders devices itself).
fn add_device(dom: &mut Dom, name: &str, write: impl FnOnce(&mut Writer)) -> dom::Result<Node> {
    let devices = devices(dom)?;
    let node = fragment(dom, devices, write)?;
    let last = dom.children(devices, name).last();
    match last {
        Some(last) => dom.insert_after(last, node)?,
        None => dom.append(devices, node)?,
    }
    Ok(node)
}

/// Removes every child of `parent` but those named in `keep`.
fn retain_children(dom: &mut Dom, parent: Node, keep: &[&str]) -> dom::Result<()> {
    let drop: Vec<Node> = dom
        .elements(parent)
        .filter(|&n| !keep.iter().any(|k| dom.is(n, k)))
        .collect();
    drop.into_iter().try_for_each(|n| dom.remove(n))
}

fn has_numa_cells(dom: &Dom) -> bool {
    dom.at(dom.domain, &["cpu", "numa", "cell"]).is_some()
}

fn virt_type(dom: &mut Dom, def: &VmDefinition) {
    let desired = def.virt_type();
    if parse::read_virt_type(dom).value() != Some(&desired) {
        let domain = dom.domain;
        dom.set_attr(domain, "type", render::virt_type_name(desired));
    }
}

/// The `<cpu>` children that describe the guest's layout rather than its model.
const CPU_LAYOUT: &[&str] = &["topology", "numa", "cache", "maxphysaddr"];

fn cpu_model(dom: &mut Dom, def: &VmDefinition) -> Result<(), PatchError> {
    let normalized = def.normalized();
    let desired = normalized.cpu_model();
    let virt_type = parse::read_virt_type(dom).value().copied();
    if parse::read_cpu_model(dom, virt_type)
        .value()
        .map(Option::as_deref)
        == Some(desired)
    {
        return Ok(());
    }
    let domain = dom.domain;
    let cpu = match (dom.child(domain, "cpu"), desired) {
        (Some(cpu), _) => cpu,
        (None, None) => return Ok(()),
        (None, Some(_)) => dom.ensure_child(domain, "cpu")?,
    };
    // The old mode's attributes, model, vendor and features belong to the old model.
    dom.retain_attrs(cpu, &[]);
    retain_children(dom, cpu, CPU_LAYOUT)?;
    match desired {
        Some(mode @ (HOST_PASSTHROUGH | HOST_MODEL)) => dom.set_attr(cpu, "mode", mode),
        Some(model) => {
            dom.set_attr(cpu, "mode", "custom");
            let node = fragment(dom, cpu, |w| render::cpu_model(w, model))?;
            let first = dom.elements(cpu).next();
            match first {
                Some(first) => dom.insert_before(first, node)?,
                None => dom.append(cpu, node)?,
            }
        }
        None if dom.elements(cpu).next().is_none() => dom.remove(cpu)?,
        None => {}
    }
    Ok(())
}

fn vcpus(dom: &mut Dom, def: &VmDefinition) -> Result<(), PatchError> {
    if parse::read_vcpus(dom).value() == Some(&def.vcpus) {
        return Ok(());
    }
    let refuse = |reason: &str| PatchError::Unsupported {
        field: "vcpus",
        reason: reason.into(),
    };
    if has_numa_cells(dom) {
        return Err(refuse(
            "the vCPUs are assigned to NUMA cells, which bkt does not change",
        ));
    }
    let domain = dom.domain;
    if dom.child(domain, "vcpus").is_some() {
        return Err(refuse(
            "the domain lists its vCPUs one by one (<vcpus>), which bkt does not change",
        ));
    }
    let vcpu = dom.ensure_child(domain, "vcpu")?;
    dom.remove_attr(vcpu, "current");
    dom.set_text(vcpu, &def.vcpus.to_string())?;
    let cpu = dom.ensure_child(domain, "cpu")?;
    let topology = fragment(dom, cpu, |w| render::topology(w, def.vcpus))?;
    match dom.child(cpu, "topology") {
        Some(old) => dom.replace(old, topology)?,
        None => dom.append(cpu, topology)?,
    }
    Ok(())
}

fn memory(dom: &mut Dom, def: &VmDefinition) -> Result<(), PatchError> {
    if parse::read_memory(dom).value() == Some(&def.memory_gb) {
        return Ok(());
    }
    if has_numa_cells(dom) {
        return Err(PatchError::Unsupported {
            field: "memory_gb",
            reason: "the memory is split over NUMA cells, which bkt does not resize".into(),
        });
    }
    let kib = render::memory_kib(def.memory_gb);
    let domain = dom.domain;
    let memory = dom.ensure_child(domain, "memory")?;
    let current = dom.ensure_child(domain, "currentMemory")?;
    for node in [memory, current] {
        dom.set_attr(node, "unit", "KiB");
        dom.set_text(node, &kib)?;
    }
    Ok(())
}

fn firmware(dom: &mut Dom, def: &VmDefinition) -> Result<(), PatchError> {
    let (boot, secure) = parse::read_firmware(dom);
    let secure_boot = def.boot == Boot::Uefi && def.secure_boot();
    if boot.value() == Some(&def.boot) && secure.value() == Some(&secure_boot) {
        return Ok(());
    }
    let domain = dom.domain;
    let os = dom.ensure_child(domain, "os")?;
    // The old firmware choice: its features and its loader no longer apply.
    for name in ["firmware", "loader"] {
        if let Some(node) = dom.child(os, name) {
            dom.remove(node)?;
        }
    }
    match def.boot {
        Boot::Bios => {
            dom.remove_attr(os, "firmware");
            if let Some(nvram) = dom.child(os, "nvram") {
                dom.remove(nvram)?;
            }
        }
        Boot::Uefi => {
            dom.set_attr(os, "firmware", "efi");
            // Keep the NVRAM file (boot entries), not the template of another firmware.
            if let Some(nvram) = dom.child(os, "nvram") {
                dom.remove_attr(nvram, "template");
            }
            let features = fragment(dom, os, |w| render::firmware_features(w, secure_boot))?;
            match dom.child(os, "type") {
                Some(t) => dom.insert_after(t, features)?,
                None => dom.append(os, features)?,
            }
            if secure_boot {
                let features = dom.ensure_child(domain, "features")?;
                let smm = dom.ensure_child(features, "smm")?;
                dom.set_attr(smm, "state", "on");
            }
        }
    }
    Ok(())
}

fn disk(dom: &mut Dom, resolved: &Resolved) -> Result<(), PatchError> {
    let (path, format) = parse::read_disk(dom);
    let Some(disk) = managed_disk(dom) else {
        let used: Vec<usize> = dom
            .devices("disk")
            .into_iter()
            .filter_map(|n| dom.child(n, "target"))
            .filter_map(|t| dom.attr(t, "dev"))
            .filter_map(|dev| render::target_index(DISK_TARGET_PREFIX, dev))
            .collect();
        let target = render::target_name(DISK_TARGET_PREFIX, next_free(&used));
        add_device(dom, "disk", |w| {
            render::disk(
                w,
                &resolved.disk_path,
                resolved.disk_format.as_str(),
                &target,
            )
        })?;
        return Ok(());
    };
    if path.value() != Some(&resolved.disk_path) {
        let was_file = dom.attr(disk, "type").unwrap_or("file") == "file";
        dom.set_attr(disk, "type", "file");
        match dom.child(disk, "source") {
            Some(source) if was_file => dom.set_attr(source, "file", &resolved.disk_path),
            old => {
                // Another kind of source (block device, network, volume): none of it applies.
                if let Some(old) = old {
                    dom.remove(old)?;
                }
                let source = dom.ensure_child(disk, "source")?;
                dom.set_attr(source, "file", &resolved.disk_path);
            }
        }
        // The backing chain described the old image.
        if let Some(chain) = dom.child(disk, "backingStore") {
            dom.remove(chain)?;
        }
    }
    if format.value() != Some(&resolved.disk_format) {
        let driver = match dom.child(disk, "driver") {
            Some(driver) => driver,
            None => {
                let driver = dom.ensure_child(disk, "driver")?;
                dom.set_attr(driver, "name", "qemu");
                driver
            }
        };
        dom.set_attr(driver, "type", resolved.disk_format.as_str());
    }
    Ok(())
}

/// The smallest index above every used one, so that new disks sort after the old ones.
fn next_free(used: &[usize]) -> usize {
    used.iter().max().map_or(0, |m| m + 1)
}

fn cdroms(dom: &mut Dom, resolved: &Resolved) -> Result<(), PatchError> {
    let owned = parse::iso_cdroms(dom);
    let desired = resolved.iso_paths();
    for (&node, path) in owned.iter().zip(&desired) {
        if let Some(source) = dom.child(node, "source")
            && dom.attr(source, "file") != Some(path)
        {
            dom.set_attr(source, "file", path);
        }
    }
    for &node in owned.iter().skip(desired.len()) {
        dom.remove(node)?;
    }
    let first = next_free(&parse::used_sd_indexes(dom));
    for (index, path) in (first..).zip(desired.iter().skip(owned.len())) {
        let target = render::target_name(render::CDROM_TARGET_PREFIX, index);
        add_device(dom, "disk", |w| render::cdrom(w, path, &target))?;
    }
    Ok(())
}

/// The `<interface>` children that do not depend on how the interface attaches.
const INTERFACE_KEEP: &[&str] = &[
    "mac", "boot", "address", "alias", "link", "mtu", "rom", "coalesce",
];

fn network(dom: &mut Dom, def: &VmDefinition) -> Result<(), PatchError> {
    if parse::read_network(dom).value() == Some(&def.network) {
        return Ok(());
    }
    let interfaces = dom.devices("interface");
    let Some(attachment) = render::attachment(&def.network()) else {
        // `none` is no interface at all.
        return interfaces
            .into_iter()
            .try_for_each(|n| dom.remove(n))
            .map_err(Into::into);
    };
    let Some(&first) = interfaces.first() else {
        add_device(dom, "interface", |w| render::interface(w, attachment))?;
        return Ok(());
    };
    if matches!(dom.attr(first, "type"), Some("network" | "bridge")) {
        dom.set_attr(first, "type", attachment.0);
        let source = fragment(dom, first, |w| render::interface_source(w, attachment))?;
        match dom.child(first, "source") {
            Some(old) => dom.replace(old, source)?,
            None => dom.append(first, source)?,
        }
    } else {
        let devices = devices(dom)?;
        let new = fragment(dom, devices, |w| render::interface(w, attachment))?;
        dom.replace_keeping(first, new, INTERFACE_KEEP)?;
    }
    Ok(())
}

/// `<graphics>` attributes that mean the same for SPICE and VNC (`connected` does not: VNC
/// knows only `keep`). The `<listen>` children are kept too.
const GRAPHICS_KEEP_ATTRS: &[&str] = &["passwd", "passwdValidTo", "keymap", "listen"];

fn graphics(dom: &mut Dom, desired: Graphics) -> Result<(), PatchError> {
    if parse::read_graphics(dom).value() == Some(&desired) {
        return Ok(());
    }
    if desired != Graphics::Spice {
        leave_spice(dom)?;
    }
    let graphics = dom.devices("graphics");
    let videos = dom.devices("video");
    if desired == Graphics::None {
        for node in graphics.into_iter().chain(videos) {
            dom.remove(node)?;
        }
        if dom.devices("serial").is_empty() && dom.devices("console").is_empty() {
            add_device(dom, "serial", render::serial)?;
            add_device(dom, "console", render::console)?;
        }
        return Ok(());
    }
    match graphics.first() {
        None => {
            add_device(dom, "graphics", |w| render::graphics(w, desired))?;
        }
        Some(&old) => {
            let devices = devices(dom)?;
            let new = fragment(dom, devices, |w| render::graphics(w, desired))?;
            for attr in GRAPHICS_KEEP_ATTRS {
                if let Some(value) = dom.attr(old, attr).map(str::to_owned) {
                    dom.set_attr(new, attr, &value);
                }
            }
            dom.replace_keeping(old, new, &["listen"])?;
        }
    }
    match videos.first() {
        None => {
            add_device(dom, "video", |w| render::video(w, desired))?;
        }
        Some(&video) => {
            // A new video model: its model settings, driver and address no longer apply.
            retain_children(dom, video, &["alias"])?;
            let model = fragment(dom, video, |w| render::video_model(w, desired))?;
            dom.append(video, model)?;
        }
    }
    if desired == Graphics::Spice
        && !dom
            .devices("channel")
            .iter()
            .any(|&c| dom.attr(c, "type") == Some("spicevmc"))
    {
        add_device(dom, "channel", render::spice_agent_channel)?;
    }
    if !dom
        .devices("input")
        .iter()
        .any(|&i| dom.attr(i, "type") == Some("tablet"))
    {
        add_device(dom, "input", render::tablet)?;
    }
    Ok(())
}

/// Drops what libvirt refuses without SPICE graphics: `spicevmc`/`spiceport` devices
/// (agent channels, USB redirection), and SPICE audio, which becomes no audio (its id stays,
/// for sound devices that name it).
fn leave_spice(dom: &mut Dom) -> dom::Result<()> {
    let Some(devices) = dom.child(dom.domain, "devices") else {
        return Ok(());
    };
    let spice_only: Vec<Node> = dom
        .elements(devices)
        .filter(|&n| matches!(dom.attr(n, "type"), Some("spicevmc" | "spiceport")))
        .collect();
    for node in spice_only {
        dom.remove(node)?;
    }
    let audios: Vec<Node> = dom
        .children(devices, "audio")
        .filter(|&a| dom.attr(a, "type") == Some("spice"))
        .collect();
    for audio in audios {
        dom.set_attr(audio, "type", "none");
        retain_children(dom, audio, &[])?;
    }
    Ok(())
}

fn tpm(dom: &mut Dom, desired: Tpm) -> Result<(), PatchError> {
    if parse::read_tpm(dom).value() == Some(&desired) {
        return Ok(());
    }
    for node in dom.devices("tpm") {
        dom.remove(node)?;
    }
    if desired == Tpm::V2_0 {
        add_device(dom, "tpm", render::tpm)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::vm::{Network, VirtType};
    use crate::vm::domain_xml::{DiskFormat, parse};

    /// What libvirt 9.0 keeps of a SPICE domain (trimmed `dumpxml --inactive --security-info`).
    const LIBVIRT_SPICE: &str = "<domain type='qemu'>
  <name>vm</name>
  <uuid>824909e5-5223-4989-b4b8-da04c8be01e6</uuid>
  <memory unit='KiB'>2097152</memory>
  <currentMemory unit='KiB'>2097152</currentMemory>
  <vcpu placement='static'>2</vcpu>
  <os firmware='efi'>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/vm_VARS.fd</nvram>
    <boot dev='hd'/>
  </os>
  <cpu mode='custom' match='exact' check='none'>
    <model fallback='forbid'>qemu64</model>
    <topology sockets='2' dies='1' cores='1' threads='1'/>
  </cpu>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/vm.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <interface type='user'>
      <mac address='52:54:00:12:34:56'/>
      <model type='e1000e'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </interface>
    <channel type='spicevmc'>
      <target type='virtio' name='com.redhat.spice.0'/>
      <address type='virtio-serial' controller='0' bus='0' port='1'/>
    </channel>
    <input type='tablet' bus='usb'/>
    <graphics type='spice' autoport='yes' passwd='secret' connected='disconnect'>
      <listen type='address' address='127.0.0.1'/>
      <image compression='off'/>
    </graphics>
    <sound model='ich9'>
      <audio id='1'/>
    </sound>
    <audio id='1' type='spice'/>
    <video>
      <model type='qxl' ram='65536' vram='65536' vgamem='16384' heads='1' primary='yes'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x0'/>
    </video>
    <redirdev bus='usb' type='spicevmc'/>
  </devices>
</domain>
";

    fn definition() -> VmDefinition {
        let captured = parse(LIBVIRT_SPICE).unwrap();
        VmDefinition {
            cpu_model: captured.cpu_model.value().cloned().flatten(),
            virt_type: Some(VirtType::Qemu),
            ..VmDefinition::new(
                2,
                2,
                "/vm.qcow2",
                10,
                Boot::Uefi,
                Network::NONE,
                Graphics::Spice,
            )
        }
    }

    fn resolved(def: &VmDefinition) -> Resolved {
        Resolved::new(
            def,
            None,
            std::path::Path::new("/cache"),
            DiskFormat::Qcow2,
            |_| false,
        )
    }

    fn patched(def: &VmDefinition) -> String {
        patch(LIBVIRT_SPICE, def, &resolved(def)).unwrap()
    }

    fn unsupported_network() -> VmDefinition {
        // The domain's user-mode interface is not a manifest value; take it over.
        VmDefinition {
            network: "default".into(),
            ..definition()
        }
    }

    #[test]
    fn spice_to_vnc_swaps_graphics_and_video_and_drops_what_needs_spice() {
        let def = VmDefinition {
            graphics: Graphics::Vnc,
            ..unsupported_network()
        };
        let xml = patched(&def);
        assert!(
            xml.contains(r#"<graphics type="vnc" autoport="yes" passwd="secret">"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<listen type="address" address="127.0.0.1"/>"#),
            "{xml}"
        );
        assert!(!xml.contains("<image"), "{xml}");
        assert!(!xml.contains("spicevmc"), "{xml}");
        assert!(xml.contains(r#"<audio id="1" type="none"/>"#), "{xml}");
        // The sound device still names audio 1.
        assert!(xml.contains(r#"<sound model="ich9">"#), "{xml}");
        let video = &xml[xml.find("<video>").unwrap()..xml.find("</video>").unwrap()];
        assert_eq!(
            video.split_whitespace().collect::<Vec<_>>(),
            ["<video>", r#"<model"#, r#"type="vga"/>"#]
        );
        assert_eq!(xml.matches(r#"<input type="tablet""#).count(), 1);
    }

    #[test]
    fn an_interface_of_another_kind_is_rebuilt_keeping_its_mac_and_address() {
        let xml = patched(&unsupported_network());
        let interface = &xml[xml.find("<interface").unwrap()..xml.find("</interface>").unwrap()];
        assert!(
            interface.contains(r#"<interface type="network">"#),
            "{interface}"
        );
        assert!(
            interface.contains(r#"<source network="default"/>"#),
            "{interface}"
        );
        assert!(
            interface.contains(r#"<mac address="52:54:00:12:34:56"/>"#),
            "{interface}"
        );
        assert!(interface.contains(r#"bus="0x01""#), "{interface}");
        assert!(
            interface.contains(r#"<model type="virtio"/>"#),
            "{interface}"
        );
    }

    #[test]
    fn turning_on_secure_boot_changes_the_firmware_choice_and_keeps_the_nvram_file() {
        let def = VmDefinition {
            secure_boot: Some(true),
            ..unsupported_network()
        };
        let xml = patched(&def);
        assert!(!xml.contains("<loader"), "{xml}");
        assert!(
            xml.contains("<nvram>/var/lib/libvirt/qemu/nvram/vm_VARS.fd</nvram>"),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<feature enabled="yes" name="secure-boot"/>"#),
            "{xml}"
        );
        assert!(xml.contains(r#"<smm state="on"/>"#), "{xml}");
        assert_eq!(
            parse(&xml).unwrap().secure_boot,
            crate::vm::domain_xml::Field::Clean(true)
        );

        let bios = patched(&VmDefinition {
            boot: Boot::Bios,
            ..unsupported_network()
        });
        assert!(
            !bios.contains("firmware") && !bios.contains("nvram"),
            "{bios}"
        );
    }

    #[test]
    fn a_vcpu_change_lays_the_vcpus_out_as_cores_of_one_socket() {
        let def = VmDefinition {
            vcpus: 6,
            ..unsupported_network()
        };
        let xml = patched(&def);
        assert!(
            xml.contains(r#"<vcpu placement="static">6</vcpu>"#),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<topology sockets="1" dies="1" cores="6" threads="1"/>"#),
            "{xml}"
        );
        // The CPU model did not change, so it stays as libvirt wrote it.
        assert!(
            xml.contains(r#"<model fallback="forbid">qemu64</model>"#),
            "{xml}"
        );
    }

    #[test]
    fn nothing_changes_when_only_libvirts_additions_differ() {
        let def = unsupported_network();
        let once = patched(&def);
        assert_eq!(patch(&once, &def, &resolved(&def)).unwrap(), once);
    }

    #[test]
    fn numa_guests_are_not_resized() {
        let numa = LIBVIRT_SPICE.replace(
            "<topology",
            "<numa><cell id='0' cpus='0-1' memory='2097152' unit='KiB'/></numa><topology",
        );
        let def = VmDefinition {
            memory_gb: 4,
            ..unsupported_network()
        };
        let err = patch(&numa, &def, &resolved(&def)).unwrap_err();
        assert!(
            matches!(
                err,
                PatchError::Unsupported {
                    field: "memory_gb",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn malformed_xml_is_an_error() {
        let def = definition();
        assert!(matches!(
            patch("<domain>", &def, &resolved(&def)),
            Err(PatchError::Parse(ParseError::Malformed(_)))
        ));
    }
}
