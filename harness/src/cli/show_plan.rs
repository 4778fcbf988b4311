//! `shakedown plan`: every job and step of a scenario with its deadline.

use super::*;

pub(super) fn planned(
    root: &Path,
    name: &str,
    provider: Option<&str>,
    cni: Option<&str>,
) -> Result<(LoadedScenario, Catalog, plan::Plan), CliError> {
    let (s, catalog) = load_scenario(root, name)?;
    let p = plan_jobs(root, &s, provider, cni, None, &[])?;
    Ok((s, catalog, p))
}

pub(super) fn show_plan(
    root: &Path,
    name: &str,
    provider: Option<&str>,
    cni: Option<&str>,
) -> Result<ExitKind, CliError> {
    let (s, _, p) = planned(root, name, provider, cni)?;
    println!(
        "scenario {} (Kubernetes {}, kubeadm API {}){}",
        p.scenario,
        p.version,
        s.kubeadm_api()
            .unwrap_or_else(|| "resolved at run time".into()),
        p.run_deadline
            .map(|d| format!(", run deadline {}", humantime::format_duration(d)))
            .unwrap_or_default()
    );
    for j in &p.jobs {
        println!("{}", j.job.name);
        let t = &j.job.topology;
        if let Some(a) = j.job.accelerator {
            println!(
                "  VM nodes: {} of {} control plane(s), {} of {} worker(s); accelerator {}{}",
                t.vm_control_planes,
                t.control_planes,
                t.vm_workers,
                t.workers,
                a.as_str(),
                match a {
                    crate::scenario::Accelerator::Tcg => format!(
                        " (deadlines of node steps x{})",
                        s.scenario.vm.tcg_deadline_factor
                    ),
                    crate::scenario::Accelerator::Kvm => String::new(),
                }
            );
        }
        for st in &j.steps {
            let mut flags = Vec::new();
            if st.always {
                flags.push("always".to_string());
            }
            if st.non_blocking {
                flags.push("non-blocking".to_string());
            }
            if let Some(d) = &st.disabled {
                flags.push(d.clone());
            }
            println!(
                "  {:>2}. {:<16} {:<14} deadline {:>6}{}",
                st.index + 1,
                st.name,
                st.action,
                humantime::format_duration(st.timeout.deadline).to_string(),
                if flags.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", flags.join(", "))
                }
            );
        }
    }
    if let Some(d) = &p.conformance_disabled {
        println!("{d}");
    }
    Ok(ExitKind::Passed)
}
