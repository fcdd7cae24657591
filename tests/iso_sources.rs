//! Which ISO sources a domain gets: a local ISO whose file is missing and a URL source whose
//! file is not in the cache are both left out, are not drift, and capture keeps both as the
//! manifest spells them.

mod common;

use std::path::Path;

use bkt::manifest::vm::{IsoSource, VmDefinition};
use bkt::vm::diff::diff;
use bkt::vm::domain_xml::{DiskFormat, Resolved, parse, render};
use common::{HOME, ISO_CACHE};

const SHA: &str = "8b6a1d7f0e3c2b5a4d9e8f7061524334251607f8e9dacbbcadef0123456789ab";

fn sources() -> Vec<IsoSource> {
    vec![
        IsoSource::Path {
            path: "~/Downloads/here.iso".into(),
        },
        IsoSource::Path {
            path: "/srv/iso/gone.iso".into(),
        },
        IsoSource::Url {
            url: "https://example.org/cached.iso".into(),
            sha256: None,
        },
        IsoSource::Url {
            url: "https://example.org/later.iso".into(),
            sha256: Some(SHA.into()),
        },
        IsoSource::Path {
            path: "/srv/iso/last.iso".into(),
        },
    ]
}

fn definition() -> VmDefinition {
    VmDefinition {
        iso_sources: Some(sources()),
        ..common::win11()
    }
}

/// Every file exists but `gone.iso` and the cached `later.iso`.
fn resolve(def: &VmDefinition) -> Resolved {
    Resolved::new(
        def,
        Some(Path::new(HOME)),
        Path::new(ISO_CACHE),
        DiskFormat::Qcow2,
        |p| !p.ends_with("gone.iso") && !p.ends_with("later.iso"),
    )
}

#[test]
fn missing_files_are_left_out_and_the_rest_keep_their_order() {
    let resolved = resolve(&definition());
    assert_eq!(
        resolved.iso_paths(),
        [
            "/home/user/Downloads/here.iso",
            "/home/user/.cache/bkt/isos/cached.iso",
            "/srv/iso/last.iso"
        ]
    );
    assert_eq!(resolved.left_out, ["https://example.org/later.iso"]);
    let missing: Vec<&str> = resolved.missing.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(missing, ["/srv/iso/gone.iso"]);
}

#[test]
fn a_cdrom_left_out_for_a_missing_file_is_not_drift() {
    let def = definition();
    let resolved = resolve(&def);
    let xml = render("vm", &def, &resolved);
    assert!(
        !xml.contains("gone.iso") && !xml.contains("later.iso"),
        "{xml}"
    );
    let captured = parse(&xml).unwrap();
    assert_eq!(diff(&captured, &def, &resolved), vec![]);
    // Once the file is there, the CD-ROM is wanted: that is drift until sync attaches it.
    let all_there = Resolved::new(
        &def,
        Some(Path::new(HOME)),
        Path::new(ISO_CACHE),
        DiskFormat::Qcow2,
        |_| true,
    );
    let changes = diff(&captured, &def, &all_there);
    assert_eq!(
        changes.iter().map(|c| c.field).collect::<Vec<_>>(),
        ["iso_sources"]
    );
}

#[test]
fn capture_keeps_sources_left_out_with_their_spelling_and_checksum() {
    let def = definition();
    let resolved = resolve(&def);
    // By hand, the CD-ROMs were reordered and one was added.
    let mut hand = render("vm", &def, &resolved);
    hand = hand.replace("/srv/iso/last.iso", "/tmp/other.iso");
    let captured = parse(&hand).unwrap();
    let (merged, problems) = captured.merge_into(&def, &resolved);
    assert_eq!(problems, vec![]);
    assert_eq!(
        merged.iso_sources.unwrap(),
        vec![
            sources()[0].clone(),
            sources()[2].clone(),
            IsoSource::Path {
                path: "/tmp/other.iso".into()
            },
            sources()[1].clone(),
            sources()[3].clone(),
        ]
    );
    // In sync, capture leaves the sources exactly as written.
    let (merged, _) = parse(&render("vm", &def, &resolved))
        .unwrap()
        .merge_into(&def, &resolved);
    assert_eq!(merged.iso_sources, Some(sources()));
}
