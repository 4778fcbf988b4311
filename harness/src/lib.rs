//! shakedown: end-to-end cluster tests for Kubernetes release branches.
//!
//! Data flows one way: a scenario file ([`scenario`]) is expanded into a matrix
//! ([`matrix`]), the matrix becomes a plan of steps ([`plan`]), the engine runs the steps under
//! deadlines and emits events ([`engine`]), and reporters consume the events ([`reporter`]).

pub mod actions;
pub mod bench;
pub mod ci;
pub mod cli;
pub mod cni;
pub mod config;
pub mod conformance;
pub mod download;
pub mod engine;
pub mod error;
pub mod exit;
pub mod history;
pub mod images;
pub mod kubeadm;
pub mod matrix;
pub mod nodechecks;
pub mod paths;
pub mod plan;
pub mod process;
pub mod provider;
pub mod readiness;
pub mod release;
pub mod reporter;
pub mod run;
pub mod scenario;
pub mod smoke;
pub mod soak;
pub mod storage;
