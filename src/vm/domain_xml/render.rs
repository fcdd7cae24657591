//! Render: a complete domain XML for a new VM.
//!
//! Each managed device is written by one function here, and [`super::patch`] calls the same
//! functions when it has to add or replace that device, so a device looks the same whether
//! it was created with the domain or patched in later. Everything else is left to libvirt's
//! defaults (controllers, addresses, MACs, UUID, memballoon, ...), which it fills in on
//! `define`.
//!
//! Every value from the manifest goes through [`escape`]: a manifest can never inject
//! markup.

use std::borrow::Cow;

use super::{METADATA_ELEMENT, METADATA_NAMESPACE, METADATA_PREFIX, Resolved};
use crate::manifest::vm::{
    Graphics, HOST_MODEL, HOST_PASSTHROUGH, Network, VirtType, VmDefinition,
};

/// The SATA target names of the CD-ROMs (`sda`, `sdb`, ...) and the managed disk's target.
pub(super) const CDROM_TARGET_PREFIX: &str = "sd";
pub(super) const DISK_TARGET_PREFIX: &str = "vd";

/// The domain XML of a new VM `name` (a valid domain name) described by `def`, with the
/// facts in `resolved`.
pub fn render(name: &str, def: &VmDefinition, resolved: &Resolved) -> String {
    let mut w = Writer::new(0);
    w.open("domain", &[("type", virt_type_name(def.virt_type()))]);
    w.leaf("name", &[], name);
    w.open("metadata", &[]);
    let marker = format!("{METADATA_PREFIX}:{METADATA_ELEMENT}");
    let xmlns = format!("xmlns:{METADATA_PREFIX}");
    w.empty(&marker, &[(&xmlns, METADATA_NAMESPACE)]);
    w.close("metadata");
    let kib = memory_kib(def.memory_gb);
    w.leaf("memory", &[("unit", "KiB")], &kib);
    w.leaf("currentMemory", &[("unit", "KiB")], &kib);
    w.leaf("vcpu", &[("placement", "static")], &def.vcpus.to_string());

    w.open("os", &firmware_attr(def));
    w.leaf("type", &[("arch", "x86_64"), ("machine", "q35")], "hvm");
    if def.boot == crate::manifest::vm::Boot::Uefi {
        firmware_features(&mut w, def.secure_boot());
    }
    w.empty("boot", &[("dev", "hd")]);
    if !resolved.isos.is_empty() {
        // An empty disk fails to boot, and the installer on the CD-ROM starts.
        w.empty("boot", &[("dev", "cdrom")]);
    }
    w.close("os");

    w.open("features", &[]);
    w.empty("acpi", &[]);
    w.empty("apic", &[]);
    if def.secure_boot() {
        smm(&mut w);
    }
    w.close("features");

    let normalized = def.normalized();
    cpu(&mut w, normalized.cpu_model(), def.vcpus);

    w.open("devices", &[]);
    disk(
        &mut w,
        &resolved.disk_path,
        resolved.disk_format.as_str(),
        &target_name(DISK_TARGET_PREFIX, 0),
    );
    for (i, iso) in resolved.isos.iter().enumerate() {
        cdrom(&mut w, &iso.path, &target_name(CDROM_TARGET_PREFIX, i));
    }
    if let Some(network) = attachment(&def.network()) {
        interface(&mut w, network);
    }
    match def.graphics {
        Graphics::Spice | Graphics::Vnc => {
            graphics(&mut w, def.graphics);
            video(&mut w, def.graphics);
            if def.graphics == Graphics::Spice {
                spice_agent_channel(&mut w);
            }
            tablet(&mut w);
        }
        Graphics::None => {
            serial(&mut w);
            console(&mut w);
        }
    }
    if def.tpm() == crate::manifest::vm::Tpm::V2_0 {
        tpm(&mut w);
    }
    w.close("devices");
    w.close("domain");
    w.finish()
}

pub(super) fn virt_type_name(virt_type: VirtType) -> &'static str {
    match virt_type {
        VirtType::Kvm => "kvm",
        VirtType::Qemu => "qemu",
    }
}

pub(super) fn memory_kib(memory_gb: u32) -> String {
    (u64::from(memory_gb) * 1024 * 1024).to_string()
}

fn firmware_attr(def: &VmDefinition) -> Vec<(&'static str, &'static str)> {
    match def.boot {
        crate::manifest::vm::Boot::Uefi => vec![("firmware", "efi")],
        crate::manifest::vm::Boot::Bios => vec![],
    }
}

/// The firmware features that make libvirt's firmware autoselection deterministic: Secure
/// Boot with Microsoft's keys enrolled, or explicitly neither (without a feature list libvirt
/// picks the first firmware that fits, which on Debian is the Secure Boot one).
pub(super) fn firmware_features(w: &mut Writer, secure_boot: bool) {
    let enabled = if secure_boot { "yes" } else { "no" };
    w.open("firmware", &[]);
    w.empty(
        "feature",
        &[("enabled", enabled), ("name", "enrolled-keys")],
    );
    w.empty("feature", &[("enabled", enabled), ("name", "secure-boot")]);
    w.close("firmware");
}

pub(super) fn smm(w: &mut Writer) {
    w.empty("smm", &[("state", "on")]);
}

/// `<cpu>`: the model (`None`: libvirt's default, so no mode and no model) and a topology of
/// one socket. Without a topology libvirt gives every vCPU a socket of its own, and Windows
/// client editions use at most two sockets.
pub(super) fn cpu(w: &mut Writer, model: Option<&str>, vcpus: u32) {
    match model {
        Some(mode @ (HOST_PASSTHROUGH | HOST_MODEL)) => w.open("cpu", &[("mode", mode)]),
        Some(_) => w.open("cpu", &[("mode", "custom")]),
        None => w.open("cpu", &[]),
    }
    if let Some(model) = model.filter(|m| ![HOST_PASSTHROUGH, HOST_MODEL].contains(m)) {
        cpu_model(w, model);
    }
    topology(w, vcpus);
    w.close("cpu");
}

pub(super) fn cpu_model(w: &mut Writer, model: &str) {
    w.leaf("model", &[], model);
}

pub(super) fn topology(w: &mut Writer, vcpus: u32) {
    let cores = vcpus.to_string();
    w.empty(
        "topology",
        &[
            ("sockets", "1"),
            ("dies", "1"),
            ("cores", &cores),
            ("threads", "1"),
        ],
    );
}

pub(super) fn disk(w: &mut Writer, path: &str, format: &str, target: &str) {
    w.open("disk", &[("type", "file"), ("device", "disk")]);
    w.empty("driver", &[("name", "qemu"), ("type", format)]);
    w.empty("source", &[("file", path)]);
    w.empty("target", &[("dev", target), ("bus", "virtio")]);
    w.close("disk");
}

pub(super) fn cdrom(w: &mut Writer, path: &str, target: &str) {
    w.open("disk", &[("type", "file"), ("device", "cdrom")]);
    w.empty("driver", &[("name", "qemu"), ("type", "raw")]);
    w.empty("source", &[("file", path)]);
    w.empty("target", &[("dev", target), ("bus", "sata")]);
    w.empty("readonly", &[]);
    w.close("disk");
}

/// How an interface attaches: `(interface type, source attribute, name)`; `None` for no
/// interface.
pub(super) fn attachment<'a>(
    network: &Network<'a>,
) -> Option<(&'static str, &'static str, &'a str)> {
    match *network {
        Network::Libvirt(name) => Some(("network", "network", name)),
        Network::Bridge(name) => Some(("bridge", "bridge", name)),
        Network::None => None,
    }
}

pub(super) fn interface(w: &mut Writer, (kind, attr, name): (&str, &str, &str)) {
    w.open("interface", &[("type", kind)]);
    interface_source(w, (kind, attr, name));
    w.empty("model", &[("type", "virtio")]);
    w.close("interface");
}

pub(super) fn interface_source(w: &mut Writer, (_, attr, name): (&str, &str, &str)) {
    w.empty("source", &[(attr, name)]);
}

pub(super) fn graphics_name(graphics: Graphics) -> &'static str {
    match graphics {
        Graphics::Spice => "spice",
        Graphics::Vnc => "vnc",
        Graphics::None => "none",
    }
}

pub(super) fn graphics(w: &mut Writer, graphics: Graphics) {
    w.empty(
        "graphics",
        &[("type", graphics_name(graphics)), ("autoport", "yes")],
    );
}

/// The video device that goes with `graphics`: QXL for SPICE; for VNC the standard VGA,
/// which every guest and both firmwares drive without extra drivers.
pub(super) fn video(w: &mut Writer, graphics: Graphics) {
    w.open("video", &[]);
    video_model(w, graphics);
    w.close("video");
}

pub(super) fn video_model(w: &mut Writer, graphics: Graphics) {
    let model = match graphics {
        Graphics::Spice => "qxl",
        _ => "vga",
    };
    w.empty("model", &[("type", model)]);
}

/// The channel of the SPICE guest agent (clipboard, display resizing).
pub(super) fn spice_agent_channel(w: &mut Writer) {
    w.open("channel", &[("type", "spicevmc")]);
    w.empty(
        "target",
        &[("type", "virtio"), ("name", "com.redhat.spice.0")],
    );
    w.close("channel");
}

/// An absolute pointer, so that the mouse follows the client's without grabbing.
pub(super) fn tablet(w: &mut Writer) {
    w.empty("input", &[("type", "tablet"), ("bus", "usb")]);
}

pub(super) fn serial(w: &mut Writer) {
    w.open("serial", &[("type", "pty")]);
    w.empty("target", &[("port", "0")]);
    w.close("serial");
}

pub(super) fn console(w: &mut Writer) {
    w.open("console", &[("type", "pty")]);
    w.empty("target", &[("type", "serial"), ("port", "0")]);
    w.close("console");
}

pub(super) fn tpm(w: &mut Writer) {
    w.open("tpm", &[("model", "tpm-crb")]);
    w.empty("backend", &[("type", "emulator"), ("version", "2.0")]);
    w.close("tpm");
}

/// The target name of the `index`th disk on a bus: `vda` ... `vdz`, `vdaa`, ... (libvirt's
/// scheme).
pub(super) fn target_name(prefix: &str, index: usize) -> String {
    let mut letters = Vec::new();
    let mut i = index;
    loop {
        letters.push(b'a' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    letters.reverse();
    format!("{prefix}{}", String::from_utf8_lossy(&letters))
}

/// The index of a target name with `prefix` (the inverse of [`target_name`]).
pub(super) fn target_index(prefix: &str, name: &str) -> Option<usize> {
    let letters = name.strip_prefix(prefix)?;
    if letters.is_empty() || !letters.bytes().all(|b| b.is_ascii_lowercase()) {
        return None;
    }
    // Bijective base 26: a = 1, ..., z = 26, aa = 27, ...
    letters
        .bytes()
        .try_fold(0usize, |acc, b| {
            acc.checked_mul(26)?.checked_add(usize::from(b - b'a') + 1)
        })
        .map(|n| n - 1)
}

/// Writes indented XML, escaping every attribute value and text.
pub(super) struct Writer {
    out: String,
    depth: usize,
}

impl Writer {
    /// A writer whose first element sits `depth` levels deep.
    pub fn new(depth: usize) -> Writer {
        Writer {
            out: String::new(),
            depth,
        }
    }

    fn start(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.out.push_str(&"  ".repeat(self.depth));
        self.out.push('<');
        self.out.push_str(name);
        for (key, value) in attrs {
            self.out.push(' ');
            self.out.push_str(key);
            self.out.push_str("='");
            self.out.push_str(&escape(value));
            self.out.push('\'');
        }
    }

    pub fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.start(name, attrs);
        self.out.push_str(">\n");
        self.depth += 1;
    }

    pub fn close(&mut self, name: &str) {
        self.depth = self.depth.saturating_sub(1);
        self.out.push_str(&"  ".repeat(self.depth));
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    pub fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.start(name, attrs);
        self.out.push_str("/>\n");
    }

    pub fn leaf(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        self.start(name, attrs);
        self.out.push('>');
        self.out.push_str(&escape(text));
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push_str(">\n");
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Escapes the five XML special characters, for text and for attribute values in either
/// quote.
pub(super) fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['&', '<', '>', '\'', '"']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_follow_libvirt() {
        for (i, name) in [
            (0, "sda"),
            (25, "sdz"),
            (26, "sdaa"),
            (27, "sdab"),
            (702, "sdaaa"),
        ] {
            assert_eq!(target_name("sd", i), name);
            assert_eq!(target_index("sd", name), Some(i));
        }
        assert_eq!(target_index("sd", "vda"), None);
        assert_eq!(target_index("sd", "sd1"), None);
        assert_eq!(target_index("sd", "sd"), None);
    }

    #[test]
    fn escape_covers_markup() {
        assert_eq!(escape(r#"a'b"c<d>e&f"#), "a&apos;b&quot;c&lt;d&gt;e&amp;f");
        assert!(matches!(escape("plain"), Cow::Borrowed("plain")));
    }
}
