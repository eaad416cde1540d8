//! The PostgreSQL URL as libpq users write it — `key=value` pairs or a `postgresql://` URI —
//! and its TLS settings: `sslmode` (`disable`, `allow` and `prefer`, libpq's default, connect
//! in plain text here; `require`; `verify-full`) and `sslrootcert`. tokio-postgres reads
//! neither `verify-full` nor `sslrootcert`, so both are taken out here and the rest is left
//! to it; `verify-ca` (a chain without the host name) is refused with advice. Pure text, used
//! by `config` (checking `ledger.url`) and by the ledger (connecting). libpq's parameters:
//! <https://www.postgresql.org/docs/current/libpq-connect.html>.

use std::path::PathBuf;

/// What the URL asks of TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Plain text (`disable`, `allow`, `prefer`, or no `sslmode`).
    Plain,
    /// Encrypted, the server not verified (`require`).
    Require,
    /// Encrypted, the server's chain and host name verified (`verify-full`), against this
    /// root file or the system's roots.
    VerifyFull(Option<PathBuf>),
}

/// `url` without `sslmode` and `sslrootcert`, and what they asked for.
pub fn split(url: &str) -> Result<(String, Mode), String> {
    let (rest, params) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_uri(url)
    } else {
        split_pairs(url)?
    };
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let root = get("sslrootcert").map(PathBuf::from);
    let mode = match get("sslmode").as_deref() {
        None | Some("disable" | "allow" | "prefer") => Mode::Plain,
        Some("require") => Mode::Require,
        Some("verify-full") => Mode::VerifyFull(root),
        Some("verify-ca") => {
            return Err(
                "sslmode=verify-ca is not supported: use sslmode=verify-full (it also checks the host name against the certificate)".into(),
            );
        }
        Some(other) => {
            return Err(format!(
                "sslmode={other:?} is not one of disable, allow, prefer, require, verify-full"
            ));
        }
    };
    Ok((rest, mode))
}

/// A URI's query parameters `sslmode` and `sslrootcert` taken out.
fn split_uri(url: &str) -> (String, Vec<(String, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), Vec::new());
    };
    let (mut kept, mut taken) = (Vec::new(), Vec::new());
    for param in query.split('&') {
        match param.split_once('=') {
            Some((key @ ("sslmode" | "sslrootcert"), value)) => {
                taken.push((key.to_owned(), value.to_owned()));
            }
            _ => kept.push(param),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, taken)
}

/// libpq `key=value` pairs (values optionally in single quotes, `\` escaping) with
/// `sslmode` and `sslrootcert` taken out; the others written back quoted.
fn split_pairs(url: &str) -> Result<(String, Vec<(String, String)>), String> {
    let (mut kept, mut taken) = (Vec::new(), Vec::new());
    let mut chars = url.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("the ledger URL has {key:?} without a value"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("the ledger URL's {key} has an unclosed quote")),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())));
        }
        if key == "sslmode" || key == "sslrootcert" {
            taken.push((key, value));
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok((kept.join(" "), taken))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_either_form() {
        let (rest, mode) =
            split("host=db port=5432 sslmode=verify-full sslrootcert='/etc/ca one.pem' user=x")
                .unwrap();
        assert_eq!(rest, "host='db' port='5432' user='x'");
        assert_eq!(mode, Mode::VerifyFull(Some("/etc/ca one.pem".into())));
        let (rest, mode) =
            split("postgresql://u@db/ledger?sslmode=require&application_name=a").unwrap();
        assert_eq!(rest, "postgresql://u@db/ledger?application_name=a");
        assert_eq!(mode, Mode::Require);
        assert_eq!(split("host=/run/postgresql").unwrap().1, Mode::Plain);
        assert!(
            split("host=db sslmode=verify-ca")
                .unwrap_err()
                .contains("verify-full")
        );
        assert!(split("host=db sslmode=sometimes").is_err());
        assert!(split("host='db").is_err());
        // A password with a quote and a backslash survives being written back.
        let (rest, _) = split(r"password='it\'s\\x' sslmode=disable").unwrap();
        assert_eq!(rest, r"password='it\'s\\x'");
    }
}
