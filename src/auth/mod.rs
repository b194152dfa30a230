//! Who may call what, and how much: bearer tokens mapped to principals and roles, the
//! one method -> roles table ([`table`]), the request gate in front of every service
//! ([`gate`]: authentication, authorization, load shedding, per-RPC timeout), abuse
//! limits for the customer-facing writes ([`limits`]) and TLS with reload ([`tls`]).
//!
//! Tokens are never stored: the config holds the hex SHA-256 of each token, and the
//! gate hashes the presented token and looks the digest up. The token itself is never
//! logged. Looking up a digest in a hash map leaks nothing useful through timing: an
//! attacker would have to control the digest of their guess, i.e. invert SHA-256.
//!
//! With no principals configured the gate runs open (every caller is the `anonymous`
//! principal with every role); `holdless serve` then refuses a non-loopback listen
//! address unless `--insecure` is given. The table is enforced either way: a method
//! missing from it is refused.

pub mod gate;
pub mod limits;
pub mod table;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::config::{PrincipalSettings, Settings};

/// A role a principal holds; every RPC allows one or more (see [`table::METHOD_ROLES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The telephony platform: routing, call and agent events, callback dispatch.
    Telephony,
    /// Supervisors and admin tools: plan, customers, stats, audit.
    Supervisor,
    /// Customer channels (web page, app, IVR): callbacks and surveys.
    Customer,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Telephony, Role::Supervisor, Role::Customer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Telephony => "telephony",
            Role::Supervisor => "supervisor",
            Role::Customer => "customer",
        }
    }
}

/// The authenticated caller, put into each request's extensions by the gate:
/// `request.extensions().get::<Principal>()` in a service (audit, callback ownership).
///
/// Cheap to hand to every request: a configured principal is one shared allocation,
/// and the anonymous caller (no principals configured) none at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(Option<Arc<Named>>);

#[derive(Debug, PartialEq, Eq)]
struct Named {
    name: String,
    roles: Vec<Role>,
}

impl Principal {
    pub fn new(name: &str, roles: &[Role]) -> Self {
        Self(Some(Arc::new(Named {
            name: name.to_owned(),
            roles: roles.to_vec(),
        })))
    }

    /// The caller when no principals are configured (auth off, loopback only).
    pub fn anonymous() -> Self {
        Self(None)
    }

    pub fn name(&self) -> &str {
        self.0
            .as_ref()
            .map_or(crate::domain::audit::ANONYMOUS, |n| &n.name)
    }

    pub fn roles(&self) -> &[Role] {
        self.0.as_ref().map_or(&Role::ALL, |n| &n.roles)
    }

    pub fn has_any(&self, roles: &[Role]) -> bool {
        self.roles().iter().any(|r| roles.contains(r))
    }
}

/// The principals, by the SHA-256 digest of their token.
#[derive(Debug, Clone)]
pub struct Access {
    by_digest: HashMap<[u8; 32], Principal>,
}

impl Access {
    /// Builds the principal map; errors name the offending entry (never a token).
    pub fn from_settings(principals: &[PrincipalSettings]) -> Result<Self, String> {
        let mut by_digest = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for (i, p) in principals.iter().enumerate() {
            let at = format!("auth.principals[{i}]");
            if p.name.trim().is_empty() {
                return Err(format!("{at}.name must not be empty"));
            }
            if !names.insert(p.name.as_str()) {
                return Err(format!("{at}: principal name {:?} is used twice", p.name));
            }
            let digest = parse_digest(&p.token_sha256).ok_or_else(|| {
                format!(
                    "{at}.token_sha256 must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum)"
                )
            })?;
            if p.roles.is_empty() {
                return Err(format!("{at}.roles must name at least one role"));
            }
            if by_digest
                .insert(digest, Principal::new(&p.name, &p.roles))
                .is_some()
            {
                return Err(format!("{at}: two principals share one token"));
            }
        }
        Ok(Self { by_digest })
    }

    /// Whether tokens are required (at least one principal is configured).
    pub fn enforced(&self) -> bool {
        !self.by_digest.is_empty()
    }

    /// The principal holding `token` (the console's sign-in), if any.
    pub fn principal_for_token(&self, token: &[u8]) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(token).into();
        self.by_digest.get(&digest).cloned()
    }

    /// Decides one call. `Ok(None)`: an open service, no principal. `Ok(Some(p))`: `p`
    /// may call `path`. UNAUTHENTICATED for a missing or unknown token,
    /// PERMISSION_DENIED for a method outside the table or a role that may not call it.
    pub fn authorize(
        &self,
        path: &str,
        authorization: Option<&[u8]>,
    ) -> Result<Option<Principal>, Status> {
        if table::is_open(path) {
            return Ok(None);
        }
        let principal = if self.enforced() {
            let token = authorization
                .and_then(bearer_token)
                .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
            let digest: [u8; 32] = Sha256::digest(token).into();
            self.by_digest
                .get(&digest)
                .cloned()
                .ok_or_else(|| Status::unauthenticated("unknown token"))?
        } else {
            Principal::anonymous()
        };
        let Some(allowed) = table::roles_for(path) else {
            tracing::warn!(
                path,
                principal = principal.name(),
                "method not in the access table"
            );
            return Err(Status::permission_denied(format!(
                "{path} is not in the access table"
            )));
        };
        if !principal.has_any(allowed) {
            tracing::info!(path, principal = principal.name(), "permission denied");
            let needs: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
            return Err(Status::permission_denied(format!(
                "principal {} may not call {path} (needs role {})",
                principal.name(),
                needs.join(" or ")
            )));
        }
        Ok(Some(principal))
    }
}

/// The token of an `authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

fn parse_digest(hex_digest: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_digest.trim()).ok()?;
    bytes.try_into().ok()
}

/// Hex SHA-256 of a token, as `auth.principals[].token_sha256` expects.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Refuses to expose an unauthenticated server beyond loopback. `Err` is the one line
/// `holdless serve` prints before exiting 64.
pub fn check_exposure(settings: &Settings, insecure: bool) -> Result<(), String> {
    let listen: SocketAddr = settings.server.listen;
    if settings.auth.principals.is_empty() && !listen.ip().is_loopback() && !insecure {
        return Err(format!(
            "refusing to listen on {listen} without authentication: configure \
             [[auth.principals]] or pass --insecure"
        ));
    }
    // The console follows the same rule: without principals anyone who reaches it is a
    // supervisor, so it stays on loopback.
    let console: SocketAddr = settings.console.listen;
    if settings.console.enabled
        && settings.auth.principals.is_empty()
        && !console.ip().is_loopback()
        && !insecure
    {
        return Err(format!(
            "refusing to serve the console on {console} without authentication: configure \
             [[auth.principals]], keep console.listen on loopback, or pass --insecure"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(name: &str, token: &str, roles: &[Role]) -> PrincipalSettings {
        PrincipalSettings {
            name: name.into(),
            token_sha256: token_sha256(token),
            roles: roles.to_vec(),
        }
    }

    const ROUTE: &str = "/holdless.v1.RoutingService/RouteCall";

    #[test]
    fn tokens_map_to_principals_and_roles_are_checked() {
        let access = Access::from_settings(&[
            settings("pbx", "t1", &[Role::Telephony]),
            settings("ops", "s1", &[Role::Supervisor]),
        ])
        .unwrap();
        let p = access
            .authorize(ROUTE, Some(b"Bearer t1"))
            .unwrap()
            .unwrap();
        assert_eq!(p.name(), "pbx");
        let p = access.authorize(ROUTE, Some(b"bearer   t1 ")).unwrap();
        assert_eq!(p.unwrap().name(), "pbx");
        let code = |h: Option<&[u8]>, path: &str| access.authorize(path, h).unwrap_err().code();
        assert_eq!(code(None, ROUTE), tonic::Code::Unauthenticated);
        assert_eq!(
            code(Some(b"Bearer nope"), ROUTE),
            tonic::Code::Unauthenticated
        );
        assert_eq!(code(Some(b"Basic t1"), ROUTE), tonic::Code::Unauthenticated);
        assert_eq!(code(Some(b"Bearer "), ROUTE), tonic::Code::Unauthenticated);
        assert_eq!(
            code(Some(b"Bearer s1"), ROUTE),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            code(Some(b"Bearer t1"), "/holdless.v1.RoutingService/Unlisted"),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            access
                .authorize("/grpc.health.v1.Health/Check", None)
                .unwrap(),
            None
        );
    }

    #[test]
    fn open_mode_still_enforces_the_table() {
        let access = Access::from_settings(&[]).unwrap();
        assert!(!access.enforced());
        let p = access.authorize(ROUTE, None).unwrap().unwrap();
        assert_eq!(p, Principal::anonymous());
        let e = access
            .authorize("/holdless.v1.Secret/Thing", None)
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn bad_principal_entries_are_refused_without_echoing_tokens() {
        let bad_hash = PrincipalSettings {
            name: "x".into(),
            token_sha256: "secret-token".into(),
            roles: vec![Role::Customer],
        };
        let e = Access::from_settings(&[bad_hash]).unwrap_err();
        assert!(e.contains("auth.principals[0].token_sha256"), "{e}");
        assert!(!e.contains("secret-token"), "{e}");
        let dup = [
            settings("a", "t", &[Role::Customer]),
            settings("b", "t", &[Role::Customer]),
        ];
        assert!(Access::from_settings(&dup).is_err());
        let no_roles = [settings("a", "t", &[])];
        assert!(Access::from_settings(&no_roles).is_err());
        let same_name = [
            settings("a", "t", &[Role::Customer]),
            settings("a", "u", &[Role::Customer]),
        ];
        assert!(Access::from_settings(&same_name).is_err());
    }

    #[test]
    fn unauthenticated_servers_stay_on_loopback_unless_insecure() {
        let mut s = Settings::default();
        assert!(check_exposure(&s, false).is_ok());
        s.server.listen = "0.0.0.0:50051".parse().unwrap();
        let e = check_exposure(&s, false).unwrap_err();
        assert!(e.contains("--insecure"), "{e}");
        assert!(check_exposure(&s, true).is_ok());
        s.auth
            .principals
            .push(settings("a", "t", &[Role::Customer]));
        assert!(check_exposure(&s, false).is_ok());
        s.server.listen = "[::1]:0".parse().unwrap();
        s.auth.principals.clear();
        assert!(check_exposure(&s, false).is_ok());
    }

    #[test]
    fn an_open_console_stays_on_loopback_unless_disabled_or_insecure() {
        let mut s = Settings::default();
        s.console.listen = "0.0.0.0:9465".parse().unwrap();
        let e = check_exposure(&s, false).unwrap_err();
        assert!(e.contains("console") && e.contains("0.0.0.0:9465"), "{e}");
        assert!(check_exposure(&s, true).is_ok());
        s.console.enabled = false;
        assert!(check_exposure(&s, false).is_ok());
        s.console.enabled = true;
        s.auth
            .principals
            .push(settings("ops", "t", &[Role::Supervisor]));
        assert!(check_exposure(&s, false).is_ok());
    }

    #[test]
    fn token_hash_matches_sha256sum() {
        // printf %s secret | sha256sum
        assert_eq!(
            token_sha256("secret"),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
    }
}
