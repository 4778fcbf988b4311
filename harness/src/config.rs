//! Loading YAML configuration with locations: every error names the file, line, column and
//! field path, whether serde rejected the document or a semantic check did.

use marked_yaml::{Marker, Node};
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

/// One configuration problem, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// Dotted field path, e.g. `steps[2].deadline`; empty for the whole document.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// All problems found in one or more files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    pub fn single(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

/// A parsed document that can still answer "where is field X?".
#[derive(Debug, Clone)]
pub struct Located {
    pub file: PathBuf,
    root: Node,
    /// Lines of `file` before the parsed text (for one document of a multi-document file).
    line_offset: usize,
}

impl Located {
    /// Parses one YAML document (a mapping) that starts on line `line_offset + 1` of `file`,
    /// so that every location it reports is a line of `file`.
    pub fn parse(file: &Path, text: &str, line_offset: usize) -> Result<Located, ConfigError> {
        let opts = marked_yaml::LoaderOptions::default().error_on_duplicate_keys(true);
        match marked_yaml::parse_yaml_with_options(0, text, opts) {
            Ok(root) => Ok(Located {
                file: file.to_path_buf(),
                root,
                line_offset,
            }),
            Err(e) => {
                let (mark, message) = load_error_parts(&e);
                Err(ConfigError {
                    file: file.to_path_buf(),
                    line: mark.map(|m| m.line()).unwrap_or(1) + line_offset,
                    column: mark.map(|m| m.column()).unwrap_or(1),
                    field: String::new(),
                    message,
                })
            }
        }
    }

    /// Line and column of `field`: the deepest part of the path that exists.
    pub fn position(&self, field: &str) -> (usize, usize) {
        let mark = locate(&self.root, field).or_else(|| self.root.span().start().copied());
        let (line, column) = mark.map(|m| (m.line(), m.column())).unwrap_or((1, 1));
        (line + self.line_offset, column)
    }

    /// An error at `field` (a dotted path such as `steps[1].name`). The location is the
    /// deepest part of the path that exists in the document.
    pub fn error(&self, field: &str, message: impl Into<String>) -> ConfigError {
        let (line, column) = self.position(field);
        ConfigError {
            file: self.file.clone(),
            line,
            column,
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Reads and parses `path` into `T`.
pub fn load_file<T: DeserializeOwned>(path: &Path) -> Result<(T, Located), ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("failed to read file: {e}"),
        })
    })?;
    load_str(path, &text)
}

/// Parses `text` (named `path` in errors) into `T`.
pub fn load_str<T: DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<(T, Located), ConfigErrors> {
    let located = Located::parse(path, text, 0).map_err(ConfigErrors::single)?;
    match marked_yaml::from_node::<T>(&located.root) {
        Ok(v) => Ok((v, located)),
        Err(e) => {
            let field = e.path().unwrap_or("").to_string();
            let mark = e.start_mark();
            let message = clean_serde_message(&e.into_inner().to_string());
            let mut err = located.error(&field, message);
            if let Some(m) = mark {
                err.line = m.line();
                err.column = m.column();
            }
            Err(ConfigErrors::single(err))
        }
    }
}

fn load_error_parts(e: &marked_yaml::LoadError) -> (Option<Marker>, String) {
    use marked_yaml::LoadError::*;
    match e {
        TopLevelMustBeMapping(m) => (Some(*m), "the document must be a mapping".into()),
        TopLevelMustBeSequence(m) => (Some(*m), "the document must be a sequence".into()),
        UnexpectedAnchor(m) => (Some(*m), "YAML anchors are not supported".into()),
        MappingKeyMustBeScalar(m) => (Some(*m), "mapping keys must be plain strings".into()),
        UnexpectedTag(m) => (Some(*m), "YAML tags are not supported".into()),
        ScanError(m, s) => (Some(*m), format!("invalid YAML: {s}")),
        DuplicateKey(inner) => (
            inner.key.span().start().copied(),
            format!("duplicate key `{}`", inner.key.as_str()),
        ),
    }
}

/// Messages start lowercase, as every other error of the harness does.
fn clean_serde_message(s: &str) -> String {
    let s = s.trim();
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Finds the marker of the node at a dotted path like `a.b[2].c`.
fn locate(root: &Node, path: &str) -> Option<Marker> {
    let mut node = root;
    let mut best = root.span().start().copied();
    for seg in segments(path) {
        let next = match seg {
            Seg::Key(k) => node.as_mapping().and_then(|m| {
                // Point at the key itself when the value has no marker of its own.
                m.get_node(k)
            }),
            Seg::Index(i) => node.as_sequence().and_then(|s| s.get_node(i)),
        };
        match next {
            Some(n) => {
                node = n;
                if let Some(m) = n.span().start() {
                    best = Some(*m);
                }
            }
            None => break,
        }
    }
    best
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        while let Some(end) = rest.find(']') {
            if let Ok(i) = rest[1..end].parse() {
                out.push(Seg::Index(i));
            }
            rest = &rest[end + 1..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        name: String,
        items: Vec<Item>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        count: u32,
    }

    const GOOD: &str = "name: x\nitems:\n  - count: 1\n  - count: 2\n";

    #[test]
    fn semantic_errors_point_at_the_field() {
        let (_, loc) = load_str::<Doc>(Path::new("f.yaml"), GOOD).unwrap();
        let e = loc.error("items[1].count", "too many");
        assert_eq!((e.line, e.column), (4, 12));
        assert_eq!(
            e.to_string(),
            "f.yaml:4:12: field `items[1].count`: too many"
        );
    }

    #[test]
    fn unknown_fields_are_located() {
        let text = "name: x\nitems:\n  - count: 1\n    colour: red\n";
        let e = load_str::<Doc>(Path::new("f.yaml"), text).unwrap_err();
        let e = &e.0[0];
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("colour"), "{e}");
        assert!(e.field.starts_with("items[0]"), "{e}");
    }

    #[test]
    fn type_errors_are_located() {
        let text = "name: x\nitems:\n  - count: lots\n";
        let e = load_str::<Doc>(Path::new("f.yaml"), text).unwrap_err();
        let e = &e.0[0];
        assert_eq!((e.line, e.field.as_str()), (3, "items[0].count"), "{e}");
    }

    #[test]
    fn syntax_and_duplicate_keys_are_located() {
        let e = load_str::<Doc>(Path::new("f.yaml"), "name: x\nname: y\nitems: []\n").unwrap_err();
        assert_eq!(e.0[0].line, 2, "{}", e);
        assert!(e.0[0].message.contains("duplicate key `name`"));
        let e = load_str::<Doc>(Path::new("f.yaml"), "name: [x\nitems: []\n").unwrap_err();
        assert!(e.0[0].message.starts_with("invalid YAML"), "{}", e);
    }
}
