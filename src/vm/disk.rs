//! The managed disk: what is at `disk_path` (an image and its format, nothing yet, or
//! something bkt refuses to use), whether and how sync may create it, and creating it.
//!
//! Creating a file at a path that a manifest names is the one thing sync does outside
//! libvirt's own checks, so every rule is checked before anything is created, and each
//! refusal says which rule and what to do:
//! - the path is absolute and has no `..` (manifest validation);
//! - its directory exists: bkt never makes directories (a typo must not grow a tree);
//! - the path itself is not a symbolic link: creating through a dangling link would put the
//!   image wherever the link points, not where the manifest says. A symlinked *directory* is
//!   fine (it is where the user keeps images), and so is a link to an existing image, which
//!   bkt only reads;
//! - whatever exists there is a regular file (not a directory, not a device), and it is
//!   never overwritten, truncated or resized;
//! - the directory is the target of an active libvirt storage pool (the volume is then
//!   created by libvirt, `virsh vol-create-as`, so a member of the libvirt group can
//!   provision under /var/lib/libvirt/images), or the user can write to it (`qemu-img
//!   create`). The target of an *inactive* pool is refused: creating behind libvirt's back
//!   in a pool that libvirt does not watch right now would surprise, and starting a pool is
//!   not sync's business.
//!
//! The facts come through [`Host`], so planning is testable without a file system or a
//! daemon. Storage pools are read only when some disk must be created or its format can only
//! be learnt from libvirt, in two virsh processes however many disks and pools there are.

use std::cell::OnceCell;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::manifest::vm::VmDefinition;
use crate::plan::DiskCreation;
use crate::virsh::qemu_img::QemuImg;
use crate::virsh::{Runner, Virsh};
use crate::vm::domain_xml::DiskFormat;

/// What is at a path, following symbolic links that lead somewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Missing,
    File,
    Dir,
    /// A block or character device.
    Device,
    /// A FIFO or a socket.
    Other,
    /// A symbolic link whose target does not exist.
    DanglingLink {
        target: PathBuf,
    },
    /// It cannot be looked at (a directory above it is not searchable, ...).
    Unknown(String),
}

/// A libvirt storage pool whose volumes are files in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    /// `<target><path>`: the directory that holds its volumes.
    pub target: PathBuf,
    pub active: bool,
}

/// The file system, qemu-img and libvirt's storage pools, as far as planning needs them.
pub trait Host {
    /// Whether a file (an ISO) is there.
    fn exists(&self, path: &Path) -> bool;
    fn entry(&self, path: &Path) -> Entry;
    /// `path` with every symbolic link resolved, when it can be.
    fn canonical(&self, path: &Path) -> Option<PathBuf>;
    /// Whether this user may create files in directory `dir`.
    fn writable_dir(&self, dir: &Path) -> bool;
    /// The format name `qemu-img info` gives the image at `path`.
    fn image_format(&self, path: &Path) -> Result<String, String>;
    /// libvirt's file-based storage pools.
    fn pools(&self) -> Result<Vec<Pool>, String>;
    /// The format libvirt records for volume `name` of `pool` (`vol-dumpxml`).
    fn volume_format(&self, pool: &str, name: &str) -> Result<String, String>;
}

/// What sync does about a VM's disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskPlan {
    /// The image exists; the domain's driver type is its format.
    Use(DiskFormat),
    /// It is absent and may be created (it will be a qcow2 image).
    Create(DiskCreation),
}

/// Decides what to do about `def`'s disk at `disk` (expanded): use it, create it, or refuse
/// (the `Err` says why, naming the path and the rule).
pub fn plan(def: &VmDefinition, disk: &Path, host: &dyn Host) -> Result<DiskPlan, String> {
    let shown = disk.display();
    match host.entry(disk) {
        Entry::File => image_format(disk, host).map(DiskPlan::Use),
        Entry::Dir => Err(format!("disk {shown} is a directory, not a disk image")),
        Entry::Device => Err(format!(
            "disk {shown} is a device; bkt manages disk image files (qcow2 or raw)"
        )),
        Entry::Other => Err(format!("disk {shown} is not a regular file")),
        Entry::Unknown(e) => Err(format!("cannot look at disk {shown}: {e}")),
        Entry::DanglingLink { target } if def.create_if_missing() => Err(format!(
            "cannot create disk {shown}: it is a symbolic link to {}, which does not exist, and bkt does not create disks through symbolic links (point disk_path at the real file)",
            target.display()
        )),
        Entry::DanglingLink { target } => Err(format!(
            "disk {shown} is a symbolic link to {}, which does not exist",
            target.display()
        )),
        Entry::Missing if !def.create_if_missing() => Err(format!(
            "disk {shown} does not exist (create it, or set \"create_if_missing\": true to let sync create it)"
        )),
        Entry::Missing => creation(def, disk, host).map(DiskPlan::Create),
    }
}

/// The format of an existing image: qemu-img's answer, or, when qemu-img cannot read the
/// file (a volume that libvirt created as root), the format that its storage pool records.
fn image_format(disk: &Path, host: &dyn Host) -> Result<DiskFormat, String> {
    let name = match host.image_format(disk) {
        Ok(name) => name,
        Err(e) => {
            let from_pool = file_name(disk).and_then(|file| {
                let pool = active_pool_of(disk, host).ok().flatten()?;
                host.volume_format(&pool.name, file).ok()
            });
            from_pool
                .ok_or_else(|| format!("cannot read the image format of {}: {e}", disk.display()))?
        }
    };
    DiskFormat::from_name(&name).ok_or_else(|| {
        format!(
            "disk {} is a {name} image; bkt manages qcow2 and raw images",
            disk.display()
        )
    })
}

fn file_name(path: &Path) -> Option<&str> {
    path.file_name().and_then(|n| n.to_str())
}

/// How an absent disk would be created, after every path safety rule.
fn creation(def: &VmDefinition, disk: &Path, host: &dyn Host) -> Result<DiskCreation, String> {
    let refuse = |rule: String| format!("cannot create disk {}: {rule}", disk.display());
    let dir = disk
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| refuse("it has no directory".into()))?;
    if file_name(disk).is_none() {
        return Err(refuse("its file name is not valid UTF-8".into()));
    }
    // The first component that is not a directory is the one to name.
    let mut ancestors: Vec<&Path> = dir.ancestors().collect();
    ancestors.reverse();
    for at in ancestors {
        let shown = at.display();
        match host.entry(at) {
            Entry::Dir => {}
            Entry::Missing => {
                return Err(refuse(format!(
                    "directory {shown} does not exist (bkt creates no directories: make it, or fix disk_path)"
                )));
            }
            Entry::DanglingLink { target } => {
                return Err(refuse(format!(
                    "directory {shown} is a symbolic link to {}, which does not exist",
                    target.display()
                )));
            }
            Entry::Unknown(e) => return Err(refuse(format!("cannot look at {shown}: {e}"))),
            _ => return Err(refuse(format!("{shown} is not a directory"))),
        }
    }
    let creation = |pool: Option<String>| DiskCreation {
        path: disk.to_string_lossy().into_owned(),
        size_gb: def.disk_size_gb,
        format: DiskFormat::Qcow2.as_str(),
        pool,
    };
    match active_pool_of(disk, host).map_err(&refuse)? {
        Some(pool) => Ok(creation(Some(pool.name))),
        None if host.writable_dir(dir) => Ok(creation(None)),
        None => Err(refuse(format!(
            "you cannot write to {} and no libvirt storage pool has it as its target (define one, e.g. `virsh pool-define-as NAME dir --target {}` then `virsh pool-start NAME`, or create the disk by hand)",
            dir.display(),
            dir.display()
        ))),
    }
}

/// The active storage pool whose target directory holds `disk`, if there is one; an error
/// when the only pools with that target are inactive, or the pools cannot be read.
fn active_pool_of(disk: &Path, host: &dyn Host) -> Result<Option<Pool>, String> {
    let Some(dir) = disk.parent() else {
        return Ok(None);
    };
    let pools = host
        .pools()
        .map_err(|e| format!("cannot list libvirt's storage pools: {e}"))?;
    let canonical = |p: &Path| host.canonical(p).unwrap_or_else(|| p.to_path_buf());
    let here = canonical(dir);
    let mut matching: Vec<Pool> = pools
        .into_iter()
        .filter(|p| canonical(&p.target) == here)
        .collect();
    // Deterministic when several pools share a directory: active first, then by name.
    matching.sort_by(|a, b| (!a.active, &a.name).cmp(&(!b.active, &b.name)));
    match matching.into_iter().next() {
        Some(pool) if pool.active => Ok(Some(pool)),
        Some(pool) => Err(format!(
            "its directory {} is the target of storage pool {}, which is not active (`virsh pool-start {}` starts it)",
            dir.display(),
            pool.name,
            pool.name
        )),
        None => Ok(None),
    }
}

/// The real file system, qemu-img, and libvirt's pools read once on first use.
pub struct SystemHost<'r> {
    pub qemu_img: QemuImg<'r>,
    virsh: &'r Virsh<'r>,
    pools: OnceCell<Result<Vec<Pool>, String>>,
}

impl<'r> SystemHost<'r> {
    pub fn new(runner: &'r dyn Runner, virsh: &'r Virsh<'r>) -> SystemHost<'r> {
        SystemHost {
            qemu_img: QemuImg::new(runner),
            virsh,
            pools: OnceCell::new(),
        }
    }
}

impl Host for SystemHost<'_> {
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn entry(&self, path: &Path) -> Entry {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == ErrorKind::NotFound => return Entry::Missing,
            Err(e) => return Entry::Unknown(e.to_string()),
        };
        let meta = if meta.file_type().is_symlink() {
            match std::fs::metadata(path) {
                Ok(target) => target,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Entry::DanglingLink {
                        target: std::fs::read_link(path).unwrap_or_default(),
                    };
                }
                Err(e) => return Entry::Unknown(e.to_string()),
            }
        } else {
            meta
        };
        use std::os::unix::fs::FileTypeExt;
        let kind = meta.file_type();
        if kind.is_file() {
            Entry::File
        } else if kind.is_dir() {
            Entry::Dir
        } else if kind.is_block_device() || kind.is_char_device() {
            Entry::Device
        } else {
            Entry::Other
        }
    }

    fn canonical(&self, path: &Path) -> Option<PathBuf> {
        std::fs::canonicalize(path).ok()
    }

    fn writable_dir(&self, dir: &Path) -> bool {
        use rustix::fs::{Access, AtFlags, CWD, accessat};
        // The effective user's permission, as the kernel will check it at creation.
        accessat(
            CWD,
            dir,
            Access::WRITE_OK | Access::EXEC_OK,
            AtFlags::EACCESS,
        )
        .is_ok()
    }

    fn image_format(&self, path: &Path) -> Result<String, String> {
        self.qemu_img
            .info(&path.to_string_lossy())
            .map(|info| info.format)
            .map_err(|e| e.message())
    }

    fn pools(&self) -> Result<Vec<Pool>, String> {
        self.pools.get_or_init(|| read_pools(self.virsh)).clone()
    }

    fn volume_format(&self, pool: &str, name: &str) -> Result<String, String> {
        let xml = self
            .virsh
            .run(&["vol-dumpxml", "--pool", pool, "--vol", name])
            .map_err(|e| e.message())?;
        volume_format_of(&xml).ok_or_else(|| format!("volume XML without a format: {xml}"))
    }
}

/// Pool types whose volumes are files in the target directory.
const FILE_POOL_TYPES: &[&str] = &["dir", "fs", "netfs"];

/// Every file-based pool: the pool lists in one virsh process, their definitions in a
/// second (none when there is no pool).
fn read_pools(virsh: &Virsh) -> Result<Vec<Pool>, String> {
    let cmd = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let lists = virsh
        .batch(&[
            cmd(&["pool-list", "--all", "--name"]),
            cmd(&["pool-list", "--name"]),
        ])
        .map_err(|e| e.to_string())?;
    let mut names = lists.into_iter().map(|reply| {
        reply.into_result().map(|out| {
            // virsh pads each name with spaces.
            out.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
    });
    let all = names
        .next()
        .expect("one reply per command")
        .map_err(|e| e.message())?;
    let active = names
        .next()
        .expect("one reply per command")
        .map_err(|e| e.message())?;
    if all.is_empty() {
        return Ok(Vec::new());
    }
    let dumps: Vec<Vec<String>> = all
        .iter()
        .map(|name| cmd(&["pool-dumpxml", "--pool", name]))
        .collect();
    let replies = virsh.batch(&dumps).map_err(|e| e.to_string())?;
    let mut pools = Vec::new();
    for (name, reply) in all.iter().zip(replies) {
        // A pool that vanished in between, or that libvirt cannot describe, holds no disk
        // of ours.
        let Ok(xml) = reply.into_result() else {
            continue;
        };
        if let Some(target) = file_pool_target(&xml) {
            pools.push(Pool {
                name: name.clone(),
                target,
                active: active.contains(name),
            });
        }
    }
    Ok(pools)
}

/// The target directory of a file-based pool's XML; `None` for other pool types.
fn file_pool_target(xml: &str) -> Option<PathBuf> {
    let mut xot = xot::Xot::new();
    let doc = xot.parse(xml).ok()?;
    let pool = xot.document_element(doc).ok()?;
    let kind = xot.get_attribute(pool, xot.name("type")?)?;
    if !FILE_POOL_TYPES.contains(&kind) {
        return None;
    }
    let target = child(&xot, pool, "target")?;
    let path = child(&xot, target, "path")?;
    xot.text_content_str(path)
        .map(|p| PathBuf::from(p.trim()))
        .filter(|p| p.is_absolute())
}

/// `<target><format type=...>` of a volume's XML.
fn volume_format_of(xml: &str) -> Option<String> {
    let mut xot = xot::Xot::new();
    let doc = xot.parse(xml).ok()?;
    let volume = xot.document_element(doc).ok()?;
    let target = child(&xot, volume, "target")?;
    let format = child(&xot, target, "format")?;
    xot.get_attribute(format, xot.name("type")?)
        .map(String::from)
}

fn child(xot: &xot::Xot, parent: xot::Node, name: &str) -> Option<xot::Node> {
    let name = xot.name(name)?;
    xot.children(parent)
        .find(|&n| xot.element(n).is_some_and(|e| e.name() == name))
}

/// Creates the disks that a plan found missing, and says for each whether it worked: every
/// disk in a storage pool with `vol-create-as` (one virsh process for all of them), each
/// other disk with `qemu-img create`.
pub fn create(
    virsh: &Virsh,
    qemu_img: &QemuImg,
    disks: &[&DiskCreation],
) -> Vec<Result<(), String>> {
    let mut results: Vec<Option<Result<(), String>>> = vec![None; disks.len()];
    let mut in_pools = Vec::new();
    let mut commands = Vec::new();
    for (i, disk) in disks.iter().enumerate() {
        match &disk.pool {
            Some(pool) => {
                let Some(name) = file_name(Path::new(&disk.path)) else {
                    results[i] = Some(Err(format!(
                        "cannot create disk {}: no file name",
                        disk.path
                    )));
                    continue;
                };
                // libvirt refuses a volume whose file exists (even one it has not seen yet);
                // asking first gives the same message as for a disk outside any pool.
                if std::fs::symlink_metadata(&disk.path).is_ok() {
                    results[i] = Some(Err(appeared(disk)));
                    continue;
                }
                commands.push(
                    [
                        "vol-create-as",
                        "--pool",
                        pool,
                        "--name",
                        name,
                        "--capacity",
                        &format!("{}GiB", disk.size_gb),
                        "--format",
                        disk.format,
                    ]
                    .map(String::from)
                    .to_vec(),
                );
                in_pools.push(i);
            }
            None => results[i] = Some(create_file(qemu_img, disk)),
        }
    }
    if !commands.is_empty() {
        match virsh.batch(&commands) {
            Ok(replies) => {
                for (reply, &i) in replies.into_iter().zip(&in_pools) {
                    results[i] = Some(reply.into_result().map(|_| ()).map_err(|e| {
                        format!(
                            "cannot create disk {} in storage pool {}: {}",
                            disks[i].path,
                            disks[i].pool.as_deref().unwrap_or_default(),
                            e.message()
                        )
                    }));
                }
            }
            Err(e) => {
                for &i in &in_pools {
                    results[i] = Some(Err(format!("cannot create disk {}: {e}", disks[i].path)));
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("disk creation did not run".into())))
        .collect()
}

fn appeared(disk: &DiskCreation) -> String {
    format!(
        "disk {} appeared after planning; it is left as it is",
        disk.path
    )
}

/// Creates a qcow2 image outside any pool. The file is first created empty with `O_EXCL`
/// (which also refuses a symbolic link), so that an image that appeared since planning, or
/// one that a concurrent sync is creating, is never overwritten: qemu-img itself truncates
/// whatever is there. Only this user may read the new image, as with libvirt's own volumes
/// (libvirt gives QEMU access when the domain starts).
fn create_file(qemu_img: &QemuImg, disk: &DiskCreation) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let placeholder = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&disk.path);
    match placeholder {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(appeared(disk)),
        Err(e) => return Err(format!("cannot create disk {}: {e}", disk.path)),
    }
    qemu_img
        .create_qcow2(&disk.path, disk.size_gb)
        .map_err(|e| {
            // The empty file is ours: take it away again.
            let _ = std::fs::remove_file(&disk.path);
            format!("cannot create disk {}: {}", disk.path, e.message())
        })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::BTreeMap;

    use super::*;
    use crate::manifest::vm::{Boot, Graphics};

    /// A file system and a libvirt described by maps; anything not listed is missing.
    #[derive(Default)]
    struct Fake {
        entries: BTreeMap<PathBuf, Entry>,
        links: BTreeMap<PathBuf, PathBuf>,
        writable: Vec<PathBuf>,
        formats: BTreeMap<PathBuf, Result<String, String>>,
        pools: Vec<Pool>,
        volumes: BTreeMap<(String, String), String>,
        pool_reads: Cell<usize>,
    }

    impl Fake {
        /// `/`, `/srv` and `/srv/vm` exist as directories.
        fn new() -> Fake {
            let mut fake = Fake::default();
            for dir in ["/", "/srv", "/srv/vm"] {
                fake.entries.insert(dir.into(), Entry::Dir);
            }
            fake
        }

        fn with(mut self, path: &str, entry: Entry) -> Fake {
            self.entries.insert(path.into(), entry);
            self
        }

        fn pool(mut self, name: &str, target: &str, active: bool) -> Fake {
            self.pools.push(Pool {
                name: name.into(),
                target: target.into(),
                active,
            });
            self
        }
    }

    impl Host for Fake {
        fn exists(&self, path: &Path) -> bool {
            self.entries.contains_key(path)
        }
        fn entry(&self, path: &Path) -> Entry {
            self.entries.get(path).cloned().unwrap_or(Entry::Missing)
        }
        fn canonical(&self, path: &Path) -> Option<PathBuf> {
            Some(self.links.get(path).cloned().unwrap_or(path.to_path_buf()))
        }
        fn writable_dir(&self, dir: &Path) -> bool {
            self.writable.iter().any(|w| w == dir)
        }
        fn image_format(&self, path: &Path) -> Result<String, String> {
            self.formats
                .get(path)
                .cloned()
                .unwrap_or_else(|| Err("no such file".into()))
        }
        fn pools(&self) -> Result<Vec<Pool>, String> {
            self.pool_reads.set(self.pool_reads.get() + 1);
            Ok(self.pools.clone())
        }
        fn volume_format(&self, pool: &str, name: &str) -> Result<String, String> {
            self.volumes
                .get(&(pool.to_string(), name.to_string()))
                .cloned()
                .ok_or_else(|| "Storage volume not found".into())
        }
    }

    fn vm(create: bool) -> VmDefinition {
        VmDefinition {
            create_if_missing: Some(create),
            ..VmDefinition::new(
                1,
                1,
                "/srv/vm/a.qcow2",
                20,
                Boot::Bios,
                "none",
                Graphics::None,
            )
        }
    }

    fn creation(path: &str, pool: Option<&str>) -> DiskPlan {
        DiskPlan::Create(DiskCreation {
            path: path.into(),
            size_gb: 20,
            format: "qcow2",
            pool: pool.map(String::from),
        })
    }

    fn plan_of(host: &Fake, create: bool, disk: &str) -> Result<DiskPlan, String> {
        plan(&vm(create), Path::new(disk), host)
    }

    #[test]
    fn an_existing_image_is_used_with_its_format_and_pools_are_not_read() {
        let mut host = Fake::new().with("/srv/vm/a.qcow2", Entry::File);
        host.formats
            .insert("/srv/vm/a.qcow2".into(), Ok("raw".into()));
        assert_eq!(
            plan_of(&host, true, "/srv/vm/a.qcow2"),
            Ok(DiskPlan::Use(DiskFormat::Raw))
        );
        assert_eq!(host.pool_reads.get(), 0);
        host.formats
            .insert("/srv/vm/a.qcow2".into(), Ok("vmdk".into()));
        assert_eq!(
            plan_of(&host, true, "/srv/vm/a.qcow2"),
            Err("disk /srv/vm/a.qcow2 is a vmdk image; bkt manages qcow2 and raw images".into())
        );
    }

    #[test]
    fn an_unreadable_image_in_a_pool_takes_its_format_from_the_volume() {
        let mut host = Fake::new()
            .with("/srv/vm/a.qcow2", Entry::File)
            .pool("images", "/srv/vm", true);
        host.formats.insert(
            "/srv/vm/a.qcow2".into(),
            Err("Could not open '/srv/vm/a.qcow2': Permission denied".into()),
        );
        host.volumes
            .insert(("images".into(), "a.qcow2".into()), "qcow2".into());
        assert_eq!(
            plan_of(&host, false, "/srv/vm/a.qcow2"),
            Ok(DiskPlan::Use(DiskFormat::Qcow2))
        );
        host.volumes.clear();
        assert_eq!(
            plan_of(&host, false, "/srv/vm/a.qcow2"),
            Err("cannot read the image format of /srv/vm/a.qcow2: Could not open '/srv/vm/a.qcow2': Permission denied".into())
        );
    }

    #[test]
    fn an_absent_disk_without_create_if_missing_says_how_to_fix_it() {
        let host = Fake::new();
        assert_eq!(
            plan_of(&host, false, "/srv/vm/a.qcow2"),
            Err("disk /srv/vm/a.qcow2 does not exist (create it, or set \"create_if_missing\": true to let sync create it)".into())
        );
        assert_eq!(host.pool_reads.get(), 0);
    }

    #[test]
    fn a_disk_in_an_active_pool_is_a_volume_of_it() {
        let host = Fake::new()
            .pool("other", "/elsewhere", true)
            .pool("images", "/srv/vm/", true);
        assert_eq!(
            plan_of(&host, true, "/srv/vm/a.qcow2"),
            Ok(creation("/srv/vm/a.qcow2", Some("images")))
        );
        // A pool whose target is a symbolic link to the disk's directory is that directory.
        let mut host = Fake::new().pool("images", "/var/images", true);
        host.links.insert("/var/images".into(), "/srv/vm".into());
        assert_eq!(
            plan_of(&host, true, "/srv/vm/a.qcow2"),
            Ok(creation("/srv/vm/a.qcow2", Some("images")))
        );
    }

    #[test]
    fn outside_any_pool_the_user_must_be_able_to_write_the_directory() {
        let mut host = Fake::new().pool("images", "/var/lib/libvirt/images", true);
        assert_eq!(
            plan_of(&host, true, "/srv/vm/a.qcow2"),
            Err("cannot create disk /srv/vm/a.qcow2: you cannot write to /srv/vm and no libvirt storage pool has it as its target (define one, e.g. `virsh pool-define-as NAME dir --target /srv/vm` then `virsh pool-start NAME`, or create the disk by hand)".into())
        );
        host.writable.push("/srv/vm".into());
        assert_eq!(
            plan_of(&host, true, "/srv/vm/a.qcow2"),
            Ok(creation("/srv/vm/a.qcow2", None))
        );
    }

    #[test]
    fn an_inactive_pool_is_refused_and_an_active_one_preferred() {
        let mut host = Fake::new().pool("sleepy", "/srv/vm", false);
        host.writable.push("/srv/vm".into());
        assert_eq!(
            plan_of(&host, true, "/srv/vm/a.qcow2"),
            Err("cannot create disk /srv/vm/a.qcow2: its directory /srv/vm is the target of storage pool sleepy, which is not active (`virsh pool-start sleepy` starts it)".into())
        );
        let host = host.pool("awake", "/srv/vm", true);
        assert_eq!(
            plan_of(&host, true, "/srv/vm/a.qcow2"),
            Ok(creation("/srv/vm/a.qcow2", Some("awake")))
        );
    }

    #[test]
    fn every_path_rule_names_what_is_wrong() {
        let cases = [
            (
                Fake::new(),
                "/srv/new/deeper/a.qcow2",
                "cannot create disk /srv/new/deeper/a.qcow2: directory /srv/new does not exist (bkt creates no directories: make it, or fix disk_path)",
            ),
            (
                Fake::new().with("/srv/file", Entry::File),
                "/srv/file/a.qcow2",
                "cannot create disk /srv/file/a.qcow2: /srv/file is not a directory",
            ),
            (
                Fake::new().with(
                    "/srv/vm/a.qcow2",
                    Entry::DanglingLink {
                        target: "/etc/shadow-new".into(),
                    },
                ),
                "/srv/vm/a.qcow2",
                "cannot create disk /srv/vm/a.qcow2: it is a symbolic link to /etc/shadow-new, which does not exist, and bkt does not create disks through symbolic links (point disk_path at the real file)",
            ),
            (
                Fake::new().with(
                    "/srv/gone",
                    Entry::DanglingLink {
                        target: "/mnt/usb".into(),
                    },
                ),
                "/srv/gone/a.qcow2",
                "cannot create disk /srv/gone/a.qcow2: directory /srv/gone is a symbolic link to /mnt/usb, which does not exist",
            ),
            (
                Fake::new().with("/srv/vm/a.qcow2", Entry::Dir),
                "/srv/vm/a.qcow2",
                "disk /srv/vm/a.qcow2 is a directory, not a disk image",
            ),
            (
                Fake::new().with("/srv/vm/a.qcow2", Entry::Device),
                "/srv/vm/a.qcow2",
                "disk /srv/vm/a.qcow2 is a device; bkt manages disk image files (qcow2 or raw)",
            ),
            (
                Fake::new().with("/srv/vm/a.qcow2", Entry::Other),
                "/srv/vm/a.qcow2",
                "disk /srv/vm/a.qcow2 is not a regular file",
            ),
            (
                Fake::new().with(
                    "/srv/vm/a.qcow2",
                    Entry::Unknown("Permission denied".into()),
                ),
                "/srv/vm/a.qcow2",
                "cannot look at disk /srv/vm/a.qcow2: Permission denied",
            ),
        ];
        for (host, disk, message) in cases {
            assert_eq!(
                plan_of(&host, true, disk),
                Err(message.to_string()),
                "{disk}"
            );
        }
    }

    /// qemu-img that fails every call, and counts them.
    struct FailingQemuImg(Cell<usize>);

    impl Runner for FailingQemuImg {
        fn run(
            &self,
            _: &str,
            _: &[String],
            _: Option<&str>,
            _: std::time::Duration,
        ) -> Result<crate::virsh::Output, crate::virsh::RunError> {
            self.0.set(self.0.get() + 1);
            Ok(crate::virsh::Output {
                code: Some(1),
                stdout: String::new(),
                stderr: "qemu-img: out of space\n".into(),
            })
        }
    }

    #[test]
    fn creation_never_touches_a_file_that_appeared_and_cleans_up_after_itself() {
        let dir = tempfile::tempdir().unwrap();
        let runner = FailingQemuImg(Cell::new(0));
        let virsh = Virsh::new(&runner, None);
        let qemu_img = QemuImg::new(&runner);
        let there = dir.path().join("there.qcow2");
        std::fs::write(&there, "precious").unwrap();
        let link = dir.path().join("link.qcow2");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
        let new = dir.path().join("new.qcow2");
        let disk = |path: &Path, pool: Option<&str>| DiskCreation {
            path: path.to_string_lossy().into_owned(),
            size_gb: 1,
            format: "qcow2",
            pool: pool.map(String::from),
        };
        let disks = [
            disk(&there, None),
            disk(&there, Some("images")),
            disk(&link, None),
            disk(&new, None),
        ];
        let results = create(&virsh, &qemu_img, &disks.iter().collect::<Vec<_>>());
        let shown = |p: &Path| p.display().to_string();
        assert_eq!(
            results,
            [
                Err(format!(
                    "disk {} appeared after planning; it is left as it is",
                    shown(&there)
                )),
                Err(format!(
                    "disk {} appeared after planning; it is left as it is",
                    shown(&there)
                )),
                Err(format!(
                    "disk {} appeared after planning; it is left as it is",
                    shown(&link)
                )),
                Err(format!(
                    "cannot create disk {}: qemu-img: out of space",
                    shown(&new)
                )),
            ]
        );
        // Only the last reached qemu-img; nothing was overwritten, nothing was left behind.
        assert_eq!(runner.0.get(), 1);
        assert_eq!(std::fs::read_to_string(&there).unwrap(), "precious");
        assert!(!dir.path().join("elsewhere").exists());
        assert!(!new.exists());
    }

    #[test]
    fn pool_and_volume_xml_are_read_for_file_pools_only() {
        let dir = "<pool type='dir'>\n  <name>images</name>\n  <target>\n    <path>/var/lib/libvirt/images &amp; more</path>\n  </target>\n</pool>\n";
        assert_eq!(
            file_pool_target(dir),
            Some(PathBuf::from("/var/lib/libvirt/images & more"))
        );
        let logical =
            "<pool type='logical'><name>vg</name><target><path>/dev/vg</path></target></pool>";
        assert_eq!(file_pool_target(logical), None);
        assert_eq!(file_pool_target("not xml"), None);
        let volume = "<volume type='file'><name>a.qcow2</name><target><path>/x/a.qcow2</path><format type='qcow2'/></target></volume>";
        assert_eq!(volume_format_of(volume).as_deref(), Some("qcow2"));
    }
}
