//! The load balancer in front of several control planes: haproxy in TCP mode, each API
//! server health-checked on `/healthz` over TLS, and a stats page the HA gate reads to learn
//! which API servers the load balancer itself sees as up. Pure: rendering and parsing only;
//! the provider runs the container.

use std::fmt::Write;

/// The port the API is served on, at the load balancer as at each control plane.
pub const API_PORT: u16 = 6443;
/// The load balancer's stats page (plain HTTP, on the cluster's network only).
pub const STATS_PORT: u16 = 8404;
/// Where the image's haproxy reads its config.
pub const CONFIG_DIR: &str = "/usr/local/etc/haproxy";
/// The backend of API servers, as named in the stats.
pub const BACKEND: &str = "kube-apiservers";

/// The haproxy config for these control planes (`(name, ip)`): checks every 2 s, a server
/// is down after 3 failed checks (6 s: one slow etcd commit on a loaded machine must not
/// take every API server out at once) and up again after 2 good ones. A connection that
/// fails is sent to another server (`redispatch`), so losing a server is felt only by the
/// connections it held.
pub fn haproxy_config(control_planes: &[(String, String)]) -> String {
    let mut out = String::from(
        "\
global
  log stdout format raw local0
  maxconn 4096

defaults
  log global
  mode tcp
  option tcplog
  option redispatch
  retries 3
  timeout connect 2s
  timeout client 30m
  timeout server 30m
  default-server inter 2s fall 3 rise 2

listen stats
  mode http
",
    );
    let _ = writeln!(out, "  bind *:{STATS_PORT}");
    out.push_str("  stats enable\n  stats uri /stats\n\nfrontend control-plane\n");
    let _ = writeln!(out, "  bind *:{API_PORT}");
    let _ = writeln!(out, "  default_backend {BACKEND}\n");
    let _ = writeln!(out, "backend {BACKEND}");
    out.push_str("  option httpchk GET /healthz\n  http-check expect status 200\n");
    for (name, ip) in control_planes {
        let _ = writeln!(
            out,
            "  server {name} {ip}:{API_PORT} check check-ssl verify none"
        );
    }
    out
}

/// Each API server of the stats CSV (`/stats;csv`) with its status (`UP`, `DOWN`,
/// `UP 1/2`, ...), in the order haproxy lists them.
pub fn backend_status(csv: &str) -> Result<Vec<(String, String)>, String> {
    let mut lines = csv.lines();
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or_else(|| "the stats page has no `# pxname,...` header".to_string())?;
    let cols: Vec<&str> = header.split(',').collect();
    let col = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("the stats header has no {name} column"))
    };
    let (px, sv, status) = (col("pxname")?, col("svname")?, col("status")?);
    Ok(lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.get(px) == Some(&BACKEND))
        .filter(|f| !matches!(f.get(sv), Some(&"BACKEND") | Some(&"FRONTEND") | None))
        .map(|f| (f[sv].to_string(), f.get(status).unwrap_or(&"").to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_plane_is_a_checked_server() {
        let c = haproxy_config(&[
            ("c-cp1".into(), "172.18.0.2".into()),
            ("c-cp2".into(), "172.18.0.3".into()),
        ]);
        assert!(c.contains("  server c-cp1 172.18.0.2:6443 check check-ssl verify none\n"));
        assert!(c.contains("  server c-cp2 172.18.0.3:6443 check check-ssl verify none\n"));
        assert!(c.contains("option httpchk GET /healthz"));
        assert!(c.contains("bind *:6443") && c.contains("bind *:8404"));
    }

    #[test]
    fn stats_give_each_api_server_and_its_state() {
        let csv = "\
# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight
stats,FRONTEND,,,0,1,4096,1,0,0,0,0,0,,,,,OPEN,
control-plane,FRONTEND,,,0,0,4096,0,0,0,0,0,0,,,,,OPEN,
kube-apiservers,c-cp1,0,0,0,1,,3,1,2,,0,,0,0,0,0,UP,1
kube-apiservers,c-cp2,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1
kube-apiservers,c-cp3,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP 1/2,1
kube-apiservers,BACKEND,0,0,0,1,410,3,1,2,0,0,,0,0,0,0,UP,2
";
        assert_eq!(
            backend_status(csv).unwrap(),
            vec![
                ("c-cp1".to_string(), "UP".to_string()),
                ("c-cp2".to_string(), "DOWN".to_string()),
                ("c-cp3".to_string(), "UP 1/2".to_string()),
            ]
        );
        assert!(backend_status("<html>not csv</html>").is_err());
    }
}
