//! The commands of a VM node, as data: qemu's command line, the tap device on the cluster's
//! bridge, the ssh command that makes the node a command runner, and the addresses a VM
//! takes. Pure functions, unit-tested below.

use super::VmDisk;
use crate::process::Cmd;
use crate::scenario::Accelerator;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// One VM node as qemu starts it.
#[derive(Debug, Clone)]
pub struct VmNode {
    pub name: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub tap: String,
    pub mac: String,
    /// The node's folder in the run's work folder: overlay disk, console log, pid file.
    pub dir: PathBuf,
    /// A `docker save` tarball attached read-only as the second disk (`/dev/vdb`), so
    /// images are imported from it instead of through ssh's encryption, which an emulated
    /// CPU makes slow.
    pub images: Option<PathBuf>,
}

/// Where a VM sees the images tarball attached by [`qemu_cmd`].
pub const IMAGES_DEVICE: &str = "/dev/vdb";

impl VmNode {
    pub fn overlay(&self) -> PathBuf {
        self.dir.join("disk.qcow2")
    }
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
}

/// Size and speed of every VM of a cluster.
#[derive(Debug, Clone)]
pub struct Machine {
    pub accelerator: Accelerator,
    pub cpus: u32,
    pub memory_mb: u32,
}

/// Hex of a hash of `parts`: stable names from a node's name.
fn digest(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A tap name (at most 15 characters) from the node's name: `sdv` and a hash.
pub fn tap_name(node: &str) -> String {
    format!("sdv{}", &digest(&[node.as_bytes()])[..10])
}

/// A locally administered MAC from the node's name (qemu's 52:54:00 prefix).
pub fn mac(node: &str) -> String {
    let k = digest(&[b"mac", node.as_bytes()]);
    format!("52:54:00:{}:{}:{}", &k[0..2], &k[2..4], &k[4..6])
}

/// The address of the `index`th VM (0-based) on a network: counted down from the top of
/// the subnet, where docker (which hands out addresses from the bottom) does not reach.
pub fn vm_address(subnet: &str, index: u32) -> Option<(Ipv4Addr, u8)> {
    let (net, prefix) = subnet.split_once('/')?;
    let net: Ipv4Addr = net.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    if !(8..=28).contains(&prefix) {
        return None;
    }
    let size = 1u32 << (32 - prefix);
    // The broadcast address is size-1; docker's own reservations stay at the bottom.
    let host = size.checked_sub(2 + index)?;
    if host < size / 2 {
        return None;
    }
    Some((Ipv4Addr::from(u32::from(net) + host), prefix))
}

/// The kernel command line: the initramfs reads the `shakedown.*` settings.
pub fn kernel_args(node: &VmNode, public_key: &str) -> String {
    format!(
        "console=ttyS0 panic=-1 shakedown.ip={}/{} shakedown.gw={} shakedown.hostname={} shakedown.key={}",
        node.ip, node.prefix, node.gateway, node.name, public_key
    )
}

/// qemu, daemonized (it outlives the step that starts it; `remove` and `gc` stop it), its
/// console in the node's folder. A guest reboot resets the machine and boots again.
pub fn qemu_cmd(node: &VmNode, machine: &Machine, disk: &VmDisk, public_key: &str) -> Cmd {
    let accel = match machine.accelerator {
        Accelerator::Kvm => "kvm".to_string(),
        Accelerator::Tcg => "tcg,thread=multi".to_string(),
    };
    let images: Vec<String> = node
        .images
        .iter()
        .flat_map(|t| {
            [
                "-drive".to_string(),
                format!("file={},if=virtio,format=raw,readonly=on", t.display()),
            ]
        })
        .collect();
    Cmd::new("qemu-system-x86_64")
        .args([
            "-name".to_string(),
            format!("{},process=qemu-{}", node.name, node.name),
            "-machine".into(),
            "pc".into(),
            "-accel".into(),
            accel,
            "-cpu".into(),
            match machine.accelerator {
                Accelerator::Kvm => "host".into(),
                Accelerator::Tcg => "max".into(),
            },
            "-smp".into(),
            machine.cpus.to_string(),
            "-m".into(),
            machine.memory_mb.to_string(),
            "-nodefaults".into(),
            "-display".into(),
            "none".into(),
            "-kernel".into(),
            disk.kernel.vmlinuz().display().to_string(),
            "-initrd".into(),
            disk.kernel.initrd().display().to_string(),
            "-append".into(),
            kernel_args(node, public_key),
            "-drive".into(),
            format!(
                "file={},if=virtio,format=qcow2,cache=unsafe",
                node.overlay().display()
            ),
        ])
        .args(images)
        .args([
            "-netdev".to_string(),
            format!("tap,id=n0,ifname={},script=no,downscript=no", node.tap),
            "-device".into(),
            format!("virtio-net-pci,netdev=n0,mac={}", node.mac),
            "-serial".into(),
            format!("file:{}", node.console().display()),
            "-daemonize".into(),
            "-pidfile".into(),
            node.pidfile().display().to_string(),
        ])
}

/// `qemu-img create`: the node's copy-on-write overlay of the shared disk image.
pub fn overlay_cmd(node: &VmNode, disk: &VmDisk) -> Cmd {
    Cmd::new("qemu-img").args([
        "create".to_string(),
        "-q".into(),
        "-f".into(),
        "qcow2".into(),
        "-F".into(),
        "raw".into(),
        "-b".into(),
        disk.image.display().to_string(),
        node.overlay().display().to_string(),
    ])
}

/// The `ip` commands that make the node's tap and put it on the cluster's bridge. Its
/// alias names the run, so `gc` finds it.
pub fn tap_cmds(node: &VmNode, bridge: &str, run_id: &str) -> Vec<Cmd> {
    let ip = |a: &[&str]| Cmd::new("ip").args(a.iter().map(|s| s.to_string()));
    vec![
        ip(&["tuntap", "add", "dev", &node.tap, "mode", "tap"]),
        ip(&[
            "link",
            "set",
            "dev",
            &node.tap,
            "alias",
            &tap_alias(run_id, &node.name),
        ]),
        ip(&["link", "set", "dev", &node.tap, "master", bridge]),
        ip(&["link", "set", "dev", &node.tap, "up"]),
    ]
}

/// The alias of a run's tap: `shakedown run=<id> node=<name>`.
pub fn tap_alias(run_id: &str, node: &str) -> String {
    format!("shakedown run={run_id} node={node}")
}

/// The taps `ip -o link show` lists whose alias names shakedown (one run's, with `run_id`).
pub fn taps_in(ip_link: &str, run_id: Option<&str>) -> Vec<String> {
    let mut taps = Vec::new();
    for line in ip_link.lines() {
        // `ip -o` puts a link on one line: "7: sdv...: <...> ... \    alias shakedown run=..."
        let mut f = line.split_whitespace();
        let (Some(_), Some(name)) = (f.next(), f.next()) else {
            continue;
        };
        let name = name.trim_end_matches(':').split('@').next().unwrap_or("");
        if let Some(i) = line.find("alias shakedown run=") {
            let rest = &line[i + "alias shakedown run=".len()..];
            let id = rest.split_whitespace().next().unwrap_or("");
            if run_id.is_none_or(|r| r == id) {
                taps.push(name.to_string());
            }
        }
    }
    taps
}

/// ssh to the node as root with the cluster's key: host keys are new each boot, so they are
/// neither checked nor remembered. `remote` is quoted for the remote shell.
pub fn ssh_cmd(key: &Path, ip: Ipv4Addr, remote: &[String], stdin: bool) -> Cmd {
    let mut c = Cmd::new("ssh").args(ssh_options(key));
    if !stdin {
        c = c.arg("-n");
    }
    c.arg(format!("root@{ip}"))
        .arg("--")
        .arg(shell_words::join(remote))
}

pub fn ssh_options(key: &Path) -> Vec<String> {
    [
        "-i",
        &key.display().to_string(),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "ServerAliveInterval=5",
        "-o",
        "ServerAliveCountMax=6",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::vm::VmKernel;

    fn node() -> VmNode {
        VmNode {
            name: "sd-r-vm-vw1".into(),
            ip: "172.18.255.254".parse().unwrap(),
            prefix: 16,
            gateway: "172.18.0.1".parse().unwrap(),
            tap: tap_name("sd-r-vm-vw1"),
            mac: mac("sd-r-vm-vw1"),
            dir: "/w/vm/sd-r-vm-vw1".into(),
            images: Some("/c/workers-images.tar".into()),
        }
    }

    #[test]
    fn vms_take_addresses_from_the_top_of_the_subnet() {
        assert_eq!(
            vm_address("172.18.0.0/16", 0),
            Some(("172.18.255.254".parse().unwrap(), 16))
        );
        assert_eq!(
            vm_address("10.1.2.0/24", 2),
            Some(("10.1.2.252".parse().unwrap(), 24))
        );
        // Never in the bottom half, where docker hands out addresses.
        assert_eq!(
            vm_address("10.1.2.0/24", 126),
            Some(("10.1.2.128".parse().unwrap(), 24))
        );
        assert_eq!(vm_address("10.1.2.0/24", 127), None);
        assert_eq!(vm_address("nonsense", 0), None);
    }

    #[test]
    fn names_fit_linux_and_stay_stable() {
        let t = tap_name("sd-20261202-abcdef-vm-bridge-mixed-vw1");
        assert!(t.len() <= 15, "{t}");
        assert_eq!(t, tap_name("sd-20261202-abcdef-vm-bridge-mixed-vw1"));
        assert_ne!(t, tap_name("sd-20261202-abcdef-vm-bridge-mixed-vw2"));
        let m = mac("n1");
        assert!(m.starts_with("52:54:00:") && m.len() == 17, "{m}");
    }

    #[test]
    fn qemu_boots_the_overlay_with_the_node_settings_on_the_kernel_line() {
        let disk = VmDisk {
            kernel: VmKernel {
                dir: "/c/k".into(),
                version: "6.1".into(),
            },
            image: "/c/d/disk.raw".into(),
            preloaded: None,
        };
        let m = Machine {
            accelerator: Accelerator::Tcg,
            cpus: 2,
            memory_mb: 2048,
        };
        let c = qemu_cmd(&node(), &m, &disk, "AAAAkey");
        let line = c.args.join(" ");
        for want in [
            "-accel tcg,thread=multi",
            "-smp 2",
            "-m 2048",
            "shakedown.ip=172.18.255.254/16 shakedown.gw=172.18.0.1 shakedown.hostname=sd-r-vm-vw1 shakedown.key=AAAAkey",
            "file=/w/vm/sd-r-vm-vw1/disk.qcow2,if=virtio",
            "-daemonize -pidfile /w/vm/sd-r-vm-vw1/qemu.pid",
            "cache=unsafe -drive file=/c/workers-images.tar,if=virtio,format=raw,readonly=on",
        ] {
            assert!(line.contains(want), "{want:?} not in {line}");
        }
        assert!(line.contains(&format!("ifname={},", tap_name("sd-r-vm-vw1"))));
        let o = overlay_cmd(&node(), &disk).args.join(" ");
        assert!(
            o.ends_with("-b /c/d/disk.raw /w/vm/sd-r-vm-vw1/disk.qcow2"),
            "{o}"
        );
    }

    #[test]
    fn gc_finds_taps_by_their_alias() {
        let out = "\
6: br-a736502bdf19: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default \\    link/ether 02:42:fa:0e:95:d4 brd ff:ff:ff:ff:ff:ff
9: sdv0123456789: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc fq_codel master br-a736502bdf19 state UP mode DEFAULT group default qlen 1000\\    link/ether 3a:1b:2c:3d:4e:5f brd ff:ff:ff:ff:ff:ff\\    alias shakedown run=r1 node=n1
10: sdvaaaaaaaaaa: <BROADCAST> mtu 1500 qdisc noop state DOWN mode DEFAULT group default qlen 1000\\    link/ether 3a:1b:2c:3d:4e:60 brd ff:ff:ff:ff:ff:ff\\    alias shakedown run=r2 node=n2
11: tapother: <BROADCAST> mtu 1500 state DOWN\\    alias someone else";
        assert_eq!(taps_in(out, None), ["sdv0123456789", "sdvaaaaaaaaaa"]);
        assert_eq!(taps_in(out, Some("r2")), ["sdvaaaaaaaaaa"]);
        assert!(taps_in(out, Some("r3")).is_empty());
    }

    #[test]
    fn commands_reach_the_node_over_ssh_quoted_once() {
        let c = ssh_cmd(
            Path::new("/w/key"),
            "10.0.0.9".parse().unwrap(),
            &["sh".into(), "-c".into(), "echo 'a b' > /x".into()],
            false,
        );
        assert_eq!(c.program, "ssh");
        assert!(c.args.contains(&"-n".to_string()));
        assert_eq!(
            c.args[c.args.len() - 3..],
            ["root@10.0.0.9", "--", "sh -c 'echo '\\''a b'\\'' > /x'"]
        );
        let with_stdin = ssh_cmd(
            Path::new("/w/key"),
            "10.0.0.9".parse().unwrap(),
            &["cat".into()],
            true,
        );
        assert!(!with_stdin.args.contains(&"-n".to_string()));
    }
}
