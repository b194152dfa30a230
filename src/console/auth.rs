//! Who may use the console: supervisors only.
//!
//! - **Sign-in**: a supervisor pastes their token (the one the CLI uses) into
//!   `/signin`; holdless checks it against `auth.principals` and answers with a session
//!   cookie: `HttpOnly` (no script reads it), `SameSite=Strict` (no other site sends
//!   it), `Secure` when the console is served over TLS, and a `Max-Age` of
//!   `console.session_minutes`. The session lives in memory: a restart signs everyone
//!   out, which a console can afford.
//! - **Refusals**: a customer or telephony token gets 403 at sign-in (and as a bearer
//!   header); an unknown token gets 401; a page without a valid session redirects to
//!   `/signin`.
//! - **CSRF**: every request that changes something (anything but GET and HEAD) must
//!   carry the session's CSRF token in a `csrf` form field (or the `X-CSRF-Token`
//!   header); otherwise it is refused with 403 before any handler runs. Sign-in itself
//!   is checked by `Origin` (a cross-site sign-in is refused).
//! - **Scripts and tools** may send `Authorization: Bearer <token>` instead of a
//!   cookie: a browser never attaches that header by itself, so such requests need no
//!   CSRF token.
//! - **Open mode**: with no principals configured (loopback only, enforced at start),
//!   the console is open like the gRPC API: the first page visit gets an anonymous
//!   session, so the CSRF check still applies to every change.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{html, Markup};
use ring::rand::SecureRandom;
use serde::Deserialize;
use tokio::time::Instant;

use super::{page, ConsoleError, ConsoleState, Nav};
use crate::auth::{Principal, Role};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "holdless_session";
/// Name of the CSRF form field (and `X-CSRF-Token` header).
pub const CSRF_FIELD: &str = "csrf";
/// Sessions held at once; past this the ones closest to expiry are dropped first.
pub const MAX_SESSIONS: usize = 10_000;

/// The signed-in supervisor, put into each page request's extensions by
/// [`require_supervisor`].
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub principal: Principal,
    /// The token every form of this session must send back ([`csrf_field`]).
    pub csrf: String,
}

/// The hidden form field carrying the session's CSRF token; put it in every form
/// that changes something.
pub fn csrf_field(signed_in: &SignedIn) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(signed_in.csrf); }
}

#[derive(Debug, Clone)]
struct Session {
    principal: Principal,
    csrf: String,
    expires: Instant,
}

/// The sessions, in memory, by the SHA-256 of their cookie value (a memory dump does
/// not hand out live cookies).
pub struct Sessions {
    lifetime: Duration,
    by_digest: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    pub fn new(lifetime: Duration) -> Self {
        Self {
            lifetime,
            by_digest: Mutex::new(HashMap::new()),
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Opens a session; returns the cookie value and the session as a page sees it.
    pub fn open(&self, principal: Principal) -> Result<(String, SignedIn), ConsoleError> {
        let id = random_hex()?;
        let csrf = random_hex()?;
        let now = Instant::now();
        let mut map = self
            .by_digest
            .lock()
            .map_err(|_| ConsoleError::Internal("session table poisoned".into()))?;
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.expires > now);
            while map.len() >= MAX_SESSIONS {
                let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
                else {
                    break;
                };
                map.remove(&oldest);
            }
        }
        map.insert(
            digest(&id),
            Session {
                principal: principal.clone(),
                csrf: csrf.clone(),
                expires: now + self.lifetime,
            },
        );
        Ok((id, SignedIn { principal, csrf }))
    }

    /// The live session for a cookie value; an expired one is dropped.
    pub fn get(&self, id: &str) -> Option<SignedIn> {
        let mut map = self.by_digest.lock().ok()?;
        let key = digest(id);
        let s = map.get(&key)?;
        if s.expires <= Instant::now() {
            map.remove(&key);
            return None;
        }
        Some(SignedIn {
            principal: s.principal.clone(),
            csrf: s.csrf.clone(),
        })
    }

    pub fn close(&self, id: &str) {
        if let Ok(mut map) = self.by_digest.lock() {
            map.remove(&digest(id));
        }
    }
}

fn digest(id: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(id.as_bytes()).into()
}

/// 256 random bits from the operating system, hex.
fn random_hex() -> Result<String, ConsoleError> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ConsoleError::Internal("no randomness for a session".into()))?;
    Ok(hex::encode(bytes))
}

/// Compares two secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn session_cookie(state: &ConsoleState, id: &str) -> HeaderValue {
    let secure = if state.tls { "; Secure" } else { "" };
    let max_age = state.sessions.lifetime().as_secs();
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("holdless_session=; Path=/"))
}

fn clear_cookie(state: &ConsoleState) -> HeaderValue {
    let secure = if state.tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("holdless_session=; Path=/"))
}

/// The principal of an `Authorization: Bearer` header, checked for the supervisor
/// role: `Ok(None)` without the header.
fn bearer(state: &ConsoleState, headers: &HeaderMap) -> Result<Option<Principal>, Refusal> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .as_bytes()
        .split_at_checked(7)
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
        .map(|(_, t)| t.trim_ascii())
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(refusal(StatusCode::UNAUTHORIZED, "expected a bearer token"));
    };
    match state.access.principal_for_token(token) {
        None => Err(refusal(StatusCode::UNAUTHORIZED, "unknown token")),
        Some(p) if !p.has_any(&[Role::Supervisor]) => Err(not_a_supervisor(&p)),
        Some(p) => Ok(Some(p)),
    }
}

/// A request the access check turns away, and why.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let Refusal(status, why) = self;
        let err = match status {
            StatusCode::FORBIDDEN => ConsoleError::Forbidden(why),
            _ => ConsoleError::BadRequest(vec![(String::new(), why)]),
        };
        let mut res = err.into_response();
        *res.status_mut() = status;
        res
    }
}

fn refusal(status: StatusCode, why: &str) -> Refusal {
    Refusal(status, why.to_owned())
}

fn not_a_supervisor(p: &Principal) -> Refusal {
    tracing::info!(principal = p.name(), "console refused: not a supervisor");
    refusal(
        StatusCode::FORBIDDEN,
        &format!(
            "principal {} may not use the console (needs role supervisor)",
            p.name()
        ),
    )
}

/// The access check in front of every page: see the module documentation.
pub async fn require_supervisor(
    State(state): State<ConsoleState>,
    mut req: Request,
    next: Next,
) -> Response {
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
    match bearer(&state, req.headers()) {
        Err(refused) => return refused.into_response(),
        Ok(Some(principal)) => {
            req.extensions_mut().insert(SignedIn {
                principal,
                csrf: String::new(),
            });
            return next.run(req).await;
        }
        Ok(None) => {}
    }
    let cookie = cookie_value(req.headers(), SESSION_COOKIE).map(str::to_owned);
    let session = cookie.as_deref().and_then(|id| state.sessions.get(id));
    let Some(signed_in) = session else {
        if !state.access.enforced() && !changes {
            // Open mode: an anonymous session, so forms still carry a CSRF token.
            let (id, signed_in) = match state.sessions.open(Principal::anonymous()) {
                Ok(s) => s,
                Err(e) => return e.into_response(),
            };
            req.extensions_mut().insert(signed_in);
            let mut res = next.run(req).await;
            res.headers_mut()
                .append(header::SET_COOKIE, session_cookie(&state, &id));
            return res;
        }
        if changes && !state.access.enforced() {
            return refusal(StatusCode::FORBIDDEN, "missing or invalid CSRF token").into_response();
        }
        let mut res = Redirect::to("/signin").into_response();
        if cookie.is_some() {
            res.headers_mut()
                .append(header::SET_COOKIE, clear_cookie(&state));
        }
        return res;
    };
    if changes {
        let (req2, ok) = match check_csrf(req, &signed_in.csrf).await {
            Ok(r) => r,
            Err(refused) => return refused.into_response(),
        };
        if !ok {
            tracing::info!(
                principal = signed_in.principal.name(),
                "console change refused: missing or wrong CSRF token"
            );
            return refusal(StatusCode::FORBIDDEN, "missing or invalid CSRF token").into_response();
        }
        req = req2;
    }
    req.extensions_mut().insert(signed_in);
    next.run(req).await
}

/// Whether `req` carries `csrf` (header, or a field of its url-encoded form body); the
/// body is read (bounded) and put back for the handler.
async fn check_csrf(req: Request, csrf: &str) -> Result<(Request, bool), Refusal> {
    if let Some(h) = req.headers().get("x-csrf-token") {
        let ok = same_secret(h.as_bytes(), csrf.as_bytes());
        return Ok((req, ok));
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, super::MAX_BODY_BYTES)
        .await
        .map_err(|_| refusal(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"))?;
    let form_encoded = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let ok = form_encoded
        && form_urlencoded_pairs(&bytes)
            .any(|(k, v)| k == CSRF_FIELD && same_secret(v.as_bytes(), csrf.as_bytes()));
    Ok((
        Request::from_parts(parts, axum::body::Body::from(bytes)),
        ok,
    ))
}

fn form_urlencoded_pairs(bytes: &[u8]) -> impl Iterator<Item = (String, String)> + '_ {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(bytes)
        .unwrap_or_default()
        .into_iter()
}

fn signin_form(error: Option<&str>) -> Markup {
    page(
        "Sign in",
        Nav::None,
        html! {
            section.signin {
                h1 { "Sign in" }
                p { "Paste your supervisor token (the one your holdless CLI uses)." }
                @if let Some(e) = error { p.flash.bad role="alert" { (e) } }
                form method="post" action="/signin" {
                    label for="token" { "Token" }
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

pub async fn signin_page(State(state): State<ConsoleState>) -> Response {
    if !state.access.enforced() {
        return Redirect::to("/wallboard").into_response();
    }
    signin_form(None).into_response()
}

#[derive(Deserialize)]
pub struct SigninForm {
    token: String,
}

/// A sign-in posted from another site is refused: the `Origin` a browser sends must
/// name this console's own host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    host.is_some_and(|h| h == origin_host)
}

pub async fn signin(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(form): Form<SigninForm>,
) -> Response {
    if !same_origin(&headers) {
        return refusal(StatusCode::FORBIDDEN, "cross-site sign-in refused").into_response();
    }
    let token = form.token.trim();
    let principal = if state.access.enforced() {
        match state.access.principal_for_token(token.as_bytes()) {
            Some(p) => p,
            None => {
                tracing::info!("console sign-in with an unknown token");
                return (
                    StatusCode::UNAUTHORIZED,
                    signin_form(Some("Unknown token.")),
                )
                    .into_response();
            }
        }
    } else {
        Principal::anonymous()
    };
    if !principal.has_any(&[Role::Supervisor]) {
        return not_a_supervisor(&principal).into_response();
    }
    let (id, _) = match state.sessions.open(principal.clone()) {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    tracing::info!(principal = principal.name(), "console sign-in");
    let mut res = Redirect::to("/wallboard").into_response();
    res.headers_mut()
        .append(header::SET_COOKIE, session_cookie(&state, &id));
    res
}

pub async fn signout_page(Extension(me): Extension<SignedIn>) -> Markup {
    page(
        "Sign out",
        Nav::None,
        html! {
            section.signin {
                h1 { "Sign out" }
                p { "Signed in as " strong { (me.principal.name()) } "." }
                form method="post" action="/signout" {
                    (csrf_field(&me))
                    button type="submit" { "Sign out" }
                }
            }
        },
    )
}

pub async fn signout(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie_value(&headers, SESSION_COOKIE) {
        state.sessions.close(id);
    }
    let mut res = Redirect::to("/signin").into_response();
    res.headers_mut()
        .append(header::SET_COOKIE, clear_cookie(&state));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn sessions_expire_after_their_lifetime() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let (id, s) = sessions
            .open(Principal::new("ops", &[Role::Supervisor]))
            .unwrap();
        assert_eq!(sessions.get(&id).unwrap().csrf, s.csrf);
        assert!(sessions.get("not-a-session").is_none());
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; holdless_session=abc; b=2"),
        );
        assert_eq!(cookie_value(&h, SESSION_COOKIE), Some("abc"));
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"ab"));
    }
}
