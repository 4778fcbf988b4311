//! Error text as the house style prints it: the error, then each cause after `: `, each
//! said once.

/// `e` and its chain of sources, joined with `: `.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("failed to read scenario")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_follow_in_order() {
        let e = Outer(std::io::Error::other("permission denied"));
        assert_eq!(
            super::chain(&e),
            "failed to read scenario: permission denied"
        );
    }
}
