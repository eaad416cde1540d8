//! Which URL an account's calls for a region go to: the public regional endpoint, the VPC
//! endpoint, or a full override (an emulator, a private gateway). HTTPS always, except plain
//! HTTP to a loopback address, so credentials never cross a network unencrypted.

use std::net::IpAddr;

use reqwest::Url;

/// Where requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `https://ecs.aliyuncs.com/` for cn-hangzhou, `https://ecs.<region>.aliyuncs.com/` otherwise.
    Public,
    /// `https://ecs-vpc.<region>.aliyuncs.com/` (from inside a VPC; availability per region is
    /// not documented, docs/ecs-api.md §2).
    Vpc,
    /// A URL used for every region; `{region}` in it is replaced by the region id.
    Custom(String),
}

/// An endpoint setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Not a URL, or not HTTP(S).
    #[error("endpoint {value:?} is not a usable URL: {detail}")]
    Malformed {
        /// The URL as built for the region (`{region}` already replaced).
        value: String,
        /// What is wrong: a parse error, a scheme not http(s), no host, a query or user info.
        detail: String,
    },
    /// Plain HTTP to a host that is not loopback.
    #[error(
        "endpoint {value:?} uses plain http to a non-loopback host; use https (plain http is accepted for 127.0.0.1, ::1 and localhost only)"
    )]
    InsecureRemote {
        /// The URL as built for the region; its host is not loopback.
        value: String,
    },
    /// A region id with characters that cannot be part of a host name.
    #[error("region id {region:?} is not valid (lowercase letters, digits and '-' only)")]
    BadRegion {
        /// The region id.
        region: String,
    },
}

impl Endpoint {
    /// Parses a setting: `public`, `vpc`, or an `http(s)://` URL (optionally with `{region}`).
    pub fn parse(value: &str) -> Result<Endpoint, EndpointError> {
        match value {
            "public" => Ok(Endpoint::Public),
            "vpc" => Ok(Endpoint::Vpc),
            _ => {
                let endpoint = Endpoint::Custom(value.to_owned());
                endpoint.url_for("cn-hangzhou")?;
                Ok(endpoint)
            }
        }
    }

    /// The URL for calls about `region`.
    pub fn url_for(&self, region: &str) -> Result<Url, EndpointError> {
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(EndpointError::BadRegion {
                region: region.to_owned(),
            });
        }
        let text = match self {
            Endpoint::Public if region == "cn-hangzhou" => "https://ecs.aliyuncs.com/".to_owned(),
            Endpoint::Public => format!("https://ecs.{region}.aliyuncs.com/"),
            Endpoint::Vpc => format!("https://ecs-vpc.{region}.aliyuncs.com/"),
            Endpoint::Custom(template) => template.replace("{region}", region),
        };
        checked(text)
    }

    /// Where STS calls go for an account of this endpoint whose first region is `region`: the
    /// regional STS endpoint (`sts.<region>.aliyuncs.com`, `sts-vpc.` for `vpc`), the central
    /// `sts.aliyuncs.com` when the account names no region, or a custom URL itself (an
    /// emulator plays STS on the same port).
    pub fn sts_url(&self, region: Option<&str>) -> Result<Url, EndpointError> {
        let text = match (self, region) {
            (Endpoint::Public, Some(region)) => format!("https://sts.{region}.aliyuncs.com/"),
            (Endpoint::Vpc, Some(region)) => format!("https://sts-vpc.{region}.aliyuncs.com/"),
            (Endpoint::Public | Endpoint::Vpc, None) => "https://sts.aliyuncs.com/".to_owned(),
            (Endpoint::Custom(template), region) => {
                template.replace("{region}", region.unwrap_or("cn-hangzhou"))
            }
        };
        checked(text)
    }

    /// Where Resource Manager calls (`ListAccounts`) go: the central endpoint
    /// (docs/sts-and-directories.md §5.1; no VPC endpoint is documented there, so `vpc` uses it
    /// too), or a custom URL itself (an emulator plays Resource Manager on the same port).
    pub fn resource_manager_url(&self) -> Result<Url, EndpointError> {
        let text = match self {
            Endpoint::Public | Endpoint::Vpc => "https://resourcemanager.aliyuncs.com/".to_owned(),
            Endpoint::Custom(template) => template.replace("{region}", "cn-hangzhou"),
        };
        checked(text)
    }
}

/// `text` as a URL requests may go to: http(s), a host, no query or user information, and
/// plain http only to a loopback address.
pub fn checked(text: String) -> Result<Url, EndpointError> {
    let malformed = |detail: String| EndpointError::Malformed {
        value: text.clone(),
        detail,
    };
    let url = Url::parse(&text).map_err(|e| malformed(e.to_string()))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(EndpointError::InsecureRemote { value: text });
        }
        other => return Err(malformed(format!("scheme {other:?} is not http or https"))),
    }
    if url.host_str().is_none() {
        return Err(malformed("no host".into()));
    }
    if url.query().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(malformed(
            "it must not carry a query or user information".into(),
        ));
    }
    Ok(url)
}

/// Whether a URL's host is a loopback address or `localhost`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_endpoints_follow_the_documented_pattern() {
        assert_eq!(
            Endpoint::Public.url_for("cn-hangzhou").unwrap().as_str(),
            "https://ecs.aliyuncs.com/"
        );
        assert_eq!(
            Endpoint::Public.url_for("ap-southeast-1").unwrap().as_str(),
            "https://ecs.ap-southeast-1.aliyuncs.com/"
        );
        assert_eq!(
            Endpoint::Vpc.url_for("cn-beijing").unwrap().as_str(),
            "https://ecs-vpc.cn-beijing.aliyuncs.com/"
        );
    }

    #[test]
    fn an_override_serves_every_region_and_may_name_it() {
        let custom = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            custom.url_for("eu-central-1").unwrap().as_str(),
            "http://127.0.0.1:8080/"
        );
        let templated = Endpoint::parse("https://ecs.{region}.example.internal/").unwrap();
        assert_eq!(
            templated.url_for("cn-beijing").unwrap().as_str(),
            "https://ecs.cn-beijing.example.internal/"
        );
    }

    #[test]
    fn plain_http_is_refused_off_loopback() {
        assert!(matches!(
            Endpoint::parse("http://10.0.0.5:8080"),
            Err(EndpointError::InsecureRemote { .. })
        ));
        assert!(Endpoint::parse("http://localhost:1").is_ok());
        assert!(Endpoint::parse("http://[::1]:1").is_ok());
        assert!(Endpoint::parse("ftp://127.0.0.1").is_err());
        assert!(Endpoint::parse("not a url").is_err());
        assert!(Endpoint::parse("https://h/?Signature=x").is_err());
    }

    #[test]
    fn region_ids_cannot_inject_into_the_host() {
        assert!(Endpoint::Public.url_for("cn-hangzhou.evil.com/").is_err());
        assert!(Endpoint::Public.url_for("").is_err());
    }
}
