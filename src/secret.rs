//! `Secret`: the only type that holds an AccessKey secret or an STS token. Its `Debug` and
//! `Display` print a redaction, so a secret cannot reach a log line, an error or a panic message
//! by being formatted; the value is wiped from memory when dropped.

use std::fmt;

use zeroize::Zeroize;

/// What a secret prints as.
pub const REDACTED: &str = "[REDACTED]";

/// A secret string. Read it with [`Secret::expose`] only where it is sent or signed with.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself, for signing and sending only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty (an empty secret is a configuration mistake).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let secret = Secret::new("wyLTSmsyPGP1ohvvw8xYgB29dlGI8KMiH2pKCNZ9");
        for shown in [
            format!("{secret}"),
            format!("{secret:?}"),
            format!("{secret:#?}"),
            format!("{:?}", Some(&secret)),
        ] {
            assert!(!shown.contains("wyLTS"), "{shown}");
            assert!(shown.contains(REDACTED));
        }
        assert_eq!(secret.expose(), "wyLTSmsyPGP1ohvvw8xYgB29dlGI8KMiH2pKCNZ9");
    }
}
