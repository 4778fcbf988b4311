use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A Kubernetes version: `v1.20.2`, `1.20.2` or a minor line `1.20`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: Option<u32>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid Kubernetes version {0:?}: expected v<major>.<minor>[.<patch>]")]
pub struct VersionError(pub String);

impl FromStr for KubeVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || VersionError(s.to_string());
        let t = s.strip_prefix('v').unwrap_or(s);
        // Drop pre-release and build metadata: v1.21.0-alpha.1, v1.20.2+debian.
        let t = t.split(['-', '+']).next().unwrap_or(t);
        let mut parts = t.split('.');
        let major = parts.next().and_then(|p| p.parse().ok()).ok_or_else(err)?;
        let minor = parts.next().and_then(|p| p.parse().ok()).ok_or_else(err)?;
        let patch = match parts.next() {
            Some(p) => Some(p.parse().map_err(|_| err())?),
            None => None,
        };
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(KubeVersion {
            major,
            minor,
            patch,
        })
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.patch {
            Some(p) => write!(f, "v{}.{}.{}", self.major, self.minor, p),
            None => write!(f, "v{}.{}", self.major, self.minor),
        }
    }
}

impl KubeVersion {
    /// The minor line, e.g. `1.20` for `v1.20.2`.
    pub fn minor_line(&self) -> KubeVersion {
        KubeVersion {
            patch: None,
            ..*self
        }
    }
}

/// The minor line a release marker names: `stable-1.20` → 1.20; `latest` → none.
pub fn marker_minor(marker: &str) -> Option<KubeVersion> {
    let rest = marker
        .strip_prefix("stable-")
        .or_else(|| marker.strip_prefix("latest-"))?;
    rest.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_minor_and_suffixed_versions() {
        let v: KubeVersion = "v1.20.2".parse().unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 20, Some(2)));
        assert_eq!(v.to_string(), "v1.20.2");
        assert_eq!("1.6".parse::<KubeVersion>().unwrap().to_string(), "v1.6");
        assert_eq!("v1.21.0-alpha.1".parse::<KubeVersion>().unwrap().minor, 21);
        assert!("1".parse::<KubeVersion>().is_err());
        assert!("v1.x".parse::<KubeVersion>().is_err());
        assert!("1.2.3.4".parse::<KubeVersion>().is_err());
    }

    #[test]
    fn markers_name_their_minor() {
        assert_eq!(marker_minor("stable-1.20").unwrap().minor, 20);
        assert_eq!(marker_minor("latest-1.21").unwrap().minor, 21);
        assert_eq!(marker_minor("latest"), None);
    }

    #[test]
    fn ordering_is_numeric() {
        let a: KubeVersion = "1.9".parse().unwrap();
        let b: KubeVersion = "1.10".parse().unwrap();
        assert!(a < b);
    }
}
