//! Scenario parsing and validation against good and broken fixtures. Each broken fixture
//! declares the errors it must produce in `# expect: LINE:COL FIELD :: FRAGMENT` lines.

mod common;

use shakedown::{matrix, scenario};

#[test]
fn shipped_scenarios_validate() {
    let catalog = common::catalog();
    let files = scenario::files_in(&common::root().join("scenarios")).unwrap();
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for required in ["release-1.6", "release-1.20", "master"] {
        assert!(
            names.iter().any(|n| n == required),
            "scenarios/{required}.yaml is missing"
        );
    }
    for f in files {
        scenario::load(&f, &catalog, scenario::today()).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn release_1_6_is_true_to_its_era() {
    let catalog = common::catalog();
    let s = scenario::load(
        &common::root().join("scenarios/release-1.6.yaml"),
        &catalog,
        scenario::today(),
    )
    .unwrap();
    assert_eq!(s.kubeadm_api().as_deref(), Some("kubeadm.k8s.io/v1alpha1"));
    assert_eq!(
        s.scenario.cluster.control_plane_taint.as_deref(),
        Some("node-role.kubernetes.io/master")
    );
    assert!(s.scenario.cluster.rbac);
    assert!(
        s.scenario.conformance.disabled.is_none(),
        "1.6 shipped broken with conformance off; keep it on"
    );
    for cni in ["weave", "calico"] {
        let v = catalog.get(cni).unwrap();
        let r = v.release_for(s.version.as_ref()).unwrap();
        assert!(
            r.kubernetes.max.as_deref() == Some("1.7"),
            "{cni} for 1.6 must be the 1.6-era release, got {}",
            r.version
        );
    }
}

#[test]
fn good_fixtures_validate_and_expand() {
    let catalog = common::catalog();
    let dir = common::root().join("fixtures/scenarios/good");
    let s = scenario::load(
        &dir.join("multi-topology.yaml"),
        &catalog,
        scenario::today(),
    )
    .unwrap();
    let names: Vec<String> = matrix::expand(&s).into_iter().map(|j| j.name).collect();
    assert_eq!(
        names,
        [
            "multi-topology/docker/bridge/single",
            "multi-topology/docker/bridge/ha",
            "multi-topology/kind/bridge/single",
            "multi-topology/kind/bridge/ha",
        ]
    );
    let s = scenario::load(&dir.join("release-1.9.yaml"), &catalog, scenario::today()).unwrap();
    let jobs = matrix::expand(&s);
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].name, "release-1.9/docker/bridge");
    assert_eq!(jobs[0].context(), "docker-bridge");
    assert_eq!(
        (jobs[0].topology.control_planes, jobs[0].topology.workers),
        (1, 2)
    );
}

#[test]
fn job_names_do_not_depend_on_the_version() {
    let catalog = common::catalog();
    let path = common::root().join("scenarios/release-1.20.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let a = scenario::load_str(&path, &text, &catalog, scenario::today()).unwrap();
    let bumped = text.replace("version: v1.20.2", "version: v1.20.15");
    let b = scenario::load_str(&path, &bumped, &catalog, scenario::today()).unwrap();
    assert_ne!(a.version, b.version);
    let names = |s| {
        matrix::expand(s)
            .into_iter()
            .map(|j| j.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&a), names(&b));
}

#[test]
fn broken_fixtures_fail_with_located_errors() {
    let catalog = common::catalog();
    let dir = common::root().join("fixtures/scenarios/bad");
    let files = scenario::files_in(&dir).unwrap();
    assert!(
        files.len() >= 14,
        "expected the full set of broken fixtures"
    );
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expects.is_empty(),
            "{} declares no expected error",
            f.display()
        );
        let errs = match scenario::load(&f, &catalog, scenario::today()) {
            Ok(_) => panic!("{} validated but must not", f.display()),
            Err(e) => e,
        };
        for exp in expects {
            let (loc_field, fragment) = exp.split_once(" :: ").unwrap();
            let (loc, field) = loc_field.split_once(' ').unwrap();
            let (line, col) = loc.split_once(':').unwrap();
            let (line, col): (usize, usize) = (line.parse().unwrap(), col.parse().unwrap());
            let found = errs.0.iter().any(|e| {
                e.file == f
                    && e.line == line
                    && e.column == col
                    && (field == "-" || e.field == field)
                    && e.message.contains(fragment)
            });
            assert!(found, "{}: expected `{exp}`, got:\n{errs}", f.display());
            // The rendered error names file, line, column and field.
            let shown = errs.to_string();
            assert!(
                shown.contains(&format!("{}:{line}:{col}: ", f.display())),
                "{shown}"
            );
        }
    }
}
