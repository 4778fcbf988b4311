//! `shakedown registry start|push|stop`: a registry on this machine (Debian's
//! docker-registry) holding this machine's images under their upstream names, for clusters
//! that pull through `--registry-mirror`.

use super::*;
use crate::images::registry;

/// The upstream registries a pushed build serves: kubeadm's, and docker.io for busybox.
fn registries(v: &crate::release::KubeVersion) -> Vec<&'static str> {
    vec![crate::release::era::default_registry(v), "docker.io"]
}

pub(super) async fn registry(root: &Path, command: RegistryCommand) -> Result<ExitKind, CliError> {
    let infra = |what: &str| {
        let what = what.to_string();
        move |e: crate::images::BuildError| CliError::Infra {
            what,
            source: Box::new(e),
        }
    };
    match command {
        RegistryCommand::Start { port, deadline } => {
            let reg = bounded(
                "start the registry",
                deadline,
                process::StepLog::stderr(),
                |r| async move {
                    registry::start(root, &paths::cache_dir(), port, &r)
                        .await
                        .map_err(infra("start the registry"))
                },
            )
            .await?;
            println!(
                "registry: {} (push to {}, nodes pull from {})",
                reg.container,
                reg.push_host(),
                reg.node_endpoint
            );
            Ok(ExitKind::Passed)
        }
        RegistryCommand::Push {
            port,
            kubernetes,
            deadline,
        } => {
            let (pushed, absent, mirrors) = bounded(
                "push images to the registry",
                deadline,
                process::StepLog::stderr(),
                |r| async move {
                    let art = image_build::local_build(root, &kubernetes, &r).await?;
                    let reg = registry::on_port(port, &r)
                        .await
                        .map_err(infra("find the registry"))?;
                    let (pushes, absent) = registry::pushes_for(&art, &r)
                        .await
                        .map_err(infra("list the images kubeadm pulls"))?;
                    registry::push(&reg, &pushes, &r)
                        .await
                        .map_err(infra("push images to the registry"))?;
                    Ok((pushes, absent, reg.mirrors(&registries(&art.version))))
                },
            )
            .await?;
            for p in &pushed {
                println!("pushed {} as {}", p.local, p.upstream);
            }
            for a in &absent {
                println!("not pushed (no build of it here): {a}");
            }
            let flags: Vec<String> = mirrors
                .iter()
                .map(|m| format!("--registry-mirror {m}"))
                .collect();
            println!("use: {}", flags.join(" "));
            Ok(ExitKind::Passed)
        }
        RegistryCommand::Stop { port, deadline } => {
            bounded(
                "stop the registry",
                deadline,
                process::StepLog::stderr(),
                |r| async move {
                    registry::stop(port, &r)
                        .await
                        .map_err(infra("stop the registry"))
                },
            )
            .await?;
            println!("registry {} removed", registry::container_name(port));
            Ok(ExitKind::Passed)
        }
    }
}
