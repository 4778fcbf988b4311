//! Documented exit codes. Each failure class has its own code so CI can tell a broken
//! release from a broken machine.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitKind {
    /// 0: every blocking step passed.
    Passed,
    /// 1: a test step failed or ran past its deadline: the release is broken.
    TestFailure,
    /// 2: bad scenario, variant or command line; nothing ran.
    Configuration,
    /// 3: the harness could not provide what the test needs (docker, images, disk, teardown).
    Infrastructure,
    /// 130: stopped by Ctrl-C or SIGTERM; artifacts of the partial run were still written.
    Interrupted,
}

impl ExitKind {
    pub fn code(self) -> i32 {
        match self {
            ExitKind::Passed => 0,
            ExitKind::TestFailure => 1,
            ExitKind::Configuration => 2,
            ExitKind::Infrastructure => 3,
            ExitKind::Interrupted => 130,
        }
    }
}
