//! Domain XML: render, parse and patch are one mapping.
//!
//! The manifest owns a small set of elements of a domain (see SPEC.md, "Domain XML"). The
//! three directions share one description of that set:
//! - [`render`] writes a complete domain for a new VM;
//! - [`parse`] reads the owned elements back into manifest values ([`Captured`]), and says
//!   for each field that cannot round-trip cleanly why not;
//! - [`patch`] edits `virsh dumpxml --inactive --security-info` output in place, changing
//!   an owned element only where its value differs from the manifest, so that everything the
//!   manifest does not own (UUID, MACs, addresses, extra devices, passwords, metadata,
//!   foreign namespaces, comments) survives exactly.
//!
//! The law that ties them together, checked by property tests: `parse(render(d))` gives `d`
//! back, and `parse(patch(x, d))` gives `d` back for any domain `x`.
//!
//! Documents are handled as a [`xot`] tree: it keeps elements, attributes, namespace
//! declarations, comments and their order as they were, which a typed re-rendering would not
//! (compare terraform-provider-libvirt, whose users lose their hand edits).

mod dom;
mod parse;
mod patch;
mod render;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::manifest::vm::{
    Boot, Graphics, IsoSource, Tpm, VirtType, VmDefinition, expand_home, iso_url_file_name,
};

pub use parse::parse;
pub use patch::{PatchError, patch};
pub use render::render;

/// The namespace of the element that [`render`] puts into `<metadata>` to mark a domain as
/// created by bkt (libvirt keeps metadata elements in a namespace of their own).
pub const METADATA_NAMESPACE: &str = "urn:bkt:vm:1";
/// The prefix and local name of that element: `<bkt:vm xmlns:bkt="urn:bkt:vm:1"/>`.
pub const METADATA_PREFIX: &str = "bkt";
pub const METADATA_ELEMENT: &str = "vm";

/// The format of a disk image, which the domain's disk driver must name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }

    /// The format that `qemu-img info` or a disk's `<driver type>` names, if bkt knows it.
    pub fn from_name(name: &str) -> Option<DiskFormat> {
        match name {
            "qcow2" => Some(DiskFormat::Qcow2),
            "raw" => Some(DiskFormat::Raw),
            _ => None,
        }
    }
}

impl fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An ISO source and the file that holds it (attached as a CD-ROM when that file exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedIso {
    pub source: IsoSource,
    pub path: String,
}

/// The facts about a VM that are not in its manifest entry but that its domain XML depends
/// on. The caller looks them up once (image format, ISO cache); render, patch and diff then
/// all agree on them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `disk_path` after `~` expansion.
    pub disk_path: String,
    /// The format of the image at `disk_path` (qcow2 for a disk that is yet to be created).
    pub disk_format: DiskFormat,
    /// The CD-ROMs, in manifest order: every local ISO whose file exists, and every URL
    /// source whose file is in the ISO cache.
    pub isos: Vec<AttachedIso>,
    /// URL sources left out because their file is not in the ISO cache. Leaving them out is
    /// not drift; the caller warns about them.
    pub left_out: Vec<String>,
    /// Local sources left out because their file does not exist; like `left_out`, not drift,
    /// and the caller warns.
    pub missing: Vec<AttachedIso>,
}

impl Resolved {
    /// Resolves `def`'s paths: `~` expands with `home`, and a URL source's file is
    /// `iso_cache/<file name>`. An ISO is attached only when `exists` says its file is there:
    /// this is the one place that decides which CD-ROMs a domain should have, so that sync,
    /// status and capture agree that a CD-ROM left out for a missing file is not drift.
    pub fn new(
        def: &VmDefinition,
        home: Option<&Path>,
        iso_cache: &Path,
        disk_format: DiskFormat,
        exists: impl Fn(&Path) -> bool,
    ) -> Resolved {
        let mut isos = Vec::new();
        let mut left_out = Vec::new();
        let mut missing = Vec::new();
        for source in def.iso_sources() {
            let path = match source {
                IsoSource::Path { path } => Some(expand_home(path, home)),
                IsoSource::Url { url, .. } => {
                    iso_url_file_name(url).ok().map(|name| iso_cache.join(name))
                }
            };
            let found = path.as_deref().is_some_and(&exists);
            let iso = |path: PathBuf| AttachedIso {
                source: source.clone(),
                path: path.to_string_lossy().into_owned(),
            };
            match (path, source) {
                (Some(path), _) if found => isos.push(iso(path)),
                (_, IsoSource::Url { url, .. }) => left_out.push(url.clone()),
                (Some(path), IsoSource::Path { .. }) => missing.push(iso(path)),
                (None, IsoSource::Path { .. }) => {}
            }
        }
        Resolved {
            disk_path: expand_home(&def.disk_path, home)
                .to_string_lossy()
                .into_owned(),
            disk_format,
            isos,
            left_out,
            missing,
        }
    }

    /// The attached ISO files, in order.
    pub fn iso_paths(&self) -> Vec<&str> {
        self.isos.iter().map(|iso| iso.path.as_str()).collect()
    }
}

/// What a domain says about one manifest field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field<T> {
    /// The owned elements hold exactly this value.
    Clean(T),
    /// The managed element holds `value`, but the domain has more than the manifest can
    /// describe (e.g. several interfaces, of which the first is managed). Drift compares
    /// `value`; capture must not write it.
    Lossy { value: T, reason: String },
    /// The owned elements hold something no manifest value describes (e.g. memory that is
    /// not a whole GiB). It is drift against any manifest, and patch replaces it.
    Unsupported { reason: String },
}

impl<T> Field<T> {
    /// The value that drift compares, if there is one.
    pub fn value(&self) -> Option<&T> {
        match self {
            Field::Clean(value) | Field::Lossy { value, .. } => Some(value),
            Field::Unsupported { .. } => None,
        }
    }

    /// Why capture cannot write this field, if it cannot.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Field::Clean(_) => None,
            Field::Lossy { reason, .. } | Field::Unsupported { reason } => Some(reason),
        }
    }

    fn clean(&self) -> Option<&T> {
        match self {
            Field::Clean(value) => Some(value),
            _ => None,
        }
    }
}

/// A manifest field that a domain cannot give back cleanly, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: &'static str,
    pub reason: String,
}

/// Everything [`parse`] observed in a domain: the manifest fields that domain XML carries.
///
/// `disk_size_gb`, `create_if_missing` and `autostart` are not in domain XML (the image's
/// size, a provisioning wish, and libvirt's autostart link); capture takes them from
/// elsewhere, and [`Captured::merge_into`] keeps them from the definition it starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// The domain's `<name>`.
    pub name: Option<String>,
    /// Whether `<metadata>` holds bkt's marker (a domain that bkt created). Never part of
    /// the manifest.
    pub bkt_marker: bool,
    pub virt_type: Field<VirtType>,
    pub memory_gb: Field<u32>,
    pub vcpus: Field<u32>,
    pub disk_path: Field<String>,
    /// The managed disk's driver type. Not a manifest field, but drift: it must match the
    /// image's real format.
    pub disk_format: Field<DiskFormat>,
    pub boot: Field<Boot>,
    pub secure_boot: Field<bool>,
    pub tpm: Field<Tpm>,
    /// In manifest spelling: a network name, `bridge:NAME` or `none`.
    pub network: Field<String>,
    pub graphics: Field<Graphics>,
    /// The files of the CD-ROMs that hold ISOs, in document order.
    pub iso_paths: Vec<String>,
    /// `None` is libvirt's default CPU (no `<cpu>` model; `qemu64` under `virt_type: qemu`).
    pub cpu_model: Field<Option<String>>,
}

impl Captured {
    /// Every manifest field that cannot be captured cleanly, with the reason.
    pub fn problems(&self) -> Vec<Problem> {
        let reasons = [
            ("virt_type", self.virt_type.reason()),
            ("memory_gb", self.memory_gb.reason()),
            ("vcpus", self.vcpus.reason()),
            ("disk_path", self.disk_path.reason()),
            ("boot", self.boot.reason()),
            ("secure_boot", self.secure_boot.reason()),
            ("tpm", self.tpm.reason()),
            ("network", self.network.reason()),
            ("graphics", self.graphics.reason()),
            ("cpu_model", self.cpu_model.reason()),
        ];
        reasons
            .into_iter()
            .filter_map(|(field, reason)| {
                reason.map(|r| Problem {
                    field,
                    reason: r.to_owned(),
                })
            })
            .collect()
    }

    /// `base` with every field that this domain determines cleanly replaced by the observed
    /// value, in normalized form: what capture writes. A field with a problem keeps `base`'s
    /// value and is listed. Fields that domain XML does not carry come from `base`, and so
    /// does the spelling of ISO sources: a CD-ROM whose file is what one of `base`'s sources
    /// resolves to (`resolved`, built from `base`) keeps that source (`~/...`, or a URL);
    /// any other becomes a `path` source. Sources that `resolved` left out for a missing file
    /// stay as they are (URL, `sha256`), at the end.
    pub fn merge_into(
        &self,
        base: &VmDefinition,
        resolved: &Resolved,
    ) -> (VmDefinition, Vec<Problem>) {
        let mut def = base.clone();
        if let Some(v) = self.virt_type.clean() {
            def.virt_type = Some(*v);
        }
        if let Some(v) = self.memory_gb.clean() {
            def.memory_gb = *v;
        }
        if let Some(v) = self.vcpus.clean() {
            def.vcpus = *v;
        }
        if let Some(v) = self.disk_path.clean()
            && *v != resolved.disk_path
        {
            def.disk_path = v.clone();
        }
        if let Some(v) = self.boot.clean() {
            def.boot = *v;
        }
        if let Some(v) = self.secure_boot.clean() {
            def.secure_boot = Some(*v);
        }
        if let Some(v) = self.tpm.clean() {
            def.tpm = Some(*v);
        }
        if let Some(v) = self.network.clean() {
            def.network = v.clone();
        }
        if let Some(v) = self.graphics.clean() {
            def.graphics = *v;
        }
        if let Some(v) = self.cpu_model.clean() {
            def.cpu_model = v.clone();
        }
        if self.iso_paths != resolved.iso_paths() {
            let mut sources: Vec<IsoSource> = self
                .iso_paths
                .iter()
                .map(|path| {
                    resolved
                        .isos
                        .iter()
                        .chain(&resolved.missing)
                        .find(|iso| iso.path == *path)
                        .map(|iso| iso.source.clone())
                        .unwrap_or_else(|| IsoSource::Path { path: path.clone() })
                })
                .collect();
            let attached = |s: &IsoSource| resolved.isos.iter().any(|iso| iso.source == *s);
            let kept: Vec<IsoSource> = base
                .iso_sources()
                .iter()
                .filter(|s| !attached(s) && !sources.contains(s))
                .cloned()
                .collect();
            sources.extend(kept);
            def.iso_sources = Some(sources);
        }
        (def.normalized(), self.problems())
    }
}

/// Why a text is not a domain XML that parse can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not well-formed XML.
    Malformed(String),
    /// Well-formed, but the root element is not `<domain>`.
    NotADomain(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Malformed(e) => write!(f, "domain XML is not well-formed: {e}"),
            ParseError::NotADomain(root) => {
                write!(
                    f,
                    "not a domain XML: the root element is <{root}>, not <domain>"
                )
            }
        }
    }
}

impl std::error::Error for ParseError {}
