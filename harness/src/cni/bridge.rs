//! The bridge variant, rendered by the harness: a conflist per node from its `spec.podCIDR`
//! (bridge `cni0` + host-local IPAM + portmap, Debian's containernetworking-plugins), and a
//! route on every node to every other node's pod CIDR. The bridge plugin's own `ipMasq`
//! would NAT pod-to-pod traffic between nodes to the node address, so it is off and each
//! node masquerades only traffic leaving the cluster's pod network.

use serde_json::json;

pub const CONFLIST_PATH: &str = "/etc/cni/net.d/10-shakedown-bridge.conflist";

pub fn conflist(pod_cidr: &str) -> String {
    let v = json!({
        "cniVersion": "0.4.0",
        "name": "shakedown-bridge",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": pod_cidr }]],
                    "routes": [{ "dst": "0.0.0.0/0" }]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// `iptables` arguments: masquerade traffic from the pod network to anywhere outside it.
/// `action` is `-C` (check) or `-A` (append), so the rule is added once.
pub fn masquerade(action: &str, pod_subnet: &str) -> Vec<String> {
    [
        "iptables",
        "-t",
        "nat",
        action,
        "POSTROUTING",
        "-s",
        pod_subnet,
        "!",
        "-d",
        pod_subnet,
        "-m",
        "comment",
        "--comment",
        "shakedown: masquerade pod traffic leaving the pod network",
        "-j",
        "MASQUERADE",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Where each node keeps its routes and masquerade rule, and the unit that puts them back
/// when the node boots again (a route and an iptables rule do not survive a reboot).
pub const BOOT_SCRIPT_PATH: &str = "/etc/shakedown/bridge-routes.sh";
pub const BOOT_UNIT: &str = "shakedown-bridge-routes.service";
pub const BOOT_UNIT_PATH: &str = "/etc/systemd/system/shakedown-bridge-routes.service";

/// The unit that runs [`BOOT_SCRIPT_PATH`] at boot.
pub fn boot_unit() -> String {
    format!(
        "# The bridge CNI's routes to other nodes' pod CIDRs and its masquerade rule, again
# after a reboot (written by shakedown's cni step).
[Unit]
Description=shakedown bridge CNI routes
After=network.target

[Service]
Type=oneshot
ExecStart=/bin/sh {BOOT_SCRIPT_PATH}

[Install]
WantedBy=multi-user.target
"
    )
}

/// What [`BOOT_SCRIPT_PATH`] holds for `node`: the same commands the cni step ran.
pub fn boot_script(node: &str, all: &[NodeRoute], pod_subnet: &str) -> String {
    let mut s = String::from("#!/bin/sh\n# Written by shakedown's cni step.\n");
    s.push_str(&format!(
        "{} 2>/dev/null || {}\n",
        shell_words::join(masquerade("-C", pod_subnet)),
        shell_words::join(masquerade("-A", pod_subnet))
    ));
    for r in routes_for(node, all) {
        s.push_str(&shell_words::join(r));
        s.push('\n');
    }
    s
}

/// A node of the cluster as the bridge variant sees it.
#[derive(Debug, Clone)]
pub struct NodeRoute {
    pub name: String,
    pub ip: String,
    pub pod_cidr: String,
}

/// `ip route replace` arguments for `node`: one per other node.
pub fn routes_for(node: &str, all: &[NodeRoute]) -> Vec<Vec<String>> {
    all.iter()
        .filter(|o| o.name != node)
        .map(|o| {
            ["ip", "route", "replace", &o.pod_cidr, "via", &o.ip]
                .iter()
                .map(|s| s.to_string())
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_uses_the_node_pod_cidr() {
        let v: serde_json::Value = serde_json::from_str(&conflist("10.244.1.0/24")).unwrap();
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.1.0/24"
        );
        assert_eq!(v["plugins"][1]["type"], "portmap");
        assert_eq!(
            v["plugins"][0]["ipMasq"], false,
            "pod-to-pod traffic keeps pod addresses"
        );
    }

    #[test]
    fn masquerade_covers_only_traffic_leaving_the_pod_network() {
        let a = masquerade("-A", "10.244.0.0/16").join(" ");
        assert!(
            a.starts_with("iptables -t nat -A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 "),
            "{a}"
        );
        assert!(a.ends_with("-j MASQUERADE"));
    }

    /// Nodes with these names and addresses, the nth with pod CIDR 10.244.n.0/24.
    fn nodes(named: &[(&str, &str)]) -> Vec<NodeRoute> {
        named
            .iter()
            .enumerate()
            .map(|(i, (name, ip))| NodeRoute {
                name: name.to_string(),
                ip: ip.to_string(),
                pod_cidr: format!("10.244.{i}.0/24"),
            })
            .collect()
    }

    #[test]
    fn a_rebooted_node_gets_its_routes_and_rule_back() {
        let nodes = nodes(&[("cp1", "172.18.0.2"), ("w1", "172.18.255.254")]);
        let s = boot_script("w1", &nodes, "10.244.0.0/16");
        assert!(
            s.contains("ip route replace 10.244.0.0/24 via 172.18.0.2\n"),
            "{s}"
        );
        assert!(!s.contains("via 172.18.255.254"), "no route to itself: {s}");
        assert!(
            s.contains("iptables -t nat -C POSTROUTING -s 10.244.0.0/16"),
            "{s}"
        );
        assert!(s.contains("|| iptables -t nat -A POSTROUTING"), "{s}");
        assert!(boot_unit().contains(&format!("ExecStart=/bin/sh {BOOT_SCRIPT_PATH}")));
    }

    #[test]
    fn every_node_routes_to_every_other_node() {
        let nodes = nodes(&[
            ("cp1", "172.18.0.2"),
            ("w1", "172.18.0.3"),
            ("w2", "172.18.0.4"),
        ]);
        let r = routes_for("w1", &nodes);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0].join(" "),
            "ip route replace 10.244.0.0/24 via 172.18.0.2"
        );
        assert_eq!(
            r[1].join(" "),
            "ip route replace 10.244.2.0/24 via 172.18.0.4"
        );
    }
}
