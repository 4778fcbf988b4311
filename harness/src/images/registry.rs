//! A registry on this machine: Debian's docker-registry (distribution 2.8) in a container,
//! published on 127.0.0.1 (for pushes from here) and on docker's bridge address (for nodes),
//! never on an outside address. The images built here are pushed into it under the names
//! upstream registries serve them by, so a cluster can pull everything through mirrors.

use super::{BuildError, KubeArtifacts, AGNHOST_TAG, BUSYBOX_TAG};
use crate::process::{Cmd, Runner};
use crate::provider::{LABEL_MANAGED, LABEL_RUN};
use crate::release::mirror::{path_in_registry, Mirror};
use crate::release::{era, KubeVersion};
use std::path::Path;
use std::time::Duration;

pub const REGISTRY_IMAGE: &str = "shakedown.local/registry:2.8";

/// A running registry.
#[derive(Debug, Clone)]
pub struct Registry {
    pub container: String,
    pub port: u16,
    /// Where nodes reach it: `http://<docker bridge gateway>:<port>`.
    pub node_endpoint: String,
}

impl Registry {
    fn new(port: u16, gateway: &str) -> Registry {
        Registry {
            container: container_name(port),
            port,
            node_endpoint: format!("http://{gateway}:{port}"),
        }
    }

    /// Where this machine pushes: docker treats 127.0.0.0/8 as an insecure registry.
    pub fn push_host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One mirror per upstream registry, all served by this registry.
    pub fn mirrors(&self, registries: &[&str]) -> Vec<Mirror> {
        registries
            .iter()
            .map(|r| Mirror {
                registry: r.to_string(),
                endpoint: self.node_endpoint.clone(),
            })
            .collect()
    }
}

pub fn container_name(port: u16) -> String {
    format!("shakedown-registry-{port}")
}

fn stage(stage: &'static str) -> impl FnOnce(crate::process::CommandError) -> BuildError {
    move |source| BuildError::Stage { stage, source }
}

/// Builds the registry image (cached) and starts a registry on `port`; an old registry on
/// that port is replaced.
pub async fn start(
    root: &Path,
    cache: &Path,
    port: u16,
    r: &Runner,
) -> Result<Registry, BuildError> {
    r.run(super::image_script(
        root,
        cache,
        "build-registry-image.sh",
        REGISTRY_IMAGE,
    ))
    .await
    .map_err(stage("registry image"))?;
    let gateway = bridge_gateway(r).await?;
    let reg = Registry::new(port, &gateway);
    let name = reg.container.clone();
    let _ = r
        .run(Cmd::new("docker").args(["rm", "-f", "-v", &name]))
        .await;
    r.run(Cmd::new("docker").args([
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("{LABEL_MANAGED}=true"),
        "--label",
        &format!("{LABEL_RUN}=registry-{port}"),
        "-p",
        &format!("127.0.0.1:{port}:5000"),
        "-p",
        &format!("{gateway}:{port}:5000"),
        REGISTRY_IMAGE,
    ]))
    .await
    .map_err(stage("start the registry"))?;
    // The API answers once the registry listens.
    let probe = format!("http://{}/v2/", reg.push_host());
    r.log.line(&format!(
        "+ GET {probe} (until it answers 200, at most 50 tries)"
    ));
    let mut last = String::new();
    for _ in 0..50 {
        match r
            .output(Cmd::new("docker").args([
                "inspect",
                "--format",
                "{{.State.Status}}",
                &reg.container,
            ]))
            .await
        {
            Ok(s) if s == "running" && ping(&probe).await => return Ok(reg),
            Ok(s) if s == "running" => last = "the API did not answer 200".into(),
            Ok(s) => last = format!("the container is {s}"),
            Err(e) => last = crate::error::chain(&e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A registry that never answered is not left running.
    let _ = stop(port, r).await;
    Err(BuildError::RegistryDown { url: probe, last })
}

/// docker's bridge address: nodes reach the registry there, and nothing outside does.
async fn bridge_gateway(r: &Runner) -> Result<String, BuildError> {
    let ipam = r
        .output(Cmd::new("docker").args([
            "network",
            "inspect",
            "bridge",
            "--format",
            "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}\n{{end}}",
        ]))
        .await
        .map_err(stage("find docker's bridge address"))?;
    gateway_of(&ipam).map_err(|what| BuildError::BridgeAddress { what })
}

/// The bridge's IPv4 address from lines of `<subnet> [<gateway>]` (one per address
/// family). A daemon that was given no gateway (a fresh dockerd may list the subnet alone)
/// puts its bridge on the subnet's first address. Never empty and never IPv6: an empty
/// address would publish the registry on every interface.
pub fn gateway_of(ipam: &str) -> Result<String, String> {
    for line in ipam.lines() {
        let mut words = line.split_whitespace();
        let Some(net) = words
            .next()
            .and_then(|s| s.split('/').next())
            .and_then(|a| a.parse::<std::net::Ipv4Addr>().ok())
        else {
            continue;
        };
        return match words.next() {
            Some(gw) => gw
                .parse::<std::net::Ipv4Addr>()
                .map(|g| g.to_string())
                .map_err(|_| format!("failed to read docker's bridge address: gateway {gw:?} of {net} is no IPv4 address")),
            None => Ok(std::net::Ipv4Addr::from(u32::from(net) + 1).to_string()),
        };
    }
    Err(format!(
        "failed to find docker's bridge address: its network lists {ipam:?}, no IPv4 subnet"
    ))
}

/// The registry on `port` as nodes reach it.
pub async fn on_port(port: u16, r: &Runner) -> Result<Registry, BuildError> {
    Ok(Registry::new(port, &bridge_gateway(r).await?))
}

async fn ping(url: &str) -> bool {
    let u = url.to_string();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        agent.get(&u).call().is_ok_and(|r| r.status() == 200)
    })
    .await
    .unwrap_or(false)
}

/// Removes the registry on `port` and its storage.
pub async fn stop(port: u16, r: &Runner) -> Result<(), BuildError> {
    r.run(Cmd::new("docker").args(["rm", "-f", "-v", &container_name(port)]))
        .await
        .map_err(stage("remove the registry"))?;
    Ok(())
}

/// A local image and the upstream name it is pushed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub local: String,
    pub upstream: String,
}

fn base_name(image: &str) -> &str {
    let last = image.rsplit('/').next().unwrap_or(image);
    let name = last.split(':').next().unwrap_or(last);
    name.strip_suffix("-amd64").unwrap_or(name)
}

fn tag_of(image: &str) -> &str {
    image
        .rsplit('/')
        .next()
        .and_then(|l| l.split_once(':'))
        .map_or("", |(_, t)| t)
}

/// What to push for a cluster of `v` pulling through mirrors: each image `kubeadm config
/// images list` names, from the local build of the same component (etcd and pause are
/// this machine's builds standing in under the tags kubeadm asks for), plus agnhost and
/// busybox for workloads. Images with no local build (CoreDNS) are left out and listed.
pub fn plan_pushes(
    local: &[String],
    kubeadm_list: &[String],
    v: &KubeVersion,
) -> (Vec<Push>, Vec<String>) {
    let mut pushes = Vec::new();
    let mut absent = Vec::new();
    let find = |name: &str, tag: &str| {
        let same: Vec<&String> = local.iter().filter(|l| base_name(l) == name).collect();
        same.iter()
            .find(|l| tag_of(l) == tag)
            .or_else(|| same.first())
            .map(|s| s.to_string())
    };
    for want in kubeadm_list {
        match find(base_name(want), tag_of(want)) {
            Some(l) => pushes.push(Push {
                local: l,
                upstream: want.clone(),
            }),
            None => absent.push(want.clone()),
        }
    }
    for (name, tag, upstream) in [
        ("agnhost", AGNHOST_TAG, era::agnhost_image(v, AGNHOST_TAG)),
        (
            "busybox",
            BUSYBOX_TAG,
            format!("docker.io/library/busybox:{BUSYBOX_TAG}"),
        ),
    ] {
        if let Some(l) = find(name, tag) {
            pushes.push(Push { local: l, upstream });
        }
    }
    (pushes, absent)
}

/// Pushes each image into the registry under its upstream path.
pub async fn push(reg: &Registry, pushes: &[Push], r: &Runner) -> Result<(), BuildError> {
    for p in pushes {
        let target = format!("{}/{}", reg.push_host(), path_in_registry(&p.upstream));
        r.run(Cmd::new("docker").args(["tag", &p.local, &target]))
            .await
            .map_err(stage("tag for the registry"))?;
        let pushed = r
            .run(Cmd::new("docker").args(["push", "-q", &target]))
            .await
            .map_err(stage("push to the registry"));
        let _ = r.run(Cmd::new("docker").args(["rmi", &target])).await;
        pushed?;
    }
    Ok(())
}

/// The pushes of a local build: asks the build's kubeadm what it pulls.
pub async fn pushes_for(
    art: &KubeArtifacts,
    r: &Runner,
) -> Result<(Vec<Push>, Vec<String>), BuildError> {
    let repository = era::default_registry(&art.version);
    let list = super::release::kubeadm_images(
        &art.bin_dir.join("kubeadm"),
        &art.raw_version,
        &art.version,
        repository,
        r,
    )
    .await?
    .unwrap_or_default();
    Ok(plan_pushes(&art.images, &list, &art.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridge_address_is_never_empty() {
        assert_eq!(
            gateway_of("172.17.0.0/16 172.17.0.1").unwrap(),
            "172.17.0.1"
        );
        // Seen on a fresh dockerd 20.10: the default bridge lists its subnet alone.
        assert_eq!(gateway_of("172.17.0.0/16 ").unwrap(), "172.17.0.1");
        assert_eq!(gateway_of("10.9.0.0/24").unwrap(), "10.9.0.1");
        assert!(gateway_of("").is_err());
        assert!(gateway_of("fd00::/64").is_err());
        // Dual stack: one line per family, in either order.
        assert_eq!(
            gateway_of("fd00::/64 fd00::1\n172.17.0.0/16 172.17.0.1\n").unwrap(),
            "172.17.0.1"
        );
        assert_eq!(
            gateway_of("172.18.0.0/16\nfd00::/64 fd00::1\n").unwrap(),
            "172.18.0.1"
        );
    }

    #[test]
    fn pushes_name_local_builds_as_kubeadm_pulls_them() {
        let local: Vec<String> = [
            "shakedown.local/kube-apiserver:v1.20.2",
            "shakedown.local/etcd:3.4.23-shakedown",
            "shakedown.local/pause:3.4.1",
            "shakedown.local/pause:3.2",
            "shakedown.local/agnhost:2.21",
            "shakedown.local/busybox:1.29",
        ]
        .map(String::from)
        .to_vec();
        let list: Vec<String> = [
            "k8s.gcr.io/kube-apiserver:v1.20.2",
            "k8s.gcr.io/pause:3.2",
            "k8s.gcr.io/etcd:3.4.13-0",
            "k8s.gcr.io/coredns:1.7.0",
        ]
        .map(String::from)
        .to_vec();
        let (p, absent) = plan_pushes(&local, &list, &"v1.20.2".parse().unwrap());
        let pairs: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.local.as_str(), p.upstream.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                (
                    "shakedown.local/kube-apiserver:v1.20.2",
                    "k8s.gcr.io/kube-apiserver:v1.20.2"
                ),
                ("shakedown.local/pause:3.2", "k8s.gcr.io/pause:3.2"),
                (
                    "shakedown.local/etcd:3.4.23-shakedown",
                    "k8s.gcr.io/etcd:3.4.13-0"
                ),
                (
                    "shakedown.local/agnhost:2.21",
                    "k8s.gcr.io/e2e-test-images/agnhost:2.21"
                ),
                (
                    "shakedown.local/busybox:1.29",
                    "docker.io/library/busybox:1.29"
                ),
            ]
        );
        assert_eq!(absent, ["k8s.gcr.io/coredns:1.7.0"]);
    }

    #[test]
    fn mirrors_share_one_endpoint() {
        let reg = Registry {
            container: container_name(5000),
            port: 5000,
            node_endpoint: "http://172.17.0.1:5000".into(),
        };
        let m = reg.mirrors(&["k8s.gcr.io", "docker.io"]);
        assert_eq!(m[1].to_string(), "docker.io=http://172.17.0.1:5000");
        assert_eq!(reg.push_host(), "127.0.0.1:5000");
    }
}
