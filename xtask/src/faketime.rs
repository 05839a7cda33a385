//! libfaketime for the clock-fault tests (docs/design.md section 9): Debian's `faketime`
//! package where the machine has it; otherwise its library unpacked from the package into
//! the target directory, which needs no root (`apt-get download`, `dpkg-deb -x`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Where Debian's `libfaketime` package puts the library.
const SYSTEM: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// The package that holds it.
const PACKAGE: &str = "libfaketime";

/// The path of `libfaketime.so.1`, installing it into the target directory if need be.
pub fn library() -> Result<PathBuf> {
    if Path::new(SYSTEM).exists() {
        return Ok(SYSTEM.into());
    }
    let cache = crate::target_dir().join("faketime");
    let unpacked = cache.join("root").join(SYSTEM.trim_start_matches('/'));
    if unpacked.exists() {
        return Ok(unpacked);
    }
    std::fs::create_dir_all(&cache)?;
    eprintln!("$ apt-get download {PACKAGE} (into {})", cache.display());
    let status = Command::new("apt-get")
        .args(["download", PACKAGE])
        .current_dir(&cache)
        .status()
        .context("running apt-get (Debian's libfaketime is needed for the clock-fault tests)")?;
    if !status.success() {
        bail!("apt-get download {PACKAGE} failed ({status}); install Debian's faketime package");
    }
    let deb = std::fs::read_dir(&cache)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .context("apt-get download left no .deb")?;
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(cache.join("root"))
        .status()
        .context("running dpkg-deb")?;
    if !status.success() || !unpacked.exists() {
        bail!("unpacking {} gave no {}", deb.display(), unpacked.display());
    }
    Ok(unpacked)
}
