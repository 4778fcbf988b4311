//! Tier 3: conformance with the real `e2e.test`. Specs are selected by mode, focus and skip,
//! listed with a dry run, classified (which cannot pass on this machine, and why), then run
//! one process per spec so every spec has its own deadline and nothing can hang the run.

pub mod incluster;
pub mod rerun;
pub mod source;
pub mod unsupported;

use crate::scenario::{ConformanceMode, ConformanceSpec};
use sha2::{Digest, Sha256};

/// The focus and skip regexes a run passes to ginkgo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub focus: String,
    pub skip: Option<String>,
}

/// Modes, as sonobuoy and hydrophone name them:
/// - certified: every `[Conformance]` spec, serial ones included;
/// - non-disruptive: without `[Disruptive]` specs;
/// - conformance-lite: without `[Serial]`, `[Slow]` and `[Disruptive]` specs, so it runs in
///   parallel in a short time.
///
/// A scenario's own `focus` replaces the mode's; its `skip` is added to the mode's.
pub fn selection(spec: &ConformanceSpec) -> Selection {
    let mode_skip = match spec.mode.unwrap_or(ConformanceMode::Certified) {
        ConformanceMode::Certified => None,
        ConformanceMode::NonDisruptive => Some(r"\[Disruptive\]|NoExecuteTaintManager".to_string()),
        ConformanceMode::ConformanceLite => Some(r"\[Serial\]|\[Slow\]|\[Disruptive\]".to_string()),
    };
    let skip = match (mode_skip, spec.skip.clone()) {
        (Some(a), Some(b)) => Some(format!("{a}|{b}")),
        (a, b) => a.or(b),
    };
    Selection {
        focus: spec
            .focus
            .clone()
            .unwrap_or_else(|| r"\[Conformance\]".to_string()),
        skip,
    }
}

/// Why a spec cannot be judged on a cluster whose oldest kubelet is `kubelet`: e2e tags
/// specs that need a newer one `[MinimumKubeletVersion:1.21]` (kinder skips them in its
/// kubelet-skew jobs the same way). None: the spec asks for no newer kubelet.
pub fn needs_newer_kubelet(spec: &str, kubelet: &crate::release::KubeVersion) -> Option<String> {
    const TAG: &str = "[MinimumKubeletVersion:";
    let at = spec.find(TAG)?;
    let rest = &spec[at + TAG.len()..];
    let wanted: crate::release::KubeVersion = rest[..rest.find(']')?].parse().ok()?;
    ((wanted.major, wanted.minor) > (kubelet.major, kubelet.minor)).then(|| {
        format!(
            "needs kubelet {}.{} or newer, and the version-skewed nodes run kubelet {}.{}",
            wanted.major, wanted.minor, kubelet.major, kubelet.minor
        )
    })
}

/// `KUBE_TEST_REPO_LIST`: every registry key of the e2e image manifest points at the local
/// repository, so e2e.test uses the images built here.
pub fn repo_list(registry: &str) -> String {
    const KEYS: &[&str] = &[
        "gcAuthenticatedRegistry",
        "dockerLibraryRegistry",
        "dockerGluster",
        "e2eRegistry",
        "e2eVolumeRegistry",
        "promoterE2eRegistry",
        "buildImageRegistry",
        "gcEtcdRegistry",
        "gcRegistry",
        "sigStorageRegistry",
        "gcrReleaseRegistry",
        "privateRegistry",
        "sampleRegistry",
        "microsoftRegistry",
    ];
    KEYS.iter().map(|k| format!("{k}: {registry}\n")).collect()
}

/// A regex matching exactly this spec name as ginkgo's focus (end-anchored: ginkgo prefixes
/// the top-level container's text).
pub fn focus_exactly(name: &str) -> String {
    format!("{}$", regex::escape(name))
}

/// Shard `k` of `n` (1-based): a stable subset chosen by a hash of each spec's name, so the
/// CI subset is neither cherry-picked nor dependent on order.
pub fn in_shard(name: &str, k: u32, n: u32) -> bool {
    if n <= 1 {
        return true;
    }
    let h = Sha256::digest(name.as_bytes());
    let v = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    v % n == (k - 1) % n
}

/// Spec names from a ginkgo JUnit report (a dry run lists every selected spec).
pub fn junit_specs(xml: &str) -> Vec<(String, SpecState)> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(xml);
    let mut out: Vec<(String, SpecState)> = Vec::new();
    let mut in_case = false;
    let mut text = String::new();
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) if e.name().as_ref() == b"testcase" => {
                let name = e
                    .attributes()
                    .flatten()
                    .find(|a| a.key.as_ref() == b"name")
                    .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
                    .unwrap_or_default();
                out.push((name, SpecState::Passed));
                in_case = true;
            }
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) if in_case => {
                let st = match e.name().as_ref() {
                    b"failure" | b"error" => Some(SpecState::Failed(String::new())),
                    b"skipped" => Some(SpecState::Skipped),
                    _ => None,
                };
                if let (Some(st), Some(last)) = (st, out.last_mut()) {
                    last.1 = st;
                }
                text.clear();
            }
            Ok(Event::Text(t)) => {
                if let Ok(s) = t.unescape() {
                    text.push_str(&s);
                }
            }
            Ok(Event::CData(t)) => text.push_str(&String::from_utf8_lossy(&t)),
            Ok(Event::End(e)) => {
                if matches!(e.name().as_ref(), b"failure" | b"error") {
                    if let Some((_, SpecState::Failed(m))) = out.last_mut() {
                        *m = text.trim().to_string();
                    }
                }
                if e.name().as_ref() == b"testcase" {
                    in_case = false;
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

/// The order to start `specs` in: longest first by how long each took before, so the long
/// ones do not bunch up at the end. A spec never timed counts as the median of those that
/// were; ties keep the given order. With nothing timed the order is unchanged.
pub fn longest_first(
    specs: &[String],
    took: &std::collections::BTreeMap<String, std::time::Duration>,
) -> Vec<usize> {
    let mut known: Vec<std::time::Duration> =
        specs.iter().filter_map(|s| took.get(s).copied()).collect();
    known.sort();
    let median = known.get(known.len() / 2).copied().unwrap_or_default();
    let mut order: Vec<usize> = (0..specs.len()).collect();
    // A stable sort: equal estimates keep their places.
    order.sort_by_key(|&i| std::cmp::Reverse(took.get(&specs[i]).copied().unwrap_or(median)));
    order
}

/// One spec's own `<testcase>` element of a ginkgo JUnit report, wrapped in a `<testsuite>`
/// of one: what is worth keeping of a report that lists every other spec as skipped.
pub fn own_testcase(xml: &str, name: &str) -> Option<String> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(xml);
    let mut depth = 0usize;
    let mut start = None;
    loop {
        let before = r.buffer_position() as usize;
        match r.read_event() {
            Ok(Event::Empty(e))
                if start.is_none()
                    && e.name().as_ref() == b"testcase"
                    && testcase_named(&e, name) =>
            {
                let end = r.buffer_position() as usize;
                return Some(one_case_suite(&xml[before..end]));
            }
            Ok(Event::Start(e)) if e.name().as_ref() == b"testcase" => {
                if start.is_none() && testcase_named(&e, name) {
                    start = Some(before);
                    depth = 0;
                } else if start.is_some() {
                    depth += 1;
                }
            }
            Ok(Event::End(e)) if e.name().as_ref() == b"testcase" => {
                if let Some(from) = start {
                    if depth == 0 {
                        let end = r.buffer_position() as usize;
                        return Some(one_case_suite(&xml[from..end]));
                    }
                    depth -= 1;
                }
            }
            Ok(Event::Eof) | Err(_) => return None,
            _ => {}
        }
    }
}

fn testcase_named(e: &quick_xml::events::BytesStart<'_>, name: &str) -> bool {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == b"name")
        .and_then(|a| a.unescape_value().ok())
        .is_some_and(|v| v == name)
}

fn one_case_suite(case: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite tests=\"1\">\n  {}\n</testsuite>\n",
        case.trim()
    )
}

/// Each testcase's `time` from a ginkgo JUnit report.
pub fn junit_times(xml: &str) -> Vec<(String, std::time::Duration)> {
    use quick_xml::events::Event;
    let mut r = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    loop {
        match r.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) if e.name().as_ref() == b"testcase" => {
                let attr = |k: &[u8]| {
                    e.attributes()
                        .flatten()
                        .find(|a| a.key.as_ref() == k)
                        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
                };
                if let (Some(name), Some(t)) = (attr(b"name"), attr(b"time")) {
                    if let Ok(secs) = t.parse::<f64>() {
                        out.push((name, std::time::Duration::from_secs_f64(secs.max(0.0))));
                    }
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecState {
    Passed,
    Failed(String),
    Skipped,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_start_longest_first_and_untimed_ones_count_as_the_median() {
        let specs: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let secs = |pairs: &[(&str, u64)]| {
            pairs
                .iter()
                .map(|(n, s)| (n.to_string(), std::time::Duration::from_secs(*s)))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        // b 240 s, d 5 s, e 30 s, "gone" is not selected; a and c were never timed and count
        // as the median of the selected ones (30 s), as long as e: equals keep their order.
        let took = secs(&[("b", 240), ("d", 5), ("e", 30), ("gone", 900)]);
        let order: Vec<&str> = longest_first(&specs, &took)
            .into_iter()
            .map(|i| specs[i].as_str())
            .collect();
        assert_eq!(order, ["b", "a", "c", "e", "d"]);
        // Nothing known: the given order.
        assert_eq!(longest_first(&specs, &secs(&[])), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_specs_own_testcase_is_kept_and_every_other_dropped() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuite tests="3" failures="1" time="12.5">
  <testcase name="[sig-a] skipped one" classname="Kubernetes e2e suite" time="0"><skipped></skipped></testcase>
  <testcase name="[sig-b] ours &amp; only ours" classname="Kubernetes e2e suite" time="11.2">
    <failure type="Failure">boom &lt;here&gt;</failure>
    <system-out>what it printed</system-out>
  </testcase>
  <testcase name="[sig-c] another" classname="Kubernetes e2e suite" time="0"/>
</testsuite>"#;
        let own = own_testcase(xml, "[sig-b] ours & only ours").unwrap();
        assert!(own.contains("boom &lt;here&gt;") && own.contains("what it printed"));
        assert!(!own.contains("skipped one") && !own.contains("another"));
        // What is kept still reads back as the same spec and verdict.
        assert_eq!(
            junit_specs(&own),
            vec![(
                "[sig-b] ours & only ours".to_string(),
                SpecState::Failed("boom <here>".into())
            )]
        );
        let empty = own_testcase(xml, "[sig-c] another").unwrap();
        assert_eq!(
            junit_specs(&empty),
            vec![("[sig-c] another".to_string(), SpecState::Passed)]
        );
        assert_eq!(own_testcase(xml, "[sig-z] absent"), None);
    }
    use crate::scenario::Tier;

    fn spec(
        mode: Option<ConformanceMode>,
        focus: Option<&str>,
        skip: Option<&str>,
    ) -> ConformanceSpec {
        ConformanceSpec {
            tier: Tier::Conformance,
            mode,
            focus: focus.map(Into::into),
            skip: skip.map(Into::into),
            parallel: None,
            flake_attempts: None,
            spec_deadline: None,
            disabled: None,
            runner: None,
            image: None,
            e2e_binaries: None,
            durations: None,
        }
    }

    #[test]
    fn specs_tagged_for_a_newer_kubelet_than_the_skewed_nodes_are_told_apart() {
        let v118: crate::release::KubeVersion = "v1.18.20".parse().unwrap();
        let spec = "[sig-node] Pods should support pod readiness gates [MinimumKubeletVersion:1.19] [Conformance]";
        let why = needs_newer_kubelet(spec, &v118).unwrap();
        assert!(why.contains("kubelet 1.19 or newer"), "{why}");
        assert!(why.contains("run kubelet 1.18"), "{why}");
        let v119: crate::release::KubeVersion = "v1.19.0".parse().unwrap();
        assert_eq!(needs_newer_kubelet(spec, &v119), None);
        assert_eq!(
            needs_newer_kubelet("[sig-apps] Deployment [Conformance]", &v118),
            None
        );
        // A malformed tag asks for nothing it can be held to.
        assert_eq!(
            needs_newer_kubelet("x [MinimumKubeletVersion:soon]", &v118),
            None
        );
    }

    #[test]
    fn modes_select_as_documented() {
        let s = selection(&spec(Some(ConformanceMode::Certified), None, None));
        assert_eq!(
            s,
            Selection {
                focus: r"\[Conformance\]".into(),
                skip: None
            }
        );
        let s = selection(&spec(
            Some(ConformanceMode::ConformanceLite),
            None,
            Some("Foo"),
        ));
        assert_eq!(
            s.skip.as_deref(),
            Some(r"\[Serial\]|\[Slow\]|\[Disruptive\]|Foo")
        );
        let s = selection(&spec(
            Some(ConformanceMode::NonDisruptive),
            Some("Secrets"),
            None,
        ));
        assert_eq!(s.focus, "Secrets");
        assert!(s.skip.unwrap().contains(r"\[Disruptive\]"));
    }

    #[test]
    fn focus_matches_one_spec_only() {
        let name = "[sig-storage] Secrets should be consumable from pods in volume [NodeConformance] [Conformance]";
        let re = regex::Regex::new(&focus_exactly(name)).unwrap();
        assert!(re.is_match(&format!("[Top Level] {name}")));
        assert!(!re.is_match(&format!("{name} and more")));
    }

    #[test]
    fn shards_partition_the_specs() {
        let names: Vec<String> = (0..300).map(|i| format!("spec {i}")).collect();
        let mut total = 0;
        for k in 1..=6 {
            let n = names.iter().filter(|s| in_shard(s, k, 6)).count();
            assert!(n > 20 && n < 90, "shard {k} has {n}");
            total += n;
        }
        assert_eq!(total, 300, "every spec is in exactly one shard");
        assert!(names.iter().all(|s| in_shard(s, 1, 1)));
    }

    #[test]
    fn junit_reports_parse_into_spec_states() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="Kubernetes e2e suite" tests="3" failures="1" errors="0" time="12">
  <testcase name="[sig-storage] Secrets should be consumable [Conformance]" classname="Kubernetes e2e suite" time="2.1"></testcase>
  <testcase name="[sig-network] DNS should provide DNS [Conformance]" classname="Kubernetes e2e suite" time="300">
    <failure type="Failure">timed out waiting for the condition</failure>
  </testcase>
  <testcase name="[sig-apps] Other" classname="Kubernetes e2e suite" time="0"><skipped></skipped></testcase>
</testsuite>"#;
        let s = junit_specs(xml);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].1, SpecState::Passed);
        assert_eq!(
            s[1].1,
            SpecState::Failed("timed out waiting for the condition".into())
        );
        assert_eq!(s[2].1, SpecState::Skipped);
        let t = junit_times(xml);
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].1, std::time::Duration::from_millis(2100));
        assert_eq!(t[1].1, std::time::Duration::from_secs(300));
    }

    #[test]
    fn repo_list_maps_every_registry_key() {
        let y: serde_yaml::Value = serde_yaml::from_str(&repo_list("shakedown.local")).unwrap();
        assert_eq!(y["promoterE2eRegistry"], "shakedown.local");
        assert_eq!(y["dockerLibraryRegistry"], "shakedown.local");
        assert_eq!(y["gcRegistry"], "shakedown.local");
    }
}
