//! Metric handles looked up once per label set and reused.
//!
//! `metrics::counter!` with labels builds a key (allocating the label strings), hashes
//! it and looks it up in the recorder's registry on every call. On the routing path
//! that was three lookups per call; here each label set is resolved once.
//!
//! Nothing on the request path writes to shared memory to find a handle: the RPC
//! handles sit in a table built once and only read afterwards, and the decision
//! counters in a cache per thread. (A shared cache behind a lock made every lookup
//! write the lock's word, which the two cores serving calls then passed back and forth.)
//!
//! Label values come from the active plan (rule and queue ids) and from the gRPC
//! methods holdless serves, so the sets are small. A path that is not a holdless
//! method is counted as `method="other"`, so a client inventing paths cannot grow
//! the exported series without bound.

use std::cell::RefCell;
use std::sync::OnceLock;

use metrics::{Counter, Histogram};

/// Most decision counters cached per thread; later ones are looked up each time.
const MAX_CACHED: usize = 4_096;

/// The methods of the open services (health, reflection).
const OPEN_METHODS: &[&str] = &["Check", "Watch", "List", "ServerReflectionInfo"];

/// The label of paths that are not a method holdless serves.
const OTHER: &str = "other";

/// Per-method handles, one pair per gRPC status code (0..=16).
pub struct RpcHandles {
    method: String,
    by_code: [OnceLock<(Counter, Histogram)>; 17],
}

impl RpcHandles {
    fn new(method: String) -> Self {
        Self {
            method,
            by_code: Default::default(),
        }
    }

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

struct RpcTable {
    /// Fixed once built: a client's path is only looked up, never added, so the fast
    /// default hasher is safe here.
    by_path: hashbrown::HashMap<String, RpcHandles>,
    other: RpcHandles,
}

/// The handles of gRPC method `path` (e.g. `/holdless.v1.RoutingService/RouteCall`).
pub fn rpc(path: &str) -> &'static RpcHandles {
    static TABLE: OnceLock<RpcTable> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        // Handles made before the recorder exists would count nowhere.
        let _ = super::prometheus::handle();
        // Every method of the authorization table (every holdless method) and the real
        // methods of the open services (health, reflection) keep their name. A client
        // may send any method name under an open service, so only those are named;
        // the label set stays bounded.
        let holdless = crate::auth::table::METHOD_ROLES
            .iter()
            .map(|(path, _)| (*path).to_owned());
        let open = crate::auth::table::OPEN_SERVICES
            .iter()
            .flat_map(|service| {
                OPEN_METHODS
                    .iter()
                    .map(move |method| format!("/{service}/{method}"))
            });
        RpcTable {
            by_path: holdless
                .chain(open)
                .map(|path| (path.clone(), RpcHandles::new(path)))
                .collect(),
            other: RpcHandles::new(OTHER.to_owned()),
        }
    });
    table.by_path.get(path).unwrap_or(&table.other)
}

/// The handle of `holdless_routing_decisions_total{rule, queue}` (`rule="default"` for
/// the default route). A compiled plan keeps the handles of its rules' decisions
/// (`CompiledPlan::count_decision`); [`count_decision`] finds others by name.
pub fn decision_counter(rule: Option<&str>, queue: &str) -> Counter {
    // Handles made before the recorder exists would count nowhere.
    let _ = super::prometheus::handle();
    metrics::counter!(
        "holdless_routing_decisions_total",
        "rule" => rule.unwrap_or("default").to_owned(),
        "queue" => queue.to_owned()
    )
}

/// Counts one routing decision in `holdless_routing_decisions_total{rule, queue}`.
pub fn count_decision(rule: Option<&str>, queue: &str) {
    type Cache = RefCell<hashbrown::HashMap<String, hashbrown::HashMap<String, Counter>>>;
    thread_local! {
        static CACHE: Cache = RefCell::default();
    }
    let name = rule.unwrap_or("default");
    let counted = CACHE.with_borrow(|cache| {
        let counter = cache.get(name).and_then(|by_queue| by_queue.get(queue));
        counter.inspect(|c| c.increment(1)).is_some()
    });
    if counted {
        return;
    }
    let counter = decision_counter(rule, queue);
    counter.increment(1);
    CACHE.with_borrow_mut(|cache| {
        let cached: usize = cache.values().map(hashbrown::HashMap::len).sum();
        if cached < MAX_CACHED {
            cache
                .entry(name.to_owned())
                .or_default()
                .insert(queue.to_owned(), counter);
        }
    });
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
        assert!(std::ptr::eq(
            rpc("/holdless.v1.RoutingService/RouteCall"),
            rpc("/holdless.v1.RoutingService/RouteCall")
        ));
    }
}
