//! parse and patch over the real libvirt domain XMLs in ../shared/fixtures/libvirt-domains
//! (libvirt 9.9.0's own test data; see the README there).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bkt::manifest::vm::{Boot, Graphics, IsoSource, Tpm, VirtType, VmDefinition};
use bkt::vm::diff::diff;
use bkt::vm::domain_xml::{Captured, DiskFormat, PatchError, Resolved, parse, patch};
use common::{manifest_dir, same_document, schema_errors};
use xot::{Node, Xot};

fn fixtures() -> Vec<(String, String)> {
    let dir = manifest_dir().join("../shared/fixtures/libvirt-domains");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "the libvirt domain fixtures are missing at {} ({e}); CI puts shared/ beside the checkout",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        400,
        "expected the 400 fixtures in {}",
        dir.display()
    );
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// A definition from everything `captured` holds cleanly (dummy values elsewhere), with the
/// facts that patching it back needs.
fn definition_of(captured: &Captured) -> (VmDefinition, Resolved) {
    let skeleton = VmDefinition::new(
        1,
        1,
        "/skeleton.qcow2",
        1,
        Boot::Bios,
        "none",
        Graphics::None,
    );
    let format = captured
        .disk_format
        .value()
        .copied()
        .unwrap_or(DiskFormat::Qcow2);
    let (def, _) = captured.merge_into(&skeleton, &resolve(&skeleton, format));
    let resolved = resolve(&def, format);
    (def, resolved)
}

fn resolve(def: &VmDefinition, format: DiskFormat) -> Resolved {
    Resolved::new(def, None, Path::new("/cache"), format, |_| true)
}

/// A definition that differs from `def` in every field domain XML carries; `variant` picks
/// among the other values of the fields that have more than two.
fn modified(def: &VmDefinition, format: DiskFormat, variant: usize) -> (VmDefinition, DiskFormat) {
    let graphics = [Graphics::Spice, Graphics::Vnc, Graphics::None];
    let next_graphics = graphics
        .iter()
        .cycle()
        .skip_while(|g| **g != def.graphics)
        .nth(1 + variant % 2)
        .copied()
        .unwrap_or(Graphics::Spice);
    let networks = ["default", "bridge:br-test", "none"];
    let network = networks
        .iter()
        .find(|n| **n != def.network && networks.iter().position(|m| m == *n) != Some(variant % 3))
        .unwrap_or(&"default")
        .to_string();
    let boot = match def.boot {
        Boot::Uefi => Boot::Bios,
        Boot::Bios => Boot::Uefi,
    };
    let virt_type = match def.virt_type() {
        VirtType::Kvm => VirtType::Qemu,
        VirtType::Qemu => VirtType::Kvm,
    };
    let cpu_model = match def.cpu_model() {
        Some("host-model") => "Skylake-Client",
        _ => "host-model",
    };
    let isos: Vec<IsoSource> = (0..(def.iso_sources().len() + 1 + variant) % 4)
        .map(|i| IsoSource::Path {
            path: format!("/isos/patched-{variant}-{i}.iso"),
        })
        .collect();
    let new = VmDefinition {
        memory_gb: def.memory_gb + 1,
        vcpus: def.vcpus + 1,
        disk_path: format!("/var/lib/libvirt/images/patched-{variant}.qcow2"),
        boot,
        tpm: Some(match def.tpm() {
            Tpm::V2_0 => Tpm::None,
            Tpm::None => Tpm::V2_0,
        }),
        network,
        graphics: next_graphics,
        iso_sources: Some(isos),
        cpu_model: Some(cpu_model.into()),
        virt_type: Some(virt_type),
        secure_boot: Some(boot == Boot::Uefi && variant.is_multiple_of(2)),
        ..def.clone()
    };
    let format = match format {
        DiskFormat::Qcow2 => DiskFormat::Raw,
        DiskFormat::Raw => DiskFormat::Qcow2,
    };
    (new, format)
}

/// Patches `xml` to `def`. Where bkt refuses to resize a NUMA guest, the test keeps its
/// memory and vCPUs as they are; `None` when even that is refused (the domain's own value
/// is not one the manifest can hold).
fn patch_to(
    xml: &str,
    def: &mut VmDefinition,
    current: &VmDefinition,
    resolved: &Resolved,
) -> Option<String> {
    let mut refused = Vec::new();
    loop {
        match patch(xml, def, resolved) {
            Ok(patched) => return Some(patched),
            Err(PatchError::Unsupported { field, .. }) if !refused.contains(&field) => {
                refused.push(field);
                match field {
                    "memory_gb" => def.memory_gb = current.memory_gb,
                    "vcpus" => def.vcpus = current.vcpus,
                    other => panic!("patch refused {other}"),
                }
            }
            Err(PatchError::Unsupported { .. }) => return None,
            Err(e) => panic!("patch failed: {e}"),
        }
    }
}

/// One of the modified definitions of a fixture, and the fixture patched to it.
struct Variant {
    variant: usize,
    def: VmDefinition,
    resolved: Resolved,
    /// `None` where patch refused (see [`patch_to`]).
    patched: Option<String>,
}

fn variants(xml: &str) -> Vec<Variant> {
    let captured = parse(xml).unwrap();
    let (current, _) = definition_of(&captured);
    let format = captured
        .disk_format
        .value()
        .copied()
        .unwrap_or(DiskFormat::Qcow2);
    (0..3)
        .map(|variant| {
            let (mut def, format) = modified(&current, format, variant);
            let resolved = resolve(&def, format);
            let patched = patch_to(xml, &mut def, &current, &resolved);
            Variant {
                variant,
                def,
                resolved,
                patched,
            }
        })
        .collect()
}

/// A whitespace-insensitive serialization of a document, minus the elements `strip` picks.
fn canonical(xml: &str, mut strip: impl FnMut(&Xot, Node) -> bool) -> String {
    let mut xot = Xot::new();
    let doc = xot.parse(xml).unwrap();
    let doomed: Vec<Node> = xot
        .descendants(doc)
        .filter(|&n| xot.is_element(n) && strip(&xot, n))
        .collect();
    for node in doomed {
        if !xot.is_removed(node) {
            xot.remove(node).unwrap();
        }
    }
    xot.remove_insignificant_whitespace(doc);
    xot.to_string(doc).unwrap()
}

fn name_of(xot: &Xot, node: Node) -> &str {
    xot.element(node)
        .map(|e| xot.local_name_str(e.name()))
        .unwrap_or_default()
}

fn attr<'a>(xot: &'a Xot, node: Node, name: &str) -> Option<&'a str> {
    xot.name(name).and_then(|n| xot.get_attribute(node, n))
}

fn parent_name(xot: &Xot, node: Node) -> &str {
    xot.parent(node)
        .map(|p| name_of(xot, p))
        .unwrap_or_default()
}

/// The document without what the manifest owns, or what patch may change along with it.
fn unowned(xml: &str, all_interfaces: bool) -> String {
    let managed_disk = {
        let mut xot = Xot::new();
        let doc = xot.parse(xml).unwrap();
        xot.descendants(doc)
            .filter(|&n| name_of(&xot, n) == "disk" && parent_name(&xot, n) == "devices")
            .position(|n| attr(&xot, n, "device").unwrap_or("disk") == "disk")
    };
    let mut disk_index = 0;
    let mut seen_interface = false;
    let mut x = Xot::new();
    let doc = x.parse(xml).unwrap();
    let domain = x.document_element(doc).unwrap();
    let ty = x.add_name("type");
    x.remove_attribute(domain, ty);
    let os = x.children(domain).find(|&n| name_of(&x, n) == "os");
    if let Some(os) = os {
        let firmware = x.add_name("firmware");
        x.remove_attribute(os, firmware);
    }
    let xml = x.to_string(doc).unwrap();
    canonical(&xml, |xot, n| {
        let name = name_of(xot, n);
        match (parent_name(xot, n), name) {
            ("domain", "memory" | "currentMemory" | "vcpu" | "cpu") => true,
            ("os", "firmware" | "loader" | "nvram") => true,
            ("features", "smm") => true,
            // Patch creates <features> to hold <smm>.
            ("domain", "features") => xot
                .children(n)
                .filter(|&c| xot.is_element(c))
                .all(|c| name_of(xot, c) == "smm"),
            ("devices", "disk") => {
                let index = disk_index;
                disk_index += 1;
                let file = attr(xot, n, "type").unwrap_or("file") == "file";
                let has_source = xot
                    .children(n)
                    .any(|c| name_of(xot, c) == "source" && attr(xot, c, "file").is_some());
                Some(index) == managed_disk
                    || (attr(xot, n, "device") == Some("cdrom") && file && has_source)
            }
            ("devices", "interface") => {
                let first = !seen_interface;
                seen_interface = true;
                first || all_interfaces
            }
            ("devices", "graphics" | "video" | "audio" | "tpm" | "serial" | "console") => true,
            ("devices", "input") => attr(xot, n, "type") == Some("tablet"),
            ("devices", _) => matches!(attr(xot, n, "type"), Some("spicevmc" | "spiceport")),
            _ => false,
        }
    })
}

/// An attribute of the first `<devices>` child `device`, or of that device's first child
/// `child`.
fn first_device_attr(xml: &str, device: &str, child: Option<&str>, name: &str) -> Option<String> {
    let mut xot = Xot::new();
    let doc = xot.parse(xml).unwrap();
    let node = xot
        .descendants(doc)
        .find(|&n| name_of(&xot, n) == device && parent_name(&xot, n) == "devices")?;
    let node = match child {
        Some(child) => xot.children(node).find(|&c| name_of(&xot, c) == child)?,
        None => node,
    };
    attr(&xot, node, name).map(str::to_owned)
}

/// A reason with its numbers taken out, so that reasons of one kind count together.
fn reason_kind(field: &str, reason: &str) -> String {
    let mut out = format!("{field}: ");
    let mut in_number = false;
    for c in reason.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('N');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

#[test]
fn parse_reads_every_fixture_and_says_why_fields_do_not_round_trip() {
    let mut capturable = 0;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (name, xml) in fixtures() {
        let captured = parse(&xml).unwrap_or_else(|e| panic!("{name}: {e}"));
        let problems = captured.problems();
        if problems.is_empty() {
            capturable += 1;
        }
        let mut kinds: Vec<String> = problems
            .iter()
            .map(|p| reason_kind(p.field, &p.reason))
            .collect();
        kinds.dedup();
        for kind in kinds {
            *reasons.entry(kind).or_default() += 1;
        }
    }
    let listing: String = reasons
        .iter()
        .map(|(k, n)| format!("        ({n}, {k:?}),\n"))
        .collect();
    let expected: BTreeMap<String, usize> = EXPECTED_REASONS
        .iter()
        .map(|(n, k)| (k.to_string(), *n))
        .collect();
    assert_eq!(
        (capturable, &reasons),
        (EXPECTED_CAPTURABLE, &expected),
        "capturable: {capturable}; reasons:\n{listing}"
    );
}

/// How many fixtures round-trip cleanly, and how many fixtures have each kind of problem
/// (a fixture can have several).
const EXPECTED_CAPTURABLE: usize = 26;
const EXPECTED_REASONS: &[(usize, &str)] = &[
    (208, "disk_path: no disk"),
    (113, "disk_path: the first disk is type='block', not a file"),
    (8, "disk_path: the first disk is type='network', not a file"),
    (2, "disk_path: the first disk is type='nvme', not a file"),
    (
        2,
        "disk_path: the first disk is type='vhostuser', not a file",
    ),
    (
        1,
        "disk_path: the first disk is type='vhostvdpa', not a file",
    ),
    (
        5,
        "graphics: N graphics devices; the manifest describes only the first",
    ),
    (
        6,
        "graphics: graphics type 'dbus' (bkt knows spice and vnc)",
    ),
    (
        2,
        "graphics: graphics type 'egl-headless' (bkt knows spice and vnc)",
    ),
    (4, "graphics: graphics type 'sdl' (bkt knows spice and vnc)"),
    (242, "memory_gb: N KiB is not a whole number of GiB"),
    (
        15,
        "memory_gb: currentMemory (N KiB) differs from memory (N KiB): a balloon target",
    ),
    (
        1,
        "memory_gb: no <memory> element (the size comes from NUMA cells)",
    ),
    (
        6,
        "network: N interfaces; the manifest describes only the first",
    ),
    (
        1,
        "network: an interface type='client', neither on a libvirt network nor on a bridge",
    ),
    (
        11,
        "network: an interface type='ethernet', neither on a libvirt network nor on a bridge",
    ),
    (
        5,
        "network: an interface type='hostdev', neither on a libvirt network nor on a bridge",
    ),
    (
        1,
        "network: an interface type='mcast', neither on a libvirt network nor on a bridge",
    ),
    (
        1,
        "network: an interface type='server', neither on a libvirt network nor on a bridge",
    ),
    (
        1,
        "network: an interface type='udp', neither on a libvirt network nor on a bridge",
    ),
    (
        26,
        "network: an interface type='user', neither on a libvirt network nor on a bridge",
    ),
    (
        3,
        "network: an interface type='vdpa', neither on a libvirt network nor on a bridge",
    ),
    (
        2,
        "network: an interface type='vhostuser', neither on a libvirt network nor on a bridge",
    ),
    (
        3,
        "secure_boot: Secure Boot firmware without enrolled keys (Secure Boot is not enforced)",
    ),
    (1, "tpm: a TPM with a external backend, not an emulated one"),
    (
        2,
        "tpm: a TPM with a passthrough backend, not an emulated one",
    ),
    (1, "tpm: an emulated TPM of version N.N"),
    (5, "vcpus: N of N vCPUs are enabled at boot (CPU hotplug)"),
];

#[test]
fn patching_a_fixture_with_its_own_definition_changes_nothing() {
    let mut checked = 0;
    for (name, xml) in fixtures() {
        let captured = parse(&xml).unwrap();
        if !captured.problems().is_empty() {
            continue;
        }
        let (def, resolved) = definition_of(&captured);
        let patched = patch(&xml, &def, &resolved).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(same_document(&xml, &patched), "{name} changed:\n{patched}");
        assert_eq!(diff(&captured, &def, &resolved), vec![], "{name}");
        checked += 1;
    }
    assert_eq!(checked, EXPECTED_CAPTURABLE);
}

#[test]
fn patch_brings_every_fixture_to_the_manifest_and_keeps_everything_else() {
    let mut refused = Vec::new();
    for (name, xml) in fixtures() {
        for Variant {
            variant,
            def,
            resolved,
            patched,
        } in variants(&xml)
        {
            let Some(patched) = patched else {
                refused.push(format!("{name}, variant {variant}"));
                continue;
            };
            let after = parse(&patched).unwrap_or_else(|e| panic!("{name}: {e}\n{patched}"));
            assert_eq!(
                diff(&after, &def, &resolved),
                vec![],
                "{name}, variant {variant}:\n{patched}"
            );
            assert_eq!(after.name, parse(&xml).unwrap().name, "{name}");
            let all_interfaces = def.network == "none";
            assert_eq!(
                unowned(&xml, all_interfaces),
                unowned(&patched, all_interfaces),
                "{name}, variant {variant}: patch changed what the manifest does not own"
            );
            // What the managed devices carry that does not depend on their kind survives.
            if def.network != "none" {
                let mac = |xml| first_device_attr(xml, "interface", Some("mac"), "address");
                assert_eq!(mac(&xml), mac(&patched), "{name}, variant {variant}: MAC");
            }
            if def.graphics != Graphics::None {
                for (child, attr) in [
                    (None, "passwd"),
                    (None, "keymap"),
                    (Some("listen"), "address"),
                ] {
                    let value = |xml| first_device_attr(xml, "graphics", child, attr);
                    assert_eq!(
                        value(&xml),
                        value(&patched),
                        "{name}, variant {variant}: graphics {attr}"
                    );
                }
            }
            // Patching again with the same definition is a no-op.
            let again = patch(&patched, &def, &resolved).unwrap();
            assert!(
                same_document(&patched, &again),
                "{name}, variant {variant}: second patch changed:\n{again}"
            );
        }
    }
    // bkt refuses to resize NUMA guests and to change per-vCPU lists; here that is every
    // refusal, and only those whose own memory or vCPUs the manifest cannot hold (so the test
    // could not keep them).
    let numa: Vec<String> = fixtures()
        .into_iter()
        .filter(|(_, xml)| xml.contains("<cell") || xml.contains("<vcpus>"))
        .flat_map(|(name, _)| (0..3).map(move |v| format!("{name}, variant {v}")))
        .collect();
    assert!(
        refused.iter().all(|r| numa.contains(r)),
        "refused: {refused:?}"
    );
    assert_eq!(refused.len(), 3 * 13, "refused: {refused:?}");
}

/// The fixtures that libvirt 9.0's schema accepts (schema-invalid.txt lists the others).
fn schema_valid_fixtures() -> Vec<(String, String)> {
    let list = manifest_dir().join("../shared/fixtures/libvirt-domains/schema-invalid.txt");
    let invalid = std::fs::read_to_string(list).unwrap();
    let invalid: Vec<&str> = invalid
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split('\t').next())
        .collect();
    fixtures()
        .into_iter()
        .filter(|(name, _)| !invalid.contains(&name.as_str()))
        .collect()
}

#[test]
#[ignore = "needs virt-xml-validate (libvirt-clients)"]
fn patched_fixtures_pass_libvirt_schema() {
    let dir = tempfile::tempdir().unwrap();
    for (name, xml) in schema_valid_fixtures() {
        for Variant {
            variant, patched, ..
        } in variants(&xml)
        {
            let Some(patched) = patched else {
                continue;
            };
            let path = dir.path().join(format!("{variant}-{name}"));
            std::fs::write(&path, &patched).unwrap();
            if let Some(errors) = schema_errors(&path) {
                panic!(
                    "{name}, variant {variant}, patched, fails the schema:\n{errors}\n{patched}"
                );
            }
        }
    }
}
