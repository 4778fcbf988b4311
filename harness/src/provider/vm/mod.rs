//! Nodes as qemu VMs booting Debian's cloud kernel and the node image's root filesystem
//! (see `images::vm`), beside container nodes on the same network: each VM's tap device is
//! on the cluster's docker bridge, so VMs and containers share one L2 network, and a
//! topology may mix them (`vms: {workers: 1}`: a container control plane, a VM worker).
//!
//! Nodes are command runners here too: a VM runs commands over ssh (dropbear in the VM, a
//! key made for the cluster and handed to the VM on its kernel command line); a container
//! node through the container provider. Every qemu is started with the run's
//! `SHAKEDOWN_RUN_ID` in its environment and every tap carries the run in its alias, so
//! `gc` finds what a killed run left; the disks live in the run's work folder.

pub mod accel;
pub mod qemu;

use super::container::ContainerProvider;
use super::{Cluster, ClusterSpec, Collected, NodeInfo, Provider, ProviderError, Role};
use crate::process::{Cmd, CommandError, Runner, StepLog};
use qemu::{Machine, VmNode};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a cluster with VM nodes needs beyond [`ClusterSpec`].
#[derive(Debug, Clone)]
pub struct VmCluster {
    pub disk: VmDisk,
    pub machine: Machine,
    /// How many control planes and workers are VMs (the rest are containers).
    pub control_planes: u32,
    pub workers: u32,
}

/// A kernel and initramfs ready to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmKernel {
    pub dir: PathBuf,
    /// `uname -r` of the kernel, e.g. `6.1.0-57-cloud-amd64`.
    pub version: String,
}

impl VmKernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }
}

/// A VM node's disk: the kernel it boots with, and the ext4 image its overlay starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDisk {
    pub kernel: VmKernel,
    pub image: PathBuf,
    /// The images tarball whose images are already in the disk's containerd (None: the
    /// provider imports them after boot).
    pub preloaded: Option<PathBuf>,
}

/// How long a VM may take from qemu's start to answering ssh (TCG: about 30 s measured).
pub const BOOT_LIMIT: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
struct State {
    vms: BTreeMap<String, VmNode>,
    /// The cluster's ssh key (private half; never logged, never in artifacts).
    key: Option<PathBuf>,
    /// The cluster's folder in the run's work folder: the key, and each VM's folder.
    dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct VmProvider {
    containers: ContainerProvider,
    state: Arc<Mutex<State>>,
}

impl Default for VmProvider {
    fn default() -> Self {
        VmProvider::new()
    }
}

impl VmProvider {
    pub fn new() -> VmProvider {
        VmProvider {
            containers: ContainerProvider::docker(),
            state: Arc::default(),
        }
    }

    /// Whether qemu is installed.
    pub fn installed() -> bool {
        crate::process::on_path("qemu-system-x86_64").is_some()
    }

    fn vm(&self, node: &str) -> Option<(VmNode, PathBuf)> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let vm = s.vms.get(node)?.clone();
        Some((vm, s.key.clone()?))
    }

    fn ssh(&self, vm: &VmNode, key: &Path, args: &[String], stdin: bool) -> Cmd {
        qemu::ssh_cmd(key, vm.ip, args, stdin)
    }

    /// `sh -c` running the ssh command with a redirection on this side.
    fn ssh_shell(&self, vm: &VmNode, key: &Path, remote: &[String], redirect: &str) -> Cmd {
        let ssh = self.ssh(vm, key, remote, true);
        Cmd::new("sh")
            .arg("-c")
            .arg(format!("{} {redirect}", shell_line(&ssh)))
    }

    /// Waits until the VM answers ssh, saying every 30 s what it waits for; fails at once
    /// when qemu is gone, with the console's last lines.
    async fn wait_for_ssh(&self, r: &Runner, vm: &VmNode, key: &Path) -> Result<(), ProviderError> {
        let started = Instant::now();
        let mut beat = crate::readiness::Heartbeat::new();
        loop {
            if !qemu_running(vm) {
                return Err(boot_failed(vm, "qemu exited"));
            }
            let probe = self.ssh(vm, key, &["true".into()], false);
            if r.run(probe).await.is_ok() {
                r.log.line(&format!(
                    "[shakedown: {} answered ssh {:.1}s after qemu started]",
                    vm.name,
                    started.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            if started.elapsed() > BOOT_LIMIT {
                return Err(boot_failed(
                    vm,
                    &format!("no ssh answer within {}s", BOOT_LIMIT.as_secs()),
                ));
            }
            if let Some(line) = beat.due(&format!(
                "{} ({}) to answer ssh; console: {}",
                vm.name,
                vm.ip,
                last_line(&vm.console())
            )) {
                r.log.line(&line);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = r.cancel.cancelled() => return Err(ProviderError::Command(CommandError::Stopped {
                    cmd: format!("wait for ssh on {}", vm.name),
                    how: "cancelled",
                    elapsed: started.elapsed(),
                })),
            }
        }
    }

    /// Stops one VM: SIGTERM to qemu (it powers the machine off), SIGKILL after 5 s; then
    /// its tap and its folder.
    fn stop_vm(&self, vm: &VmNode, log: Option<&StepLog>, limit: Duration) {
        if let Some(pid) = qemu_pid(vm) {
            let say = format!("+ kill {pid}  # qemu of {}", vm.name);
            match log {
                Some(l) => l.line(&say),
                None => eprintln!("{say}"),
            }
            crate::process::terminate(pid, Duration::from_secs(5));
        }
        crate::process::run_blocking(
            &Cmd::new("ip").args(["link", "del", "dev", &vm.tap]),
            log,
            "remove the VM's tap",
            limit,
            false,
        );
        let _ = std::fs::remove_dir_all(&vm.dir);
    }

    /// Stops every VM, then forgets the key and the cluster's folder (the `vm` folder and
    /// the run's work folder too, once empty).
    fn stop_all(&self, log: Option<&StepLog>, limit: Duration) {
        for vm in self.vms() {
            self.stop_vm(&vm, log, limit);
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.vms.clear();
        st.key = None;
        if let Some(dir) = st.dir.take() {
            let _ = std::fs::remove_dir_all(&dir);
            // `<work>/vm`, then the run's work folder, each only once empty.
            for up in dir.ancestors().skip(1).take(2) {
                let _ = std::fs::remove_dir(up);
            }
        }
    }

    fn vms(&self) -> Vec<VmNode> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.vms.values().cloned().collect()
    }
}

/// `cmd` as one line for `sh -c`, every word quoted (the program and arguments only).
fn shell_line(cmd: &Cmd) -> String {
    shell_words::join(std::iter::once(&cmd.program).chain(&cmd.args))
}

fn boot_failed(vm: &VmNode, why: &str) -> ProviderError {
    ProviderError::Unsupported {
        provider: "vm",
        message: format!(
            "failed to boot VM {} ({why}); last console lines ({}):\n{}",
            vm.name,
            vm.console().display(),
            crate::process::last_lines(
                &String::from_utf8_lossy(&std::fs::read(vm.console()).unwrap_or_default()),
                15
            )
        ),
    }
}

fn last_line(p: &Path) -> String {
    let text = String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).to_string();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(nothing yet)")
        .chars()
        .filter(|c| !c.is_control())
        .take(160)
        .collect()
}

fn qemu_pid(vm: &VmNode) -> Option<i32> {
    std::fs::read_to_string(vm.pidfile())
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn qemu_running(vm: &VmNode) -> bool {
    qemu_pid(vm).is_some_and(crate::process::alive)
}

/// The docker network's bridge, subnet and gateway.
async fn network_facts(
    r: &Runner,
    network: &str,
) -> Result<(String, String, Ipv4Addr), ProviderError> {
    let out = r
        .output(Cmd::new("docker").args([
            "network",
            "inspect",
            "--format",
            "{{.Id}} {{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}",
            network,
        ]))
        .await?;
    let f: Vec<&str> = out.split_whitespace().collect();
    let bad = || ProviderError::Unsupported {
        provider: "vm",
        message: format!(
            "failed to read network {network}'s bridge, subnet and gateway from {out:?}"
        ),
    };
    if f.len() < 3 || f[0].len() < 12 {
        return Err(bad());
    }
    let gateway: Ipv4Addr = f[2].parse().map_err(|_| bad())?;
    Ok((format!("br-{}", &f[0][..12]), f[1].to_string(), gateway))
}

/// The `/etc/hosts` lines every node gets for the others (a VM cannot ask docker's DNS).
fn hosts_lines(nodes: &[NodeInfo]) -> String {
    nodes
        .iter()
        .filter(|n| !n.ip.is_empty())
        .map(|n| format!("{} {}\n", n.ip, n.name))
        .collect()
}

#[async_trait::async_trait]
impl Provider for VmProvider {
    fn name(&self) -> &'static str {
        "vm"
    }

    async fn create(
        &self,
        r: &Runner,
        spec: &ClusterSpec,
        note: &(dyn Fn(String) + Sync),
    ) -> Result<Cluster, ProviderError> {
        let vmc = spec.vm.clone().ok_or_else(|| ProviderError::Unsupported {
            provider: "vm",
            message: "the cluster spec names no VM disk (image-build makes it)".into(),
        })?;
        if vmc.control_planes > 0 && spec.load_balancer_image.is_some() {
            return Err(ProviderError::Unsupported {
                provider: "vm",
                message: "several control planes as VMs behind a load balancer are not supported yet; make the control planes containers (`vms: {workers: N}`)".into(),
            });
        }
        // Containers first (this also makes the network); VMs join their bridge.
        let in_containers = ClusterSpec {
            control_planes: spec.control_planes - vmc.control_planes,
            workers: spec.workers - vmc.workers,
            ..spec.clone()
        };
        let mut cluster = self.containers.create(r, &in_containers, note).await?;
        cluster.provider = Arc::new(self.clone());
        let (bridge, subnet, gateway) = network_facts(r, &cluster.network).await?;
        let work = crate::paths::work_dir(&spec.run_id)
            .join("vm")
            .join(&spec.name);
        std::fs::create_dir_all(&work).map_err(|source| ProviderError::Write {
            path: work.clone(),
            source,
        })?;
        let key = work.join("id_ed25519");
        let _ = std::fs::remove_file(&key);
        let _ = std::fs::remove_file(key.with_extension("pub"));
        r.run(Cmd::new("ssh-keygen").args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "shakedown",
            "-f",
            &key.display().to_string(),
        ]))
        .await?;
        let public = std::fs::read_to_string(key.with_extension("pub")).map_err(|source| {
            ProviderError::Write {
                path: key.with_extension("pub"),
                source,
            }
        })?;
        let public = public.split_whitespace().nth(1).unwrap_or("").to_string();
        {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.key = Some(key.clone());
            st.dir = Some(work.clone());
        }

        let mut names = Vec::new();
        for i in 1..=vmc.control_planes {
            names.push((format!("{}-vcp{i}", spec.name), Role::ControlPlane));
        }
        for i in 1..=vmc.workers {
            names.push((format!("{}-vw{i}", spec.name), Role::Worker));
        }
        // Images the disk does not hold come on a second disk and are imported after boot
        // (not through ssh, whose encryption an emulated CPU makes slow).
        let to_import = match (&spec.images_tar, &vmc.disk.preloaded) {
            (Some(t), Some(p)) if t == p => None,
            (t, _) => t.clone(),
        };
        let mut started = Vec::new();
        for (index, (name, role)) in names.into_iter().enumerate() {
            let (ip, prefix) = qemu::vm_address(&subnet, index as u32).ok_or_else(|| {
                ProviderError::Unsupported {
                    provider: "vm",
                    message: format!("failed to find an address for VM {name} in {subnet}"),
                }
            })?;
            let vm = VmNode {
                name: name.clone(),
                ip,
                prefix,
                gateway,
                tap: qemu::tap_name(&name),
                mac: qemu::mac(&name),
                dir: work.join(&name),
                images: to_import.clone(),
            };
            // Registered before anything of it exists, so a failure below removes it.
            cluster.nodes.push(NodeInfo {
                name: name.clone(),
                role,
                ip: ip.to_string(),
                vm: true,
            });
            self.state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .vms
                .insert(name.clone(), vm.clone());
            std::fs::create_dir_all(&vm.dir).map_err(|source| ProviderError::Write {
                path: vm.dir.clone(),
                source,
            })?;
            for c in qemu::tap_cmds(&vm, &bridge, &spec.run_id) {
                r.run(c).await?;
            }
            r.run(qemu::overlay_cmd(&vm, &vmc.disk)).await?;
            r.run(qemu::qemu_cmd(&vm, &vmc.machine, &vmc.disk, &public))
                .await?;
            started.push(vm);
        }
        // Control planes first, then workers, whatever made them.
        cluster.nodes.sort_by_key(|n| match n.role {
            Role::ControlPlane => 0,
            _ => 1,
        });
        note(format!(
            "{} VM(s) started under {} ({} vCPU, {} MiB each, kernel {}); waiting for ssh",
            started.len(),
            vmc.machine.accelerator.as_str(),
            vmc.machine.cpus,
            vmc.machine.memory_mb,
            vmc.disk.kernel.version
        ));
        futures::future::try_join_all(started.iter().map(|vm| self.wait_for_ssh(r, vm, &key)))
            .await?;
        // Names: a VM cannot ask docker's DNS, and containers do not know the VMs.
        let hosts = hosts_lines(&cluster.nodes);
        let mut loopback = String::new();
        for h in &spec.loopback_hosts {
            loopback.push_str(&format!("127.0.0.1 {h}\n"));
        }
        for n in &cluster.nodes {
            let add = if n.vm {
                format!("{loopback}{hosts}")
            } else {
                hosts_lines(
                    &cluster
                        .nodes
                        .iter()
                        .filter(|o| o.vm)
                        .cloned()
                        .collect::<Vec<_>>(),
                )
            };
            r.run(
                cluster
                    .exec(&n.name, &["sh", "-c", "cat >> /etc/hosts"])
                    .stdin(add.into_bytes()),
            )
            .await?;
        }
        futures::future::try_join_all(
            started
                .iter()
                .map(|vm| super::container::wait_for_systemd(r, &cluster, &vm.name)),
        )
        .await?;
        if to_import.is_none() && spec.images_tar.is_some() {
            note("images: preloaded in the VM disk's containerd".into());
        }
        if to_import.is_some() {
            let import = super::container::import_images(spec.runtime, qemu::IMAGES_DEVICE);
            note(format!(
                "importing images into each VM's {} from its images disk",
                super::container::image_store(spec.runtime)
            ));
            for vm in &started {
                let t = Instant::now();
                r.run(cluster.exec(&vm.name, &import)).await?;
                note(format!(
                    "{}: images imported in {:.1}s",
                    vm.name,
                    t.elapsed().as_secs_f64()
                ));
            }
        }
        Ok(cluster)
    }

    fn exec(&self, node: &str, args: &[String], stdin: bool) -> Cmd {
        match self.vm(node) {
            Some((vm, key)) => self.ssh(&vm, &key, args, stdin),
            None => self.containers.exec(node, args, stdin),
        }
    }

    fn load_image(&self, node: &str, tar: &Path, runtime: crate::release::era::Runtime) -> Cmd {
        match self.vm(node) {
            Some((vm, key)) => self.ssh_shell(
                &vm,
                &key,
                &super::container::import_stdin(runtime)
                    .into_iter()
                    .map(String::from)
                    .collect::<Vec<_>>(),
                &format!("< {}", shell_words::quote(&tar.display().to_string())),
            ),
            None => self.containers.load_image(node, tar, runtime),
        }
    }

    fn copy_from(&self, node: &str, from: &str, to: &Path) -> Cmd {
        match self.vm(node) {
            // As `docker cp -L`: `to` becomes a copy of `from`, a file or a folder.
            Some((vm, key)) => {
                let src = Path::new(from);
                let dir = src
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "/".into());
                let base = src
                    .file_name()
                    .map(|b| b.to_string_lossy().to_string())
                    .unwrap_or_else(|| ".".into());
                let ssh = self.ssh(
                    &vm,
                    &key,
                    &[
                        "tar".into(),
                        "-C".into(),
                        dir,
                        "-chf".into(),
                        "-".into(),
                        base.clone(),
                    ],
                    false,
                );
                let to = shell_words::quote(&to.display().to_string()).to_string();
                Cmd::new("sh").arg("-c").arg(format!(
                    "set -e; t=$(mktemp -d); trap 'rm -rf \"$t\"' EXIT; {} | tar -x -C \"$t\"; rm -rf {to}; mv \"$t\"/{} {to}",
                    shell_line(&ssh),
                    shell_words::quote(&base)
                ))
            }
            None => self.containers.copy_from(node, from, to),
        }
    }

    fn copy_to(&self, node: &str, from: &Path, to: &str) -> Cmd {
        match self.vm(node) {
            Some((vm, key)) => {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(from)
                    .map(|m| m.permissions().mode() & 0o7777)
                    .unwrap_or(0o644);
                let script = format!("cat > {0} && chmod {mode:o} {0}", shell_words::quote(to));
                self.ssh_shell(
                    &vm,
                    &key,
                    &["sh".into(), "-c".into(), script],
                    &format!("< {}", shell_words::quote(&from.display().to_string())),
                )
            }
            None => self.containers.copy_to(node, from, to),
        }
    }

    async fn stopped_nodes(
        &self,
        r: &Runner,
        cluster: &Cluster,
    ) -> Result<Vec<String>, CommandError> {
        let mut stopped = if cluster.container_names().is_empty() {
            Vec::new()
        } else {
            self.containers.stopped_nodes(r, cluster).await?
        };
        for vm in self.vms() {
            if !qemu_running(&vm) {
                stopped.push(format!(
                    "node {} (VM) is not running: qemu exited; console: {}",
                    vm.name,
                    last_line(&vm.console())
                ));
            }
        }
        Ok(stopped)
    }

    async fn remove(&self, r: &Runner, cluster: &Cluster) -> Result<(), CommandError> {
        self.stop_all(Some(&r.log), Duration::from_secs(30));
        self.containers.remove(r, cluster).await
    }

    fn remove_on_drop(&self, cluster: &Cluster, log: Option<&StepLog>, limit: Duration) {
        self.stop_all(log, limit);
        self.containers.remove_on_drop(cluster, log, limit);
    }

    /// Removes the taps labelled by shakedown (or one run); qemu processes go with the
    /// run's processes (`gc` stops those by `SHAKEDOWN_RUN_ID`), disks with its work folder.
    async fn gc(&self, r: &Runner, run_id: Option<&str>) -> Result<Collected, CommandError> {
        let links = r
            .output(Cmd::new("ip").args(["-o", "link", "show"]))
            .await?;
        let mut c = Collected::default();
        for tap in qemu::taps_in(&links, run_id) {
            r.run(Cmd::new("ip").args(["link", "del", "dev", &tap]))
                .await?;
            c.networks.push(format!("tap {tap}"));
        }
        Ok(c)
    }

    fn shell_hint(&self, node: &str) -> String {
        match self.vm(node) {
            Some((vm, key)) => {
                let mut argv = vec!["ssh".to_string()];
                argv.extend(qemu::ssh_options(&key));
                argv.push(format!("root@{}", vm.ip));
                shell_words::join(argv)
            }
            None => self.containers.shell_hint(node),
        }
    }

    fn stop_node(&self, node: &str) -> Option<Cmd> {
        match self.vm(node) {
            Some((vm, key)) => Some(self.ssh(&vm, &key, &["poweroff".into()], false)),
            None => self.containers.stop_node(node),
        }
    }

    /// A VM reboots for real: systemd stops everything, the kernel resets the machine, qemu
    /// boots it again from its disk with the same settings.
    fn reboot_node(&self, node: &str) -> Option<Cmd> {
        match self.vm(node) {
            Some((vm, key)) => {
                Some(self.ssh(&vm, &key, &["systemctl".into(), "reboot".into()], false))
            }
            None => self.containers.reboot_node(node),
        }
    }

    fn console_log(&self, node: &str) -> Option<PathBuf> {
        self.vm(node).map(|(vm, _)| vm.console())
    }

    fn boot_id(&self, node: &str) -> Option<Cmd> {
        match self.vm(node) {
            Some((vm, key)) => Some(self.ssh(
                &vm,
                &key,
                &["cat".into(), "/proc/sys/kernel/random/boot_id".into()],
                false,
            )),
            None => self.containers.boot_id(node),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_learn_only_the_vms_and_vms_learn_everyone() {
        let n = |name: &str, ip: &str, vm| NodeInfo {
            name: name.into(),
            role: Role::Worker,
            ip: ip.into(),
            vm,
        };
        let all = [
            n("cp1", "172.18.0.2", false),
            n("vw1", "172.18.255.254", true),
        ];
        assert_eq!(hosts_lines(&all), "172.18.0.2 cp1\n172.18.255.254 vw1\n");
    }

    #[test]
    fn commands_for_container_nodes_go_to_the_container_engine() {
        let p = VmProvider::new();
        p.state.lock().unwrap().key = Some("/w/id_ed25519".into());
        p.state.lock().unwrap().vms.insert(
            "vw1".into(),
            VmNode {
                name: "vw1".into(),
                ip: "172.18.255.254".parse().unwrap(),
                prefix: 16,
                gateway: "172.18.0.1".parse().unwrap(),
                tap: "sdvx".into(),
                mac: "52:54:00:00:00:01".into(),
                dir: "/w/vw1".into(),
                images: None,
            },
        );
        assert_eq!(p.exec("cp1", &["true".into()], false).program, "docker");
        let vm = p.exec("vw1", &["true".into()], false);
        assert_eq!(vm.program, "ssh");
        assert!(vm.args.contains(&"root@172.18.255.254".to_string()));
        let load = p.load_image(
            "vw1",
            Path::new("/c/images.tar"),
            crate::release::era::Runtime::Containerd,
        );
        assert!(
            load.args[1].contains("ctr -n k8s.io images import -"),
            "{:?}",
            load.args
        );
        assert!(load.args[1].ends_with("< /c/images.tar"), "{:?}", load.args);
    }
}
