//! RouteCall's own work, without the transport: the request checked and converted, the
//! decision made (customer and contact-history reads from sled, the rules, the floor's
//! place in line), the reply built and encoded. The calls are the `route` scenario's:
//! 64 clients x 100 calls kept waiting and asked about in turn, so the floor holds a
//! steady 6,400 waiting calls.
//!
//! Set next to `holdless bench --embedded --baseline --scenario route` (the same
//! requests through gRPC, with a no-op server's cost measured in the same run), it
//! tells how much of a RouteCall's cost is holdless's handler and how much is the
//! transport that the no-op server pays too.
//!
//! The second pair of figures measures the same handler after other memory has been
//! touched (1 MiB, 4 MiB), to show how much of its cost in a server is waiting for
//! memory rather than instructions.
//!
//! Run: `cargo bench --bench route_path`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use holdless::api::convert::decision_to_pb;
use holdless::api::pb;
use holdless::bench::{route_request, CALLS_PER_CLIENT};
use holdless::clock::SystemClock;
use holdless::domain::Call;
use holdless::live::LiveConfig;
use holdless::service::{Holdless, EXAMPLE_PLAN};
use holdless::store::SledStore;
use prost::Message;

/// The `route` scenario's default client count.
const CLIENTS: u64 = 64;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(&dir.path().join("store")).expect("store opens");
    let holdless = rt
        .block_on(Holdless::start(
            Arc::new(store),
            Arc::new(SystemClock),
            EXAMPLE_PLAN,
            LiveConfig::default(),
        ))
        .expect("holdless starts");
    let handle = |n: u64| {
        let req = route_request("path", (n % CLIENTS) as usize, n / CLIENTS);
        let call = Call::try_from(req).expect("the scenario's requests are valid");
        let outcome = holdless.route(&call).expect("routed");
        pb::RouteCallResponse {
            decision: Some(decision_to_pb(ulid::Ulid::new().to_string(), outcome)),
        }
        .encode_to_vec()
    };
    // The steady state: every call of every client waiting once.
    for n in 0..CLIENTS * CALLS_PER_CLIENT {
        handle(n);
    }
    let mut g = c.benchmark_group("route_call");
    g.throughput(Throughput::Elements(1));
    let mut n = 0u64;
    g.bench_function("handler_without_transport", |b| {
        b.iter(|| {
            n += 1;
            handle(n)
        })
    });
    // The same after touching `kib` of other memory, one write per cache line, as the
    // transport and the other calls do between two calls in a server: the handler's
    // cost is the difference to `touch_only`.
    for kib in [1024usize, 4096] {
        let mut other = vec![0u8; kib * 1024];
        let mut k = 0u8;
        let mut touch = move || {
            k = k.wrapping_add(1);
            for i in (0..other.len()).step_by(64) {
                other[i] = other[i].wrapping_add(k);
            }
            other[0]
        };
        g.bench_function(format!("touch_only_{kib}k"), |b| b.iter(&mut touch));
        g.bench_function(format!("handler_after_touching_{kib}k"), |b| {
            b.iter(|| {
                touch();
                n += 1;
                handle(n)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
