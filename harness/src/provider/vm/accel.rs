//! KVM or TCG: a tiny boot of the VM kernel under KVM (its initramfs powers off at once when
//! `shakedown.poweroff` is on the command line). `/dev/kvm` existing is not enough: with
//! nested virtualisation broken, KVM may hang or fail with an internal error, so only a boot
//! that reaches the initramfs counts. The answer is kept per host boot, beside the kernel.

use super::VmKernel;
use crate::process::{run_blocking, Cmd};
use crate::scenario::Accelerator;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the initramfs prints when a probe boot reaches it.
pub const PROBE_MARKER: &str = "probe boot reached the initramfs";
/// A KVM boot reaches the initramfs in about a second; one that does not within this hangs.
pub const PROBE_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub accelerator: Accelerator,
    /// Why, in a sentence: for the plan and the JUnit properties.
    pub reason: String,
}

/// The qemu command of a probe boot under KVM, its console going to `console`.
pub fn probe_cmd(kernel: &VmKernel, console: &Path) -> Cmd {
    Cmd::new("qemu-system-x86_64").args([
        "-accel".to_string(),
        "kvm".into(),
        "-machine".into(),
        "pc".into(),
        "-cpu".into(),
        "host".into(),
        "-m".into(),
        "256".into(),
        "-nodefaults".into(),
        "-display".into(),
        "none".into(),
        "-no-reboot".into(),
        "-kernel".into(),
        kernel.vmlinuz().display().to_string(),
        "-initrd".into(),
        kernel.initrd().display().to_string(),
        "-append".into(),
        "console=ttyS0 panic=-1 shakedown.poweroff".into(),
        "-serial".into(),
        format!("file:{}", console.display()),
    ])
}

/// Reads a probe's outcome from what it printed: the marker, or why not.
pub fn judge(finished: bool, console: &str) -> Probe {
    if finished && console.contains(PROBE_MARKER) {
        Probe {
            accelerator: Accelerator::Kvm,
            reason: "a KVM probe boot reached the initramfs".into(),
        }
    } else if !finished {
        Probe {
            accelerator: Accelerator::Tcg,
            reason: format!(
                "a KVM probe boot did not reach the initramfs within {}s (nested KVM broken?); software emulation",
                PROBE_LIMIT.as_secs()
            ),
        }
    } else {
        Probe {
            accelerator: Accelerator::Tcg,
            reason: "a KVM probe boot ended without reaching the initramfs; software emulation"
                .into(),
        }
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn remembered(kernel: &VmKernel) -> PathBuf {
    kernel.dir.join(format!("accel-{}", boot_id()))
}

/// KVM when a probe boot under it works, else TCG. `SHAKEDOWN_VM_ACCEL=kvm|tcg` decides
/// without a probe.
pub fn probe(kernel: &VmKernel) -> Probe {
    match std::env::var("SHAKEDOWN_VM_ACCEL").as_deref() {
        Ok("kvm") => {
            return Probe {
                accelerator: Accelerator::Kvm,
                reason: "SHAKEDOWN_VM_ACCEL=kvm".into(),
            }
        }
        Ok("tcg") => {
            return Probe {
                accelerator: Accelerator::Tcg,
                reason: "SHAKEDOWN_VM_ACCEL=tcg".into(),
            }
        }
        _ => {}
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Probe {
            accelerator: Accelerator::Tcg,
            reason: "/dev/kvm cannot be opened; software emulation".into(),
        };
    }
    let keep = remembered(kernel);
    if let Ok(s) = std::fs::read_to_string(&keep) {
        if let Some((a, reason)) = s.split_once('\n') {
            let accelerator = if a == "kvm" {
                Accelerator::Kvm
            } else {
                Accelerator::Tcg
            };
            return Probe {
                accelerator,
                reason: format!("{} (probed earlier this boot)", reason.trim()),
            };
        }
    }
    let console = kernel
        .dir
        .join(format!("probe-{}.console", std::process::id()));
    let finished = run_blocking(
        &probe_cmd(kernel, &console),
        None,
        "KVM probe",
        PROBE_LIMIT,
        false,
    )
    .is_some();
    let printed = std::fs::read_to_string(&console).unwrap_or_default();
    let _ = std::fs::remove_file(&console);
    let p = judge(finished, &printed);
    let _ = std::fs::write(&keep, format!("{}\n{}", p.accelerator.as_str(), p.reason));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_boot_that_reached_the_initramfs_counts_as_kvm() {
        assert_eq!(
            judge(true, &format!("[0.9] x\nshakedown-init: {PROBE_MARKER}\n")).accelerator,
            Accelerator::Kvm
        );
        let hung = judge(false, "");
        assert_eq!(hung.accelerator, Accelerator::Tcg);
        assert!(hung.reason.contains("within 10s"), "{}", hung.reason);
        // Ended (e.g. "KVM internal error") without the marker.
        assert_eq!(
            judge(true, "KVM internal error. Suberror: 1").accelerator,
            Accelerator::Tcg
        );
    }

    #[test]
    fn the_probe_boots_the_kernel_under_kvm_and_powers_off() {
        let k = VmKernel {
            dir: "/c/vm/kernel-1".into(),
            version: "6.1".into(),
        };
        let c = probe_cmd(&k, Path::new("/tmp/p.console"));
        let line = c.args.join(" ");
        assert!(line.contains("-accel kvm"), "{line}");
        assert!(line.contains("-kernel /c/vm/kernel-1/vmlinuz"), "{line}");
        assert!(line.contains("shakedown.poweroff"), "{line}");
        assert!(line.contains("-no-reboot"), "{line}");
    }
}
