//! From a client certificate's URI SANs to the service account it names.
//!
//! The scheme is SPIFFE's Kubernetes convention, the one Istio and Linkerd
//! use: a certificate carries exactly one URI SAN,
//! `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`. Anything looser
//! (a second URI, another trust domain, extra path segments, escapes) is
//! refused rather than interpreted: a certificate is an identity, and an
//! identity read two ways is no identity. This module is pure; the TLS
//! layer hands it the SAN strings.

use crate::jwt::service_account_subject;

/// The service account a certificate names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccount {
    pub namespace: String,
    pub name: String,
}

impl ServiceAccount {
    /// The subject Kubernetes gives this account's tokens: the key the
    /// gateway's service-account table is indexed by, for tokens and
    /// certificates alike.
    pub fn subject(&self) -> String {
        service_account_subject(&self.namespace, &self.name)
    }

    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.name
        )
    }
}

/// Why a verified certificate names no usable identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the certificate has no URI SAN; it needs spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/NAME")]
    NoUri,
    #[error("the certificate has {0} URI SANs; it must have exactly one SPIFFE ID")]
    SeveralUris(usize),
    #[error("the certificate's URI SAN {0:?} is not a SPIFFE ID (spiffe://...)")]
    NotSpiffe(String),
    #[error("the certificate's SPIFFE ID {id:?} is not in trust domain {expected:?}")]
    TrustDomain { id: String, expected: String },
    #[error(
        "the certificate's SPIFFE ID {0:?} does not have the form spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/NAME"
    )]
    Path(String),
    #[error("the certificate could not be read: {0}")]
    Unreadable(String),
}

/// Whether `s` is a Kubernetes object name as namespaces and service
/// accounts use them: lowercase letters, digits, '-' and '.', starting and
/// ending alphanumeric, at most 253 characters. Being strict here keeps
/// percent-escapes and other spellings of one name out.
fn is_k8s_name(s: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            bytes.len() <= 253
                && alnum(first)
                && alnum(last)
                && bytes.iter().all(|&b| alnum(b) || b == b'-' || b == b'.')
        }
        _ => false,
    }
}

/// The service account named by `uris` (a certificate's URI SANs) in
/// `trust_domain`.
pub fn service_account(uris: &[&str], trust_domain: &str) -> Result<ServiceAccount, IdentityError> {
    let uri = match uris {
        [] => return Err(IdentityError::NoUri),
        [one] => *one,
        more => return Err(IdentityError::SeveralUris(more.len())),
    };
    // The scheme is compared exactly: SPIFFE IDs are lowercase.
    let Some(rest) = uri.strip_prefix("spiffe://") else {
        return Err(IdentityError::NotSpiffe(uri.to_owned()));
    };
    let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
    if domain != trust_domain {
        return Err(IdentityError::TrustDomain {
            id: uri.to_owned(),
            expected: trust_domain.to_owned(),
        });
    }
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["ns", namespace, "sa", name] if is_k8s_name(namespace) && is_k8s_name(name) => {
            Ok(ServiceAccount {
                namespace: (*namespace).to_owned(),
                name: (*name).to_owned(),
            })
        }
        _ => Err(IdentityError::Path(uri.to_owned())),
    }
}

/// Whether `domain` can be a SPIFFE trust domain: lowercase letters, digits,
/// '.', '-' and '_', not empty.
pub fn is_trust_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'_'
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TD: &str = "cluster.local";

    fn sa(namespace: &str, name: &str) -> Result<ServiceAccount, IdentityError> {
        Ok(ServiceAccount {
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    #[test]
    fn uri_sans_map_to_service_accounts() {
        let path = |u: &str| Err(IdentityError::Path(u.into()));
        let cases: Vec<(Vec<&str>, Result<ServiceAccount, IdentityError>)> = vec![
            (
                vec!["spiffe://cluster.local/ns/team/sa/bot"],
                sa("team", "bot"),
            ),
            (
                vec!["spiffe://cluster.local/ns/team-a/sa/bot.v2-1"],
                sa("team-a", "bot.v2-1"),
            ),
            (vec![], Err(IdentityError::NoUri)),
            (
                vec![
                    "spiffe://cluster.local/ns/team/sa/bot",
                    "spiffe://cluster.local/ns/team/sa/other",
                ],
                Err(IdentityError::SeveralUris(2)),
            ),
            (
                vec!["https://cluster.local/ns/team/sa/bot"],
                Err(IdentityError::NotSpiffe(
                    "https://cluster.local/ns/team/sa/bot".into(),
                )),
            ),
            (
                vec!["SPIFFE://cluster.local/ns/team/sa/bot"],
                Err(IdentityError::NotSpiffe(
                    "SPIFFE://cluster.local/ns/team/sa/bot".into(),
                )),
            ),
            (
                vec!["spiffe://evil.example/ns/team/sa/bot"],
                Err(IdentityError::TrustDomain {
                    id: "spiffe://evil.example/ns/team/sa/bot".into(),
                    expected: TD.into(),
                }),
            ),
            (
                vec!["spiffe://cluster.local.evil/ns/team/sa/bot"],
                Err(IdentityError::TrustDomain {
                    id: "spiffe://cluster.local.evil/ns/team/sa/bot".into(),
                    expected: TD.into(),
                }),
            ),
            (
                vec!["spiffe://cluster.local:443/ns/team/sa/bot"],
                Err(IdentityError::TrustDomain {
                    id: "spiffe://cluster.local:443/ns/team/sa/bot".into(),
                    expected: TD.into(),
                }),
            ),
            (
                vec!["spiffe://cluster.local"],
                path("spiffe://cluster.local"),
            ),
            (
                vec!["spiffe://cluster.local/ns/team/sa/bot/"],
                path("spiffe://cluster.local/ns/team/sa/bot/"),
            ),
            (
                vec!["spiffe://cluster.local/ns/team/sa/bot/extra"],
                path("spiffe://cluster.local/ns/team/sa/bot/extra"),
            ),
            (
                vec!["spiffe://cluster.local/sa/bot/ns/team"],
                path("spiffe://cluster.local/sa/bot/ns/team"),
            ),
            (
                vec!["spiffe://cluster.local/ns//sa/bot"],
                path("spiffe://cluster.local/ns//sa/bot"),
            ),
            (
                vec!["spiffe://cluster.local/ns/Team/sa/bot"],
                path("spiffe://cluster.local/ns/Team/sa/bot"),
            ),
            (
                vec!["spiffe://cluster.local/ns/team/sa/b%6ft"],
                path("spiffe://cluster.local/ns/team/sa/b%6ft"),
            ),
            (
                vec!["spiffe://cluster.local/ns/team/sa/bot?x=1"],
                path("spiffe://cluster.local/ns/team/sa/bot?x=1"),
            ),
            (
                vec!["spiffe://cluster.local/ns/team/sa/-bot"],
                path("spiffe://cluster.local/ns/team/sa/-bot"),
            ),
            (
                vec!["spiffe://cluster.local/ns/../sa/bot"],
                path("spiffe://cluster.local/ns/../sa/bot"),
            ),
        ];
        for (uris, want) in cases {
            assert_eq!(service_account(&uris, TD), want, "{uris:?}");
        }
    }

    #[test]
    fn an_account_has_the_token_subject_and_spiffe_id_of_its_name() {
        let account = sa("team", "bot").unwrap();
        assert_eq!(account.subject(), "system:serviceaccount:team:bot");
        let id = account.spiffe_id(TD);
        assert_eq!(id, "spiffe://cluster.local/ns/team/sa/bot");
        assert_eq!(service_account(&[&id], TD), Ok(account));
    }

    #[test]
    fn trust_domains_are_checked() {
        for good in ["cluster.local", "example.org", "td_1-a"] {
            assert!(is_trust_domain(good), "{good}");
        }
        for bad in ["", "Cluster.local", "a/b", "a:1", "spiffe://a"] {
            assert!(!is_trust_domain(bad), "{bad}");
        }
    }
}
