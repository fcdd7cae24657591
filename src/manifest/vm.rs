//! The `vms.json` manifest: its types (which also generate the JSON Schema), loading with
//! positioned diagnostics, and the stable atomic saver that capture writes through.
//!
//! Optional fields are `Option`s so that a manifest survives load and save exactly as its
//! author wrote it: an explicit `"tpm": "none"` stays explicit. Everything that needs the
//! effective value asks the accessor (`tpm()`, `virt_type()`, ...), which is the one place
//! where the defaults of SPEC.md live.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The name of the manifest file inside the manifest directory.
pub const FILE_NAME: &str = "vms.json";

/// The `$schema` value of the examples in this repository.
pub const SCHEMA_REF: &str = "../schemas/vms.schema.json";

/// The schema file that capture writes beside a manifest it creates, and that manifest's
/// `$schema`.
pub const SCHEMA_FILE_NAME: &str = "vms.schema.json";

/// The vms.json manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "VmManifest")]
pub struct VmManifest {
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// VM definitions keyed by VM name; the name is the libvirt domain name.
    pub vms: BTreeMap<String, VmDefinition>,
}

/// A single VM definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VmDefinition {
    /// Memory in GiB.
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub memory_gb: u32,
    /// Number of virtual CPUs.
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub vcpus: u32,
    /// Absolute path of the VM's disk image (`~` is expanded).
    pub disk_path: String,
    /// Size in GiB used when the disk is provisioned; never used to resize.
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub disk_size_gb: u32,
    /// Provision disk_path if missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "bool", extend("default" = false))]
    pub create_if_missing: Option<bool>,
    /// Firmware.
    pub boot: Boot,
    /// Emulated TPM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Tpm", extend("default" = "none"))]
    pub tpm: Option<Tpm>,
    /// A libvirt network name, `bridge:NAME` for a host bridge, or `none`.
    pub network: String,
    /// Graphical console.
    pub graphics: Graphics,
    /// Installer ISOs, attached as read-only CD-ROMs in this order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<IsoSource>")]
    pub iso_sources: Option<Vec<IsoSource>>,
    /// Start the VM when the host boots (`virsh autostart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "bool", extend("default" = false))]
    pub autostart: Option<bool>,
    /// `host-passthrough`, `host-model` or a libvirt CPU model name (default: `host-passthrough` under kvm, libvirt's own under qemu).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub cpu_model: Option<String>,
    /// Domain type: `kvm`, or `qemu` for software emulation where KVM is not usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "VirtType", extend("default" = "kvm"))]
    pub virt_type: Option<VirtType>,
    /// UEFI Secure Boot (needs `boot: "uefi"`; implies SMM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "bool", extend("default" = false))]
    pub secure_boot: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Boot {
    Uefi,
    Bios,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Tpm {
    #[serde(rename = "2.0")]
    V2_0,
    #[default]
    #[serde(rename = "none")]
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Graphics {
    Spice,
    Vnc,
    None,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VirtType {
    #[default]
    Kvm,
    Qemu,
}

/// An installer ISO source: a local file, or a URL whose download lives in the ISO cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum IsoSource {
    Path {
        path: String,
    },
    Url {
        url: String,
        /// SHA-256 of the file (64 hexadecimal digits); `bkt vm fetch-iso` accepts a download only when it matches.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schemars(with = "String")]
        sha256: Option<String>,
    },
}

/// What the `network` field means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network<'a> {
    /// `<interface type='network'>` on this libvirt network.
    Libvirt(&'a str),
    /// `<interface type='bridge'>` on this host bridge.
    Bridge(&'a str),
    /// No network interface.
    None,
}

impl Network<'_> {
    pub const BRIDGE_PREFIX: &'static str = "bridge:";
    pub const NONE: &'static str = "none";
}

/// The CPU model that libvirt records for a `type='qemu'` domain without a `<cpu>` element.
pub const QEMU_DEFAULT_CPU_MODEL: &str = "qemu64";
pub const HOST_PASSTHROUGH: &str = "host-passthrough";
pub const HOST_MODEL: &str = "host-model";

impl VmDefinition {
    /// A definition with the required fields and every optional field absent (its default).
    pub fn new(
        memory_gb: u32,
        vcpus: u32,
        disk_path: impl Into<String>,
        disk_size_gb: u32,
        boot: Boot,
        network: impl Into<String>,
        graphics: Graphics,
    ) -> VmDefinition {
        VmDefinition {
            memory_gb,
            vcpus,
            disk_path: disk_path.into(),
            disk_size_gb,
            create_if_missing: None,
            boot,
            tpm: None,
            network: network.into(),
            graphics,
            iso_sources: None,
            autostart: None,
            cpu_model: None,
            virt_type: None,
            secure_boot: None,
        }
    }

    pub fn create_if_missing(&self) -> bool {
        self.create_if_missing.unwrap_or(false)
    }

    pub fn tpm(&self) -> Tpm {
        self.tpm.unwrap_or_default()
    }

    pub fn iso_sources(&self) -> &[IsoSource] {
        self.iso_sources.as_deref().unwrap_or(&[])
    }

    pub fn autostart(&self) -> bool {
        self.autostart.unwrap_or(false)
    }

    pub fn virt_type(&self) -> VirtType {
        self.virt_type.unwrap_or_default()
    }

    pub fn secure_boot(&self) -> bool {
        self.secure_boot.unwrap_or(false)
    }

    /// The effective CPU model; `None` means libvirt's own default (no `<cpu>` element),
    /// which is the default under `virt_type: "qemu"`.
    pub fn cpu_model(&self) -> Option<&str> {
        match (&self.cpu_model, self.virt_type()) {
            (Some(model), _) => Some(model),
            (None, VirtType::Kvm) => Some(HOST_PASSTHROUGH),
            (None, VirtType::Qemu) => None,
        }
    }

    pub fn network(&self) -> Network<'_> {
        if self.network == Network::NONE {
            Network::None
        } else if let Some(bridge) = self.network.strip_prefix(Network::BRIDGE_PREFIX) {
            Network::Bridge(bridge)
        } else {
            Network::Libvirt(&self.network)
        }
    }

    /// The same definition with every optional field that holds its default removed: the
    /// form that capture writes, and what two definitions with the same effective values
    /// share.
    pub fn normalized(&self) -> VmDefinition {
        fn unless<T: PartialEq>(value: Option<T>, default: T) -> Option<T> {
            value.filter(|v| *v != default)
        }
        let cpu_model = match (&self.cpu_model, self.virt_type()) {
            (Some(m), VirtType::Kvm) if m == HOST_PASSTHROUGH => None,
            (Some(m), VirtType::Qemu) if m == QEMU_DEFAULT_CPU_MODEL => None,
            (other, _) => other.clone(),
        };
        VmDefinition {
            create_if_missing: unless(self.create_if_missing, false),
            tpm: unless(self.tpm, Tpm::None),
            iso_sources: self.iso_sources.clone().filter(|v| !v.is_empty()),
            autostart: unless(self.autostart, false),
            cpu_model,
            virt_type: unless(self.virt_type, VirtType::Kvm),
            secure_boot: unless(self.secure_boot, false),
            ..self.clone()
        }
    }
}

// ---------------------------------------------------------------------------------------
// Schema, loading and validation.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use super::json;
use super::validate::{self, Diagnostic, JsonPath};
use crate::error::Error;

/// The JSON Schema of `vms.json`, generated from the types above.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(VmManifest)).expect("a schema is plain JSON")
}

/// The schema as it is checked in at `schemas/vms.schema.json` and printed by `bkt schema vms`.
pub fn schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&schema()).expect("a schema is plain JSON");
    text.push('\n');
    text
}

/// Where `vms.json` lives: the flag, else `$BKT_MANIFEST_DIR`, else `./manifests`.
pub fn manifest_dir(flag: Option<&Path>) -> PathBuf {
    match flag {
        Some(dir) => dir.to_path_buf(),
        None => match std::env::var_os("BKT_MANIFEST_DIR") {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => PathBuf::from("manifests"),
        },
    }
}

/// The user's home directory, for `~` in paths.
pub fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// Where downloaded installer ISOs live: `$XDG_CACHE_HOME/bkt/isos`, else `~/.cache/bkt/isos`.
pub fn iso_cache_dir(home: Option<&Path>) -> PathBuf {
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        _ => home.unwrap_or(Path::new("/")).join(".cache"),
    };
    cache.join("bkt").join("isos")
}

/// Expands a leading `~` or `~/` with `home`. Other forms (`~user/...`) are left as they are
/// (and are then not absolute, which validation reports).
pub fn expand_home(path: &str, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix('~'), home) {
        (Some(""), Some(home)) => home.to_path_buf(),
        (Some(rest), Some(home)) if rest.starts_with('/') => {
            home.join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(path),
    }
}

/// Reads and validates `vms.json` in `dir`.
pub fn load(dir: &Path) -> Result<VmManifest, Error> {
    let path = dir.join(FILE_NAME);
    let text = std::fs::read_to_string(&path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => Error::ManifestMissing { path: path.clone() },
        _ => Error::Read {
            path: path.clone(),
            source,
        },
    })?;
    parse(&text, home_dir().as_deref()).map_err(|diagnostics| Error::ManifestInvalid {
        file: path,
        diagnostics,
    })
}

/// Validates a manifest's text whole: syntax, shape (against [`schema`]), then the rules
/// the schema cannot say. Returns every problem found, in document order.
pub fn parse(text: &str, home: Option<&Path>) -> Result<VmManifest, Vec<Diagnostic>> {
    let root = json::parse(text)
        .map_err(|e| vec![Diagnostic::new(Some(e.pos), JsonPath::default(), e.message)])?;
    let mut diagnostics = validate::check(&schema(), &root);
    let vms_path = JsonPath::default().key("vms");
    if let Some(json::Member {
        value:
            json::Node {
                value: json::Value::Object(members),
                ..
            },
        ..
    }) = root.get("vms")
    {
        let mut disks: Vec<(PathBuf, &str)> = Vec::new();
        for member in members {
            let path = vms_path.key(&member.key);
            if let Some(message) = name_problem(&member.key) {
                diagnostics.push(Diagnostic::new(Some(member.key_pos), path.clone(), message));
            }
            let mut rules = Rules {
                vm: &member.value,
                path: &path,
                home,
                out: &mut diagnostics,
            };
            if let Some(disk) = rules.check() {
                if let Some((_, other)) = disks.iter().find(|(d, _)| *d == disk) {
                    let at = path.key("disk_path");
                    diagnostics.push(Diagnostic::new(
                        at.find(&root).map(|n| n.pos),
                        at,
                        format!("the same disk as VM \"{other}\" (two VMs must not share a disk)"),
                    ));
                }
                disks.push((disk, &member.key));
            }
        }
    }
    if !diagnostics.is_empty() {
        diagnostics.sort_by_key(|d| d.pos.map(|p| (p.line, p.col)));
        return Err(diagnostics);
    }
    // The schema and the rules above accept nothing that serde refuses; this error path
    // would be a bug, but it still reports instead of panicking.
    serde_json::from_value(root.to_serde())
        .map_err(|e| vec![Diagnostic::new(None, JsonPath::default(), e.to_string())])
}

/// Why `name` cannot be a VM (libvirt domain) name, if it cannot.
pub fn name_problem(name: &str) -> Option<String> {
    let len = name.chars().count();
    if !(1..=64).contains(&len) {
        return Some(format!(
            "VM name must be 1 to 64 characters long (it has {len})"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "VM name may hold only letters, digits, '.', '_' and '-', not {c:?}"
        ));
    }
    if name.starts_with(['.', '-']) {
        return Some("VM name must not start with '.' or '-'".into());
    }
    None
}

/// The rules of SPEC.md that a JSON Schema cannot express, checked on the positioned
/// document so that they run even on a VM that also has shape errors (each rule looks only
/// at fields of the right type; the schema check reports the others).
struct Rules<'a> {
    vm: &'a json::Node,
    path: &'a JsonPath,
    home: Option<&'a Path>,
    out: &'a mut Vec<Diagnostic>,
}

impl<'a> Rules<'a> {
    fn field(&self, key: &str) -> Option<&'a json::Node> {
        self.vm.get(key).map(|m| &m.value)
    }

    fn string(&self, key: &str) -> Option<&'a str> {
        match self.field(key) {
            Some(json::Node {
                value: json::Value::String(s),
                ..
            }) => Some(s),
            _ => None,
        }
    }

    fn report_at(&mut self, node: &json::Node, path: JsonPath, message: impl Into<String>) {
        self.out
            .push(Diagnostic::new(Some(node.pos), path, message));
    }

    fn report(&mut self, key: &str, message: impl Into<String>) {
        if let Some(node) = self.field(key) {
            self.report_at(node, self.path.key(key), message);
        }
    }

    /// Runs every rule; the expanded disk path when it is valid, for the shared-disk check.
    fn check(&mut self) -> Option<PathBuf> {
        let mut disk = None;
        if let Some(path) = self.string("disk_path") {
            match local_path_problem(path, self.home) {
                Some(message) => self.report("disk_path", message),
                None => disk = Some(expand_home(path, self.home)),
            }
        }
        if let Some(json::Value::Array(sources)) = self.field("iso_sources").map(|n| &n.value) {
            for (i, source) in sources.iter().enumerate() {
                let at = self.path.key("iso_sources").index(i);
                let members = ["path", "url", "sha256"].map(|k| source.get(k).map(|m| (k, m)));
                for (key, member) in members.into_iter().flatten() {
                    let json::Value::String(text) = &member.value.value else {
                        continue;
                    };
                    let problem = match key {
                        "path" => local_path_problem(text, self.home),
                        "url" => iso_url_file_name(text).err(),
                        _ => sha256_problem(text),
                    };
                    if let Some(message) = problem {
                        self.report_at(&member.value, at.key(key), message);
                    }
                }
            }
        }
        match self.string("network") {
            Some("") => self.report(
                "network",
                "must name a libvirt network, \"bridge:NAME\" or \"none\"",
            ),
            Some("bridge:") => self.report("network", "\"bridge:\" needs a bridge name"),
            Some(n) if has_control(n) => self.report("network", CONTROL),
            _ => {}
        }
        let qemu = self.string("virt_type") == Some("qemu");
        match self.string("cpu_model") {
            Some(m) if m.trim().is_empty() => self.report("cpu_model", "must not be empty"),
            Some(m) if has_control(m) => self.report("cpu_model", CONTROL),
            Some(HOST_PASSTHROUGH) if qemu => self.report(
                "cpu_model",
                "\"host-passthrough\" cannot start under virt_type \"qemu\" (software emulation); use \"host-model\", a named model, or leave cpu_model out",
            ),
            _ => {}
        }
        let secure = matches!(
            self.field("secure_boot").map(|n| &n.value),
            Some(json::Value::Bool(true))
        );
        if secure && self.string("boot") == Some("bios") {
            self.report("secure_boot", "needs boot \"uefi\"");
        }
        disk
    }
}

const CONTROL: &str = "must not contain control characters";

fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

fn local_path_problem(path: &str, home: Option<&Path>) -> Option<String> {
    if has_control(path) {
        return Some(CONTROL.into());
    }
    if path.starts_with('~') && home.is_none() {
        return Some("starts with ~ but HOME is not set".into());
    }
    let expanded = expand_home(path, home);
    if !expanded.is_absolute() {
        return Some(format!(
            "must be an absolute path (after ~ expansion), not \"{path}\""
        ));
    }
    if expanded.components().any(|c| c == Component::ParentDir) {
        return Some("must not contain \"..\"".into());
    }
    None
}

/// Why `text` is not a SHA-256 digest in hex, if it is not.
fn sha256_problem(text: &str) -> Option<String> {
    const WANT: &str = "must be a SHA-256 digest: 64 hexadecimal digits";
    let len = text.chars().count();
    if len != 64 {
        return Some(format!("{WANT}, not {len} characters"));
    }
    text.chars()
        .find(|c| !c.is_ascii_hexdigit())
        .map(|c| format!("{WANT}, not {c:?}"))
}

/// The file name that the ISO cache stores a URL source under, or why the URL is unusable.
pub fn iso_url_file_name(url: &str) -> Result<&str, String> {
    if has_control(url) || url.contains(char::is_whitespace) {
        return Err("must be a URL without spaces or control characters".into());
    }
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return Err("must be an http:// or https:// URL".into());
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return Err("URL has no host".into());
    }
    match path.rsplit('/').next() {
        Some(name) if !name.is_empty() && name != "." && name != ".." => Ok(name),
        _ => Err("URL must end in a file name (the ISO cache stores it under that name)".into()),
    }
}

// ---------------------------------------------------------------------------------------
// Saving.

/// The manifest as capture writes it: VMs sorted by name, fields in schema order, two-space
/// indent, final newline.
pub fn to_text(manifest: &VmManifest) -> String {
    let mut text = serde_json::to_string_pretty(manifest).expect("a manifest is plain JSON");
    text.push('\n');
    text
}

/// Writes `manifest` to `path` atomically: a temporary file in the same directory, flushed,
/// then renamed over the old one, so that a reader sees the old file or the new one, never
/// half of one. The old file's permissions are kept.
pub fn save(path: &Path, manifest: &VmManifest) -> Result<(), Error> {
    let write_error = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".vms.json.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(write_error)?;
    file.write_all(to_text(manifest).as_bytes())
        .map_err(write_error)?;
    // A new manifest is readable by all, like any file in a git checkout; a rewritten one
    // keeps its mode.
    let permissions = match std::fs::metadata(path) {
        Ok(meta) => meta.permissions(),
        Err(_) => std::os::unix::fs::PermissionsExt::from_mode(0o644),
    };
    file.as_file()
        .set_permissions(permissions)
        .map_err(write_error)?;
    file.as_file().sync_all().map_err(write_error)?;
    file.persist(path).map_err(|e| write_error(e.error))?;
    // Make the rename itself durable; a directory that cannot be opened only loses that.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
