//! Golden files for `render`: every case under tests/golden/ is compared exactly (rewrite them
//! with `BKT_UPDATE_GOLDEN=1 cargo test`), checked against libvirt's own schema, and defined
//! on a real libvirt to check that what libvirt keeps parses back to the definition.

mod common;

use std::io::Write;
use std::path::PathBuf;

use bkt::virsh::{SystemRunner, Virsh};
use bkt::vm::diff::diff;
use bkt::vm::domain_xml::{parse, patch, render};
use common::{golden_cases, manifest_dir, resolve, same_document, schema_errors};

fn golden_dir() -> PathBuf {
    manifest_dir().join("tests/golden")
}

fn golden_path(case: &str) -> PathBuf {
    golden_dir().join(format!("{case}.xml"))
}

#[test]
fn render_matches_the_golden_files() {
    let update = std::env::var_os("BKT_UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for (case, def) in golden_cases() {
        let xml = render(case, &def, &resolve(&def));
        let path = golden_path(case);
        if update {
            std::fs::write(&path, &xml).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(xml.as_str()) {
            stale.push(format!("{}:\n{xml}", path.display()));
        }
    }
    assert!(
        stale.is_empty(),
        "render differs from the golden files (rerun with BKT_UPDATE_GOLDEN=1 and review the diff):\n{}",
        stale.join("\n")
    );
}

#[test]
fn every_golden_file_is_a_case() {
    let cases: Vec<String> = golden_cases()
        .iter()
        .map(|(case, _)| format!("{case}.xml"))
        .collect();
    for entry in std::fs::read_dir(golden_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            cases.contains(&name),
            "tests/golden/{name} belongs to no case"
        );
    }
}

#[test]
#[ignore = "needs virt-xml-validate (libvirt-clients)"]
fn golden_files_pass_libvirt_schema() {
    for (case, _) in golden_cases() {
        let path = golden_path(case);
        if let Some(errors) = schema_errors(&path) {
            panic!("{} fails libvirt's schema:\n{errors}", path.display());
        }
    }
}

/// Undefines the domain when dropped, so that a failed assertion leaves nothing behind.
struct Defined<'a> {
    virsh: &'a Virsh<'a>,
    name: String,
}

impl Drop for Defined<'_> {
    fn drop(&mut self) {
        let _ = self.virsh.run(&["undefine", "--nvram", &self.name]);
    }
}

fn define(virsh: &Virsh, xml: &str) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(xml.as_bytes()).unwrap();
    virsh
        .run(&["define", &file.path().to_string_lossy()])
        .unwrap_or_else(|e| panic!("define failed: {e}\n{xml}"));
}

fn inactive_xml(virsh: &Virsh, name: &str) -> String {
    virsh
        .run(&["dumpxml", "--inactive", "--security-info", name])
        .unwrap()
}

/// The text of the first `<tag>...</tag>` or `tag='...'` in `xml`, for identity checks.
fn first_value<'a>(xml: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = xml.find(start)? + start.len();
    xml[from..].find(end).map(|len| &xml[from..from + len])
}

#[test]
#[ignore = "needs libvirtd"]
fn golden_domains_round_trip_through_libvirt() {
    let runner = SystemRunner;
    let virsh = Virsh::new(&runner, Some("qemu:///system"));
    for (case, def) in golden_cases() {
        let name = format!("bkt-test-golden-{}-{case}", std::process::id());
        let resolved = resolve(&def);
        define(&virsh, &render(&name, &def, &resolved));
        let _defined = Defined {
            virsh: &virsh,
            name: name.clone(),
        };
        let xml = inactive_xml(&virsh, &name);
        let captured = parse(&xml).unwrap();
        assert_eq!(captured.name.as_deref(), Some(name.as_str()));
        assert!(
            captured.bkt_marker,
            "{case}: libvirt dropped the metadata marker"
        );
        assert_eq!(captured.problems(), vec![], "{case}:\n{xml}");
        assert_eq!(diff(&captured, &def, &resolved), vec![], "{case}:\n{xml}");
        assert_eq!(
            captured.merge_into(&def, &resolved).0,
            def.normalized(),
            "{case}"
        );
    }
}

/// Each golden domain, once defined, patched to the next case: libvirt accepts the result,
/// keeps the domain's identity, and what it stores is in sync (a second patch is a no-op).
#[test]
#[ignore = "needs libvirtd"]
fn patched_domains_are_in_sync_on_libvirt() {
    let runner = SystemRunner;
    let virsh = Virsh::new(&runner, Some("qemu:///system"));
    let cases = golden_cases();
    for (i, (from_case, from)) in cases.iter().enumerate() {
        let (to_case, to) = &cases[(i + 1) % cases.len()];
        let step = format!("{from_case} -> {to_case}");
        let name = format!("bkt-test-patch-{}-{i}", std::process::id());
        define(&virsh, &render(&name, from, &resolve(from)));
        let _defined = Defined {
            virsh: &virsh,
            name: name.clone(),
        };
        let before = inactive_xml(&virsh, &name);
        let resolved = resolve(to);
        define(&virsh, &patch(&before, to, &resolved).unwrap());
        let after = inactive_xml(&virsh, &name);
        let captured = parse(&after).unwrap();
        assert_eq!(captured.problems(), vec![], "{step}:\n{after}");
        assert_eq!(diff(&captured, to, &resolved), vec![], "{step}:\n{after}");
        assert!(captured.bkt_marker, "{step}");
        assert_eq!(
            first_value(&before, "<uuid>", "</uuid>"),
            first_value(&after, "<uuid>", "</uuid>"),
            "{step}: UUID"
        );
        if from.network != "none" && to.network != "none" {
            let mac = |xml| first_value(xml, "<mac address='", "'");
            assert_eq!(mac(&before), mac(&after), "{step}: MAC");
        }
        let again = patch(&after, to, &resolved).unwrap();
        assert!(
            same_document(&after, &again),
            "{step}: patching an in-sync domain changed it:\n{again}"
        );
    }
}
