//! Which selected specs cannot pass on this machine, and why, decided before anything runs.
//! Two documented rules, applied to the dry run's spec list:
//!
//! 1. **Cluster DNS.** No CoreDNS image can be built here, so while no DNS addon runs a spec
//!    is unsupported when its name mentions DNS or ExternalName (which resolves through
//!    DNS), or when its body reaches a Service by name: it calls, directly or through
//!    helpers of its own file, the e2e framework's `CheckServiceReachability` (which dials
//!    `svc.Name`), `testReachabilityOverServiceName` or `validateGuestbookApp` (whose pods
//!    find each other by Service name).
//! 2. **Images.** Kubernetes ships `test/conformance/testdata/conformance.yaml`, naming each
//!    conformance spec's source file. A spec is unsupported when its file references an e2e
//!    image (from `test/utils/image/manifest.go`) that was not built here, either directly
//!    (`imageutils.Httpd`) or through an exported package-level variable of its own package
//!    (`WebserverImage = imageutils.GetE2EImage(imageutils.Httpd)` in `test/e2e/apps`).
//!    Images that tests use *because* they cannot be pulled (invalid, private and
//!    authenticated registries) do not count. The rule works per file, so it can
//!    over-exclude; every exclusion names the images, and the counts are reported.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

pub const NEEDS_DNS: &str = "needs cluster DNS: no CoreDNS image can be built on this machine";

/// Registries whose images exist to fail pulling.
const EXPECTED_UNPULLABLE: &[&str] = &[
    "invalidRegistry",
    "PrivateRegistry",
    "privateRegistry",
    "gcAuthenticatedRegistry",
];

/// The first line of a spec's output that shows a name failing to resolve. Without a DNS
/// addon such a failure is this machine's limit, not the cluster's: the spec is reported as
/// unsupported here, with this line as the evidence.
pub fn dns_evidence(output: &str) -> Option<String> {
    const SIGNS: &[&str] = &[
        "Name or service not known",
        "Temporary failure in name resolution",
        "bad address",
        "could not resolve host",
        "no such host",
    ];
    output
        .lines()
        .find(|l| SIGNS.iter().any(|s| l.contains(s)))
        .map(|l| l.trim().to_string())
}

/// Exported package-level image variables of the Go package in `dir`
/// (`WebserverImage = imageutils.GetE2EImage(imageutils.Httpd)`): a regex matching a use of
/// the name, and the image constant. Lower-case names are locals, not package variables.
fn image_vars(dir: &Path) -> Vec<(regex::Regex, String)> {
    let def =
        regex::Regex::new(r"(?m)^\s*([A-Z]\w*)\s*=\s*imageutils\.GetE2EImage\(imageutils\.(\w+)\)")
            .expect("static regex");
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.ends_with(".go") && !n.ends_with("_test.go")
        })
        .collect();
    files.sort();
    for f in files {
        let src = std::fs::read_to_string(&f).unwrap_or_default();
        for m in def.captures_iter(&src) {
            let name = regex::Regex::new(&format!(r"\b{}\b", &m[1])).expect("an identifier");
            out.push((name, m[2].to_string()));
        }
    }
    out
}

/// The tree's e2e image manifest (`test/utils/image/manifest.go`): constant →
/// (registry key, `name:tag`), e.g. `Httpd` → (`dockerLibraryRegistry`, `httpd:2.4.38-alpine`).
fn manifest_entries(tree: &Path) -> BTreeMap<String, (String, String)> {
    let manifest =
        std::fs::read_to_string(tree.join("test/utils/image/manifest.go")).unwrap_or_default();
    let cfg =
        regex::Regex::new(r#"configs\[(\w+)\]\s*=\s*Config\{(\w+),\s*"([^"]+)",\s*"([^"]+)"\}"#)
            .expect("static regex");
    cfg.captures_iter(&manifest)
        .map(|m| {
            (
                m[1].to_string(),
                (m[2].to_string(), format!("{}:{}", &m[3], &m[4])),
            )
        })
        .collect()
}

/// The tree's e2e images by constant: `Httpd` → `httpd:2.4.38-alpine`.
pub fn manifest_images(tree: &Path) -> BTreeMap<String, String> {
    manifest_entries(tree)
        .into_iter()
        .map(|(k, (_, image))| (k, image))
        .collect()
}

#[derive(Debug, Default, Clone)]
pub struct Classifier {
    /// codename → source file (relative to the tree).
    files: HashMap<String, String>,
    /// image constant → "name:tag".
    images: HashMap<String, String>,
    /// constants to ignore (expected to be unpullable).
    ignore: BTreeSet<String>,
    /// file → constants it references.
    refs: HashMap<String, BTreeSet<String>>,
    /// codename → the helper through which its body reaches a Service by name.
    by_name: HashMap<String, String>,
    pub dns_available: bool,
}

/// Functions of the e2e framework that dial a Service by its name, or start pods that do:
/// the guestbook's frontend and replicas find `agnhost-primary` by its Service name
/// (`validateGuestbookApp` waits 10 minutes for them; found when the httpd and nginx
/// images built here made the rest of kubectl.go runnable).
const REACH_BY_NAME: &[&str] = &[
    "CheckServiceReachability",
    "testReachabilityOverServiceName",
    "validateGuestbookApp",
];

/// The functions of a Go file that reach a Service by name, directly or through each other.
fn reaching_functions(src: &str) -> BTreeSet<String> {
    let head = regex::Regex::new(r"(?m)^func (?:\([^)]*\) )?(\w+)\(").expect("static regex");
    let starts: Vec<(usize, String)> = head
        .captures_iter(src)
        .map(|c| (c.get(0).map_or(0, |m| m.start()), c[1].to_string()))
        .collect();
    let bodies: Vec<(String, &str)> = starts
        .iter()
        .enumerate()
        .map(|(i, (at, name))| {
            let end = starts.get(i + 1).map_or(src.len(), |n| n.0);
            (name.clone(), &src[*at..end])
        })
        .collect();
    let mut reach: BTreeSet<String> = REACH_BY_NAME.iter().map(|s| s.to_string()).collect();
    loop {
        let before = reach.len();
        for (name, body) in &bodies {
            if !reach.contains(name) && calls_any(body, &reach) {
                reach.insert(name.clone());
            }
        }
        if reach.len() == before {
            return reach;
        }
    }
}

/// The first of `names` that `code` calls (`name(`), if any.
fn calls_any(code: &str, names: &BTreeSet<String>) -> bool {
    first_call(code, names).is_some()
}

fn first_call<'a>(code: &str, names: &'a BTreeSet<String>) -> Option<&'a String> {
    names.iter().find(|n| {
        code.match_indices(n.as_str()).any(|(i, _)| {
            let before = code[..i].chars().next_back();
            code[i + n.len()..].starts_with('(')
                && !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
        })
    })
}

/// Each conformance spec body of a Go file (`ConformanceIt("text", ...)` up to the next
/// spec), with its text.
fn spec_bodies(src: &str) -> Vec<(String, &str)> {
    let it = regex::Regex::new(r#"(?:framework\.ConformanceIt|ginkgo\.It)\("([^"]+)""#)
        .expect("static regex");
    let found: Vec<(usize, String)> = it
        .captures_iter(src)
        .map(|c| (c.get(0).map_or(0, |m| m.start()), c[1].to_string()))
        .collect();
    found
        .iter()
        .enumerate()
        .map(|(i, (at, text))| {
            // Up to the next spec, or the next top-level function: the last spec of a file
            // must not take in the helpers after it.
            let next_spec = found.get(i + 1).map_or(src.len(), |n| n.0);
            let next_func = src[*at..].find("\nfunc ").map_or(src.len(), |o| at + o);
            (text.clone(), &src[*at..next_spec.min(next_func)])
        })
        .collect()
}

impl Classifier {
    /// Reads conformance.yaml, the image manifest and each spec's source file. Without a
    /// source tree only the DNS rule applies.
    pub fn from_tree(tree: Option<&Path>, dns_available: bool) -> Classifier {
        let mut c = Classifier {
            dns_available,
            ..Default::default()
        };
        let Some(tree) = tree else { return c };
        #[derive(serde::Deserialize)]
        struct Entry {
            codename: String,
            file: String,
        }
        let Ok(text) =
            std::fs::read_to_string(tree.join("test/conformance/testdata/conformance.yaml"))
        else {
            return c;
        };
        let entries: Vec<Entry> = serde_yaml::from_str(&text).unwrap_or_default();
        for (k, (registry, image)) in manifest_entries(tree) {
            if EXPECTED_UNPULLABLE.contains(&registry.as_str()) {
                c.ignore.insert(k.clone());
            }
            c.images.insert(k, image);
        }
        let uses = regex::Regex::new(r"imageutils\.(\w+)").expect("static regex");
        let mut package_vars: HashMap<PathBuf, Vec<(regex::Regex, String)>> = HashMap::new();
        let mut reaching: HashMap<String, BTreeSet<String>> = HashMap::new();
        for e in entries {
            let src = std::fs::read_to_string(tree.join(&e.file)).unwrap_or_default();
            let reach = reaching
                .entry(e.file.clone())
                .or_insert_with(|| reaching_functions(&src));
            for (text, body) in spec_bodies(&src) {
                if e.codename.contains(&text) {
                    if let Some(f) = first_call(body, reach) {
                        c.by_name.insert(e.codename.clone(), f.clone());
                    }
                }
            }
            if !c.refs.contains_key(&e.file) {
                let dir = tree.join(&e.file).parent().map(Path::to_path_buf);
                let vars = package_vars
                    .entry(dir.clone().unwrap_or_default())
                    .or_insert_with(|| dir.map(|d| image_vars(&d)).unwrap_or_default());
                let via_vars = vars
                    .iter()
                    .filter(|(name, _)| name.is_match(&src))
                    .map(|(_, k)| k.clone());
                let set: BTreeSet<String> = uses
                    .captures_iter(&src)
                    // The pause image is named through a helper, not its constant.
                    .map(|m| {
                        if &m[1] == "GetPauseImageName" {
                            "Pause".to_string()
                        } else {
                            m[1].to_string()
                        }
                    })
                    .chain(via_vars)
                    .filter(|k| c.images.contains_key(k))
                    .collect();
                c.refs.insert(e.file.clone(), set);
            }
            c.files.insert(e.codename, e.file);
        }
        c
    }

    pub fn knows_sources(&self) -> bool {
        !self.files.is_empty()
    }

    /// Why `spec` cannot pass here, if it cannot. `available` lists "name:tag" of the e2e
    /// images present on the nodes.
    pub fn reason(&self, spec: &str, available: &BTreeSet<String>) -> Option<String> {
        let dns = regex::Regex::new(r"DNS|\bdns\b|ExternalName").expect("static regex");
        if !self.dns_available && dns.is_match(spec) {
            return Some(NEEDS_DNS.to_string());
        }
        if let (false, Some(via)) = (self.dns_available, self.by_name.get(spec)) {
            let file = self
                .files
                .get(spec)
                .map(String::as_str)
                .unwrap_or("its file");
            return Some(format!(
                "{NEEDS_DNS} (it reaches a Service by name, through {via} in {file})"
            ));
        }
        let file = self.files.get(spec)?;
        let missing: Vec<&str> = self
            .refs
            .get(file)?
            .iter()
            .filter(|k| !self.ignore.contains(*k))
            .filter_map(|k| self.images.get(k))
            .filter(|img| !available.contains(*img))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            None
        } else {
            Some(format!(
                "needs image(s) {} that cannot be obtained here (referenced by {file})",
                missing.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let w = |p: &str, s: &str| write(d.path(), p, s);
        w(
            "test/conformance/testdata/conformance.yaml",
            "- testname: a\n  codename: '[sig-apps] Deployment works [Conformance]'\n  file: test/e2e/apps/deployment.go\n\
             - testname: b\n  codename: '[sig-storage] Secrets work [Conformance]'\n  file: test/e2e/common/secrets.go\n\
             - testname: c\n  codename: '[k8s.io] Runtime should not pull from invalid registry [Conformance]'\n  file: test/e2e/common/runtime.go\n\
             - testname: d\n  codename: '[sig-network] Service endpoints latency [Conformance]'\n  file: test/e2e/network/service_latency.go\n\
             - testname: e\n  codename: '[sig-apps] ReplicaSet adopts [Conformance]'\n  file: test/e2e/apps/replica_set.go\n\
             - testname: f\n  codename: '[sig-apps] Job works [Conformance]'\n  file: test/e2e/apps/job.go\n",
        );
        w(
            "test/utils/image/manifest.go",
            "configs[Agnhost] = Config{promoterE2eRegistry, \"agnhost\", \"2.21\"}\n\
             configs[Httpd] = Config{dockerLibraryRegistry, \"httpd\", \"2.4.38-alpine\"}\n\
             configs[InvalidRegistryImage] = Config{invalidRegistry, \"alpine\", \"3.1\"}\n\
             configs[Pause] = Config{gcRegistry, \"pause\", \"3.2\"}\n",
        );
        w(
            "test/e2e/apps/deployment.go",
            "img := imageutils.GetE2EImage(imageutils.Httpd)\n_ = imageutils.Agnhost",
        );
        w(
            "test/e2e/apps/types.go",
            "var (\n\tWebserverImage = imageutils.GetE2EImage(imageutils.Httpd)\n\tAgnhostImage = imageutils.GetE2EImage(imageutils.Agnhost)\n)\nfunc f() { image = imageutils.GetE2EImage(imageutils.Httpd) }\n",
        );
        w(
            "test/e2e/apps/replica_set.go",
            "pod := newPod(WebserverImage)\n_ = imageutils.Agnhost",
        );
        w(
            "test/e2e/apps/job.go",
            "_ = AgnhostImage // WebserverImageName is another name\n",
        );
        w(
            "test/e2e/common/secrets.go",
            "imageutils.GetE2EImage(imageutils.Agnhost)",
        );
        w(
            "test/e2e/common/runtime.go",
            "imageutils.GetE2EImage(imageutils.InvalidRegistryImage)",
        );
        d
    }

    #[test]
    fn specs_needing_missing_images_or_dns_are_unsupported() {
        let d = tree();
        let c = Classifier::from_tree(Some(d.path()), false);
        assert!(c.knows_sources());
        let have: BTreeSet<String> = ["agnhost:2.21".to_string()].into();
        let r = c
            .reason("[sig-apps] Deployment works [Conformance]", &have)
            .unwrap();
        assert!(
            r.contains("httpd:2.4.38-alpine") && r.contains("test/e2e/apps/deployment.go"),
            "{r}"
        );
        assert_eq!(
            c.reason("[sig-storage] Secrets work [Conformance]", &have),
            None
        );
        // Through a package-level variable of its own package.
        let r = c
            .reason("[sig-apps] ReplicaSet adopts [Conformance]", &have)
            .unwrap();
        assert!(
            r.contains("httpd:2.4.38-alpine") && r.contains("replica_set.go"),
            "{r}"
        );
        // A variable naming an image that is here, and a longer name that only starts the
        // same, do not count.
        assert_eq!(c.reason("[sig-apps] Job works [Conformance]", &have), None);
        assert_eq!(
            c.reason(
                "[k8s.io] Runtime should not pull from invalid registry [Conformance]",
                &have
            ),
            None,
            "images meant to fail pulling do not make a spec unsupported"
        );
        assert_eq!(
            c.reason(
                "[sig-network] DNS should provide DNS for services [Conformance]",
                &have
            )
            .as_deref(),
            Some(NEEDS_DNS)
        );
        let with_dns = Classifier::from_tree(Some(d.path()), true);
        assert_eq!(
            with_dns.reason(
                "[sig-network] DNS should provide DNS for services [Conformance]",
                &have
            ),
            None
        );
    }

    #[test]
    fn name_resolution_failures_are_evidence_of_missing_dns() {
        let out = "+ nc -zv -t -w 2 nodeport-test 80\nnc: getaddrinfo for host \"nodeport-test\" port 80: Name or service not known\n";
        assert_eq!(
            dns_evidence(out).as_deref(),
            Some("nc: getaddrinfo for host \"nodeport-test\" port 80: Name or service not known")
        );
        assert_eq!(
            dns_evidence("wget: bad address 'svc'"),
            Some("wget: bad address 'svc'".into())
        );
        assert_eq!(dns_evidence("connection refused\ntimed out"), None);
    }

    #[test]
    fn without_a_source_tree_only_dns_applies() {
        let c = Classifier::from_tree(None, false);
        assert!(!c.knows_sources());
        assert!(c
            .reason(
                "[sig-apps] Deployment works [Conformance]",
                &BTreeSet::new()
            )
            .is_none());
        assert!(c
            .reason("[sig-network] DNS works", &BTreeSet::new())
            .is_some());
    }

    #[test]
    fn specs_that_reach_a_service_by_name_need_dns() {
        let d = tempfile::tempdir().unwrap();
        let w = |p: &str, s: &str| write(d.path(), p, s);
        w(
            "test/conformance/testdata/conformance.yaml",
            "- codename: '[sig-network] Services should serve a basic endpoint from pods [Conformance]'\n  file: test/e2e/network/service.go\n\
             - codename: '[sig-network] Services should be able to create a functioning NodePort service [Conformance]'\n  file: test/e2e/network/service.go\n\
             - codename: '[sig-network] Services should have session affinity work for NodePort service [LinuxOnly] [Conformance]'\n  file: test/e2e/network/service.go\n",
        );
        w(
            "test/e2e/network/service.go",
            r#"var _ = SIGDescribe("Services", func() {
	framework.ConformanceIt("should serve a basic endpoint from pods", func() {
		validateEndpointsPortsOrFail(cs, ns, serviceName, portsByPodName{})
	})
	framework.ConformanceIt("should be able to create a functioning NodePort service", func() {
		err = jig.CheckServiceReachability(nodePortService, execPod)
	})
	framework.ConformanceIt("should have session affinity work for NodePort service [LinuxOnly]", func() {
		execAffinityTestForNonLBService(f, cs, svc)
	})
	ginkgo.It("should allow pods to hairpin back", func() {
		err = jig.CheckServiceReachability(svc, pod)
	})
})

func execAffinityTestForNonLBService(f *framework.Framework, cs clientset.Interface, svc *v1.Service) {
	execAffinityTestForNonLBServiceWithOptionalTransition(f, cs, svc, false)
}

func execAffinityTestForNonLBServiceWithOptionalTransition(f *framework.Framework, cs clientset.Interface, svc *v1.Service, t bool) {
	err = jig.CheckServiceReachability(svc, execPod)
}

func notCheckServiceReachability() {}
"#,
        );
        let none = BTreeSet::new();
        let c = Classifier::from_tree(Some(d.path()), false);
        assert_eq!(
            c.reason(
                "[sig-network] Services should serve a basic endpoint from pods [Conformance]",
                &none
            ),
            None
        );
        let direct = c
            .reason("[sig-network] Services should be able to create a functioning NodePort service [Conformance]", &none)
            .unwrap();
        assert!(
            direct.contains("through CheckServiceReachability in test/e2e/network/service.go"),
            "{direct}"
        );
        let helper = c
            .reason("[sig-network] Services should have session affinity work for NodePort service [LinuxOnly] [Conformance]", &none)
            .unwrap();
        assert!(helper.starts_with(NEEDS_DNS), "{helper}");
        assert!(
            helper.contains("execAffinityTestForNonLBService"),
            "{helper}"
        );
        // With DNS running they are runnable.
        let c = Classifier::from_tree(Some(d.path()), true);
        assert_eq!(c.reason("[sig-network] Services should be able to create a functioning NodePort service [Conformance]", &none), None);
    }

    #[test]
    fn the_guestbook_needs_dns() {
        let d = tempfile::tempdir().unwrap();
        let w = |p: &str, s: &str| write(d.path(), p, s);
        w(
            "test/conformance/testdata/conformance.yaml",
            "- codename: '[sig-cli] Kubectl client Guestbook application should create and stop a working application  [Conformance]'\n  file: test/e2e/kubectl/kubectl.go\n",
        );
        w(
            "test/e2e/kubectl/kubectl.go",
            r#"var _ = SIGDescribe("Kubectl client", func() {
	ginkgo.Describe("Guestbook application", func() {
		framework.ConformanceIt("should create and stop a working application ", func() {
			validateGuestbookApp(c, ns)
		})
	})
})

func validateGuestbookApp(c clientset.Interface, ns string) {
	waitForGuestbookResponse(c, "get", "", `{"data":""}`, guestbookStartupTimeout, ns)
}
"#,
        );
        let c = Classifier::from_tree(Some(d.path()), false);
        let why = c
            .reason("[sig-cli] Kubectl client Guestbook application should create and stop a working application  [Conformance]", &BTreeSet::new())
            .unwrap();
        assert!(
            why.contains("through validateGuestbookApp in test/e2e/kubectl/kubectl.go"),
            "{why}"
        );
    }
}
