//! `qemu-img`, for disks outside any libvirt storage pool: reading an image's format and
//! size, and creating a new qcow2 image.

use std::time::Duration;

use super::{Error, Runner, launch};

/// What `qemu-img info` says about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// The format qemu-img detected (`qcow2`, `raw`, `vmdk`, ...).
    pub format: String,
    /// The size the guest sees, in bytes.
    pub virtual_size: u64,
}

pub struct QemuImg<'r> {
    runner: &'r dyn Runner,
    timeout: Duration,
}

impl<'r> QemuImg<'r> {
    pub fn new(runner: &'r dyn Runner) -> QemuImg<'r> {
        QemuImg {
            runner,
            timeout: super::DEFAULT_TIMEOUT,
        }
    }

    fn run(&self, args: &[&str]) -> Result<String, Error> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let argv: Vec<String> = std::iter::once("qemu-img".to_string())
            .chain(args.iter().cloned())
            .collect();
        launch(self.runner, "qemu-img", &args, &argv, self.timeout)?.checked(argv)
    }

    /// The format and virtual size of the image at `path`. `-U` lets it read an image that a
    /// running VM holds open.
    pub fn info(&self, path: &str) -> Result<ImageInfo, Error> {
        let argv = ["info", "--output=json", "-U", "--", path];
        let out = self.run(&argv)?;
        let unexpected = || Error::Unexpected {
            argv: std::iter::once("qemu-img")
                .chain(argv)
                .map(String::from)
                .collect(),
            output: out.chars().take(200).collect(),
        };
        let json: serde_json::Value = serde_json::from_str(&out).map_err(|_| unexpected())?;
        Ok(ImageInfo {
            format: json["format"].as_str().ok_or_else(unexpected)?.to_string(),
            virtual_size: json["virtual-size"].as_u64().ok_or_else(unexpected)?,
        })
    }

    /// Creates a qcow2 image of `size_gb` GiB at `path`. qemu-img refuses nothing about an
    /// existing file, so the caller must have checked that `path` does not exist.
    pub fn create_qcow2(&self, path: &str, size_gb: u32) -> Result<(), Error> {
        let size = format!("{size_gb}G");
        self.run(&["create", "-q", "-f", "qcow2", "--", path, &size])
            .map(|_| ())
    }
}
