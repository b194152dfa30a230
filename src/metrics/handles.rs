//! Metric handles looked up once per label set and reused.
//!
//! `metrics::counter!` with labels builds a key (allocating the label strings), hashes
//! it and looks it up in the recorder's registry on every call. On the routing path
//! that was three lookups per call; here each label set is resolved once and later
//! calls read a cached handle under a read lock.
//!
//! Label values come from the active plan (rule and queue ids) and from the gRPC
//! methods holdless serves, so the sets are small. A path that is not a holdless
//! method is counted as `method="other"`, so a client inventing paths cannot grow
//! the exported series without bound.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use metrics::{Counter, Histogram};

/// Most label sets cached per kind; later ones are looked up each time instead.
const MAX_CACHED: usize = 4_096;

/// The methods of the open services (health, reflection).
const OPEN_METHODS: &[&str] = &["Check", "Watch", "List", "ServerReflectionInfo"];

/// Per-method handles, one pair per gRPC status code (0..=16).
pub struct RpcHandles {
    method: String,
    by_code: [OnceLock<(Counter, Histogram)>; 17],
}

impl RpcHandles {
    /// The counter and latency histogram for calls that ended with gRPC status `code`
    /// (a number outside the protocol's 0..=16 counts as UNKNOWN).
    pub fn for_code(&self, code: i32) -> &(Counter, Histogram) {
        let code = if (0..=16).contains(&code) { code } else { 2 };
        let name = super::prometheus::code_name(code);
        self.by_code[code as usize].get_or_init(|| {
            (
                metrics::counter!("holdless_rpc_requests_total", "method" => self.method.clone(), "code" => name),
                metrics::histogram!("holdless_rpc_duration_seconds", "method" => self.method.clone(), "code" => name),
            )
        })
    }
}

/// The handles of gRPC method `path` (e.g. `/holdless.v1.RoutingService/RouteCall`).
pub fn rpc(path: &str) -> Arc<RpcHandles> {
    static CACHE: OnceLock<RwLock<HashMap<String, Arc<RpcHandles>>>> = OnceLock::new();
    // Methods of the authorization table (every holdless method) and of the open
    // services (health, reflection) keep their name.
    // A client may send any method name under an open service, so only their real
    // methods are named; the label set stays bounded.
    let known = crate::auth::table::roles_for(path).is_some()
        || path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .is_some_and(|(service, method)| {
                crate::auth::table::OPEN_SERVICES.contains(&service)
                    && OPEN_METHODS.contains(&method)
            });
    let method = if known { path } else { "other" };
    let cache = CACHE.get_or_init(|| {
        // Handles made before the recorder exists would count nowhere.
        let _ = super::prometheus::handle();
        RwLock::default()
    });
    if let Some(h) = cache.read().unwrap_or_else(|e| e.into_inner()).get(method) {
        return h.clone();
    }
    let handles = Arc::new(RpcHandles {
        method: method.to_owned(),
        by_code: Default::default(),
    });
    let mut w = cache.write().unwrap_or_else(|e| e.into_inner());
    if w.len() < MAX_CACHED {
        return w.entry(method.to_owned()).or_insert(handles).clone();
    }
    handles
}

/// The `holdless_routing_decisions_total` counter of (rule, queue).
pub fn decisions(rule: Option<&str>, queue: &str) -> Counter {
    type Cache = RwLock<HashMap<String, HashMap<String, Counter>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let rule = rule.unwrap_or("default");
    let cache = CACHE.get_or_init(|| {
        let _ = super::prometheus::handle();
        RwLock::default()
    });
    if let Some(c) = cache
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(rule)
        .and_then(|by_queue| by_queue.get(queue))
    {
        return c.clone();
    }
    let counter = metrics::counter!(
        "holdless_routing_decisions_total",
        "rule" => rule.to_owned(),
        "queue" => queue.to_owned()
    );
    let mut w = cache.write().unwrap_or_else(|e| e.into_inner());
    let cached: usize = w.values().map(HashMap::len).sum();
    if cached < MAX_CACHED {
        w.entry(rule.to_owned())
            .or_default()
            .insert(queue.to_owned(), counter.clone());
    }
    counter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(rpc("/evil.Service/Method1").method, "other");
        assert_eq!(rpc("/evil.Service/Method2").method, "other");
        assert_eq!(rpc("/holdless.v1.RoutingService/Invented").method, "other");
        assert_eq!(rpc("/grpc.health.v1.Health/Invented").method, "other");
        assert_eq!(
            rpc("/grpc.health.v1.Health/Check").method,
            "/grpc.health.v1.Health/Check"
        );
        assert_eq!(
            rpc("/holdless.v1.RoutingService/RouteCall").method,
            "/holdless.v1.RoutingService/RouteCall"
        );
        assert!(Arc::ptr_eq(
            &rpc("/holdless.v1.RoutingService/RouteCall"),
            &rpc("/holdless.v1.RoutingService/RouteCall")
        ));
    }
}
