//! The laws of the domain XML mapping over generated valid definitions:
//! `parse(render(d))` gives `d` back, and patching any rendered domain to `d` gives `d` back.
//! Names and paths carry XML's special characters, and a manifest value can never add markup.

mod common;

use std::path::Path;

use bkt::manifest::vm::{
    Boot, Graphics, HOST_MODEL, HOST_PASSTHROUGH, IsoSource, Tpm, VirtType, VmDefinition,
};
use bkt::vm::diff::diff;
use bkt::vm::domain_xml::{DiskFormat, Resolved, parse, patch, render};
use common::{HOME, ISO_CACHE, same_document};
use proptest::prelude::*;
use xot::Xot;

/// Text with XML's special characters, spaces and non-ASCII, without control characters
/// (validation rejects those).
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ._'\"<>&é-]{1,12}"
}

fn local_path() -> impl Strategy<Value = String> {
    (prop::bool::ANY, prop::collection::vec(text(), 1..4)).prop_map(|(tilde, parts)| {
        let joined = parts
            .into_iter()
            .map(|p| {
                if p == "." || p == ".." {
                    "dot".into()
                } else {
                    p
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        if tilde {
            format!("~/{joined}")
        } else {
            format!("/{joined}")
        }
    })
}

fn iso_source() -> impl Strategy<Value = IsoSource> {
    prop_oneof![
        local_path().prop_map(|path| IsoSource::Path { path }),
        "[a-z0-9]{1,8}(-x)?\\.iso".prop_map(|file| IsoSource::Url {
            url: format!("https://example.org/isos/{file}"),
            sha256: None,
        }),
    ]
}

fn network() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("none".to_owned()),
        Just("default".to_owned()),
        text().prop_map(|n| format!("bridge:{n}")),
        text().prop_filter("a network name", |n| n != "none"
            && !n.starts_with("bridge:")),
    ]
}

fn cpu_model() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(HOST_PASSTHROUGH.to_owned())),
        Just(Some(HOST_MODEL.to_owned())),
        Just(Some("qemu64".to_owned())),
        text()
            .prop_filter("a model name", |m| !m.trim().is_empty())
            .prop_map(Some),
    ]
}

prop_compose! {
    /// A definition that validation accepts.
    fn definition()(
        memory_gb in prop_oneof![1u32..=64, Just(u32::MAX)],
        vcpus in prop_oneof![1u32..=16, Just(4096)],
        disk_path in local_path(),
        disk_size_gb in 1u32..=1000,
        create_if_missing in prop::option::of(prop::bool::ANY),
        boot in prop_oneof![Just(Boot::Uefi), Just(Boot::Bios)],
        tpm in prop::option::of(prop_oneof![Just(Tpm::V2_0), Just(Tpm::None)]),
        network in network(),
        graphics in prop_oneof![Just(Graphics::Spice), Just(Graphics::Vnc), Just(Graphics::None)],
        iso_sources in prop::option::of(prop::collection::vec(iso_source(), 0..=4)),
        autostart in prop::option::of(prop::bool::ANY),
        cpu_model in cpu_model(),
        virt_type in prop::option::of(prop_oneof![Just(VirtType::Kvm), Just(VirtType::Qemu)]),
        secure_boot in prop::option::of(prop::bool::ANY),
    ) -> VmDefinition {
        let mut def = VmDefinition {
            memory_gb, vcpus, disk_path, disk_size_gb, create_if_missing, boot, tpm, network,
            graphics, iso_sources, autostart, cpu_model, virt_type, secure_boot,
        };
        // The combinations validation rejects.
        if def.boot == Boot::Bios && def.secure_boot == Some(true) {
            def.secure_boot = Some(false);
        }
        if def.virt_type == Some(VirtType::Qemu) && def.cpu_model.as_deref() == Some(HOST_PASSTHROUGH) {
            def.cpu_model = Some(HOST_MODEL.to_owned());
        }
        def
    }
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9._-]{0,63}"
}

fn format() -> impl Strategy<Value = DiskFormat> {
    prop_oneof![Just(DiskFormat::Qcow2), Just(DiskFormat::Raw)]
}

/// URL sources whose file name ends in `-x.iso` are not in the cache.
fn resolve(def: &VmDefinition, format: DiskFormat) -> Resolved {
    Resolved::new(
        def,
        Some(Path::new(HOME)),
        Path::new(ISO_CACHE),
        format,
        |p| !p.to_string_lossy().ends_with("-x.iso"),
    )
}

/// `def` with every field domain XML carries set to something else, keeping what capture
/// takes from the manifest it starts from (the fields XML does not carry, and the spelling of
/// paths).
fn elsewhere(def: &VmDefinition) -> VmDefinition {
    VmDefinition {
        memory_gb: def.memory_gb % 7 + 100,
        vcpus: def.vcpus % 7 + 100,
        boot: Boot::Bios,
        tpm: None,
        network: "elsewhere".into(),
        graphics: Graphics::None,
        cpu_model: Some("elsewhere".into()),
        virt_type: None,
        secure_boot: None,
        ..def.clone()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_gives_back_what_render_wrote(name in name(), def in definition(), format in format()) {
        let resolved = resolve(&def, format);
        let xml = render(&name, &def, &resolved);
        let captured = parse(&xml).unwrap();
        prop_assert_eq!(captured.name.as_deref(), Some(name.as_str()));
        prop_assert!(captured.bkt_marker);
        prop_assert_eq!(captured.problems(), vec![]);
        prop_assert_eq!(diff(&captured, &def, &resolved), vec![]);
        let (merged, problems) = captured.merge_into(&elsewhere(&def), &resolved);
        prop_assert_eq!(problems, vec![]);
        prop_assert_eq!(merged, def.normalized());
    }

    #[test]
    fn patch_brings_any_rendered_domain_to_the_manifest(
        old in definition(),
        new in definition(),
        old_format in format(),
        new_format in format(),
    ) {
        let xml = render("vm", &old, &resolve(&old, old_format));
        let resolved = resolve(&new, new_format);
        let patched = patch(&xml, &new, &resolved).unwrap();
        let captured = parse(&patched).unwrap();
        prop_assert_eq!(captured.problems(), vec![]);
        prop_assert_eq!(diff(&captured, &new, &resolved), vec![]);
        prop_assert!(captured.bkt_marker);
        // In sync, patch changes nothing.
        let again = patch(&patched, &new, &resolved).unwrap();
        prop_assert!(same_document(&patched, &again), "{}\n{}", patched, again);
    }

    #[test]
    fn patching_a_rendered_domain_to_its_own_definition_changes_nothing(
        def in definition(),
        format in format(),
    ) {
        let resolved = resolve(&def, format);
        let xml = render("vm", &def, &resolved);
        prop_assert!(same_document(&xml, &patch(&xml, &def, &resolved).unwrap()));
    }
}

/// The element names of a document, in document order.
fn element_names(xml: &str) -> Vec<String> {
    let mut xot = Xot::new();
    let doc = xot.parse(xml).unwrap();
    xot.descendants(doc)
        .filter_map(|n| {
            xot.element(n)
                .map(|e| xot.local_name_str(e.name()).to_owned())
        })
        .collect()
}

#[test]
fn manifest_values_cannot_inject_markup() {
    let evil = r#"x'"<>&</source><evil a='1'/>&amp;"#;
    let plain = VmDefinition {
        disk_path: "/disk.qcow2".into(),
        network: "default".into(),
        cpu_model: Some("Skylake".into()),
        iso_sources: Some(vec![IsoSource::Path {
            path: "/a.iso".into(),
        }]),
        ..common::win11()
    };
    let injected = VmDefinition {
        disk_path: format!("/{evil}.qcow2"),
        network: evil.into(),
        cpu_model: Some(evil.into()),
        iso_sources: Some(vec![IsoSource::Path {
            path: format!("/{evil}"),
        }]),
        ..plain.clone()
    };
    let name = evil;
    let resolved = resolve(&injected, DiskFormat::Qcow2);
    let xml = render(name, &injected, &resolved);
    assert_eq!(
        element_names(&xml),
        element_names(&render(
            "plain",
            &plain,
            &resolve(&plain, DiskFormat::Qcow2)
        )),
        "{xml}"
    );
    let captured = parse(&xml).unwrap();
    assert_eq!(captured.name.as_deref(), Some(name));
    assert_eq!(captured.disk_path.value(), Some(&format!("/{evil}.qcow2")));
    assert_eq!(captured.network.value().map(String::as_str), Some(evil));
    assert_eq!(captured.cpu_model.value(), Some(&Some(evil.to_owned())));
    assert_eq!(captured.iso_paths, vec![format!("/{evil}")]);
    assert_eq!(diff(&captured, &injected, &resolved), vec![]);

    // Patching the same values into a plain domain adds no markup either.
    let plain_xml = render("plain", &plain, &resolve(&plain, DiskFormat::Qcow2));
    let patched = patch(&plain_xml, &injected, &resolved).unwrap();
    assert_eq!(
        element_names(&patched),
        element_names(&plain_xml),
        "{patched}"
    );
    assert_eq!(
        diff(&parse(&patched).unwrap(), &injected, &resolved),
        vec![]
    );
}
