//! What a VM node boots (provider `vm`), built by `harness/scripts/build-vm-disk.sh` and
//! cached by content under `<cache>/vm/`:
//! - the kernel: Debian's cloud kernel, its modules, and a busybox initramfs that loads the
//!   virtio modules and hands over to systemd. Built at plan time, because the KVM probe
//!   boots it before deadlines are set;
//! - the disk: the node image's root filesystem as an ext4 image, with the kernel's modules
//!   and dropbear added. Built by `image-build`, keyed by the node image's id.

use super::{io, key, read, tree_bytes, BuildError};
use crate::paths::CacheLock;
use crate::process::{Cmd, CommandError, Runner};
pub use crate::provider::vm::{VmDisk, VmKernel};
use std::path::{Path, PathBuf};

const SCRIPT: &str = "harness/scripts/build-vm-disk.sh";

/// How long the kernel stage may take (measured: 11 s, most of it the download).
const KERNEL_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

fn script_cmd(root: &Path, cache: &Path, stage: &str, kernel_out: &Path) -> Cmd {
    Cmd::new("bash")
        .arg(root.join(SCRIPT).display().to_string())
        .env("STAGE", stage)
        .env("KERNEL_OUT", kernel_out.display().to_string())
        .env("WORK", cache.join("work/vm").display().to_string())
        .env(
            "ASSETS_DIR",
            root.join("harness/assets/vm").display().to_string(),
        )
}

fn kernel_dir(root: &Path, cache: &Path, package: &str) -> Result<PathBuf, BuildError> {
    let k = key(&[
        &read(&root.join(SCRIPT))?,
        &tree_bytes(&root.join("harness/assets/vm/initramfs"))?,
        package.as_bytes(),
    ]);
    Ok(cache.join("vm").join(format!("kernel-{k}")))
}

fn cached_kernel(dir: &Path) -> Option<VmKernel> {
    let version = std::fs::read_to_string(dir.join("kernel-version")).ok()?;
    let k = VmKernel {
        dir: dir.to_path_buf(),
        version: version.trim().to_string(),
    };
    (k.vmlinuz().is_file() && k.initrd().is_file()).then_some(k)
}

/// The kernel for VM nodes from `package`, built once per content key. Synchronous: the
/// plan needs it (for the KVM probe) before any runtime work starts. What the build prints
/// goes to standard error, after its `+ cmd` line.
pub fn kernel(root: &Path, cache: &Path, package: &str) -> Result<VmKernel, BuildError> {
    let dir = kernel_dir(root, cache, package)?;
    if let Some(k) = cached_kernel(&dir) {
        return Ok(k);
    }
    let _lock = CacheLock::acquire_blocking(cache, &|s| eprintln!("{s}")).map_err(io(cache))?;
    if let Some(k) = cached_kernel(&dir) {
        return Ok(k);
    }
    // No runtime here to bound it: coreutils' timeout does (TERM, then KILL 10 s later).
    let script = script_cmd(root, cache, "kernel", &dir).env("KERNEL_PACKAGE", package);
    let mut cmd = Cmd::new("timeout")
        .args(["--kill-after=10", &KERNEL_LIMIT.as_secs().to_string()])
        .arg(script.program)
        .args(script.args);
    cmd.env = script.env;
    eprintln!("+ {cmd}");
    let status = std::process::Command::new(&cmd.program)
        .args(&cmd.args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit())
        .status()
        .map_err(|source| BuildError::Stage {
            stage: "vm kernel",
            source: CommandError::Spawn {
                cmd: cmd.to_string(),
                source,
            },
        })?;
    if !status.success() {
        return Err(BuildError::Stage {
            stage: "vm kernel",
            source: CommandError::Failed {
                cmd: cmd.to_string(),
                status,
                stdout: String::new(),
                stderr: "(printed above)".into(),
            },
        });
    }
    cached_kernel(&dir).ok_or_else(|| BuildError::Io {
        path: dir.clone(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the kernel stage finished without vmlinuz, initrd.img and kernel-version",
        ),
    })
}

/// The disk for VM nodes of `node_image` (its docker image id is part of the key), with the
/// images of `preload` in its containerd, built once under the cache lock.
pub async fn disk(
    root: &Path,
    cache: &Path,
    kernel: &VmKernel,
    node_image: &str,
    preload: Option<&Path>,
    r: &Runner,
    note: &(dyn Fn(String) + Sync),
) -> Result<VmDisk, BuildError> {
    let id = r
        .output(Cmd::new("docker").args(["image", "inspect", "--format", "{{.Id}}", node_image]))
        .await
        .map_err(|source| BuildError::Stage {
            stage: "vm disk",
            source,
        })?;
    let k = key(&[
        &read(&root.join(SCRIPT))?,
        &tree_bytes(&root.join("harness/assets/vm/rootfs"))?,
        kernel.dir.to_string_lossy().as_bytes(),
        id.trim().as_bytes(),
        // The tarball's folder is named by its own content key.
        preload
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_default()
            .as_bytes(),
    ]);
    let out = cache.join("vm").join(format!("disk-{k}"));
    let image = out.join("disk.raw");
    let done = |image: PathBuf| VmDisk {
        kernel: kernel.clone(),
        image,
        preloaded: preload.map(Path::to_path_buf),
    };
    if image.is_file() {
        note(format!("vm disk: cached ({})", image.display()));
        return Ok(done(image));
    }
    let _lock = CacheLock::acquire(cache, &r.cancel, note)
        .await
        .map_err(io(cache))?;
    if image.is_file() {
        return Ok(done(image));
    }
    note(format!(
        "vm disk: building {} from {node_image} with kernel {}{} (about a minute)",
        image.display(),
        kernel.version,
        preload
            .map(|p| format!(", images of {} preloaded", p.display()))
            .unwrap_or_default()
    ));
    let mut cmd = script_cmd(root, cache, "disk", &kernel.dir)
        .env("NODE_IMAGE", node_image)
        .env("OUT", out.display().to_string());
    if let Some(p) = preload {
        cmd = cmd.env("IMAGES_TAR", p.display().to_string());
    }
    r.run(cmd).await.map_err(|source| BuildError::Stage {
        stage: "vm disk",
        source,
    })?;
    Ok(done(image))
}

/// What qemu runs VM nodes with on this machine, for the plan of `jobs`: None when no job
/// has VM nodes or qemu is missing (the job then fails at cluster-up, saying why). Builds the
/// VM kernel (cached) and probes KVM with it; says what it found on standard error.
pub fn plan_accelerator(
    root: &Path,
    cache: &Path,
    s: &crate::scenario::LoadedScenario,
    jobs: &[crate::matrix::Job],
) -> Result<Option<crate::scenario::Accelerator>, BuildError> {
    if !jobs
        .iter()
        .any(|j| j.provider == crate::scenario::ProviderKind::Vm)
        || !crate::provider::vm::VmProvider::installed()
    {
        return Ok(None);
    }
    let kernel = kernel(root, cache, &s.scenario.vm.kernel_package)?;
    let probe = crate::provider::vm::accel::probe(&kernel);
    eprintln!(
        "vm: accelerator {} ({}); kernel {}",
        probe.accelerator.as_str(),
        probe.reason,
        kernel.version
    );
    Ok(Some(probe.accelerator))
}
