//! holdless: the call-routing and callback daemon for contact centers.
//!
//! A telephony platform asks holdless over gRPC where each inbound call goes; holdless
//! decides from a supervisor-managed routing plan on the caller's location, the
//! customer's status and the campaign, and tells the agent who is calling and why.
//!
//! Modules, and what each owns:
//! - [`domain`]: plain types with invariants (phone numbers, calls, customers, the plan
//!   document) and the named input limits.
//! - [`routing`]: pure routing: plan validation and compilation into an indexed plan,
//!   the decision function, business hours and DST-safe local time, CEL matchers.
//! - [`live`]: live queue state from platform events: agents, lines, reservations,
//!   handle times and honest wait estimates.
//! - [`metrics`]: KPI definitions and interval counters, Erlang B/C/A staffing.
//! - [`scheduler`]: the callback scheduler actor and the pure callback policy
//!   (calling windows, retries, slots).
//! - [`sim`]: deterministic simulations on the real floor and a manual clock (the
//!   line-fairness check run by `cargo test`, and the day simulator behind
//!   `holdless simulate-day`).
//! - [`store`]: persistence behind the async [`store::Store`] trait: the embedded sled
//!   backend with group commit (the only code that touches sled) and the PostgreSQL
//!   backend with fencing (the only code that touches the driver), chosen by
//!   `store.backend`, and one conformance suite both pass.
//! - [`export`]: the export file (JSON Lines) of a stopped store: writing it, and
//!   reading and checking it whole before `holdless import` writes anything.
//! - [`service`]: the operations the API offers, over store, plan and clock, and
//!   the wallboards (`service::board`: queue boards and their watchers' publisher).
//! - [`auth`]: who may call what: tokens, roles and the method table, the request gate
//!   (auth, load shedding, deadlines), abuse limits, TLS with reload.
//! - [`console`]: the supervisor web console (wallboard, staffing, KPIs, callbacks,
//!   plan) on its own listener: server-rendered pages, embedded assets, sign-in.
//! - [`api`]: the gRPC edge (the only tonic code): conversions, errors, services.
//! - [`bench`]: `holdless bench`, the load generator with a same-run no-op baseline.
//! - [`torture`]: `holdless torture`, SIGKILL-and-restart cycles of a real server with
//!   every acknowledged write checked against the store afterwards.
//! - [`cluster`]: one leader at a time over a shared PostgreSQL store: the lease with
//!   its epoch (fencing token), the follower/leader/stepped-down roles, and the gate that
//!   answers followers' RPCs UNAVAILABLE naming the leader.
//! - [`app`]: wiring and the server's lifecycle (start-up, health, shutdown order).
//! - [`config`]: typed settings from defaults, file and environment.
//! - [`cli`]: the command line; admin commands are gRPC clients of a running server.
//! - [`clock`]: injected time.

pub mod api;
pub mod app;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod console;
pub mod domain;
pub mod export;
pub mod live;
pub mod memory;
pub mod metrics;
pub mod net;
pub mod routing;
pub mod scheduler;
pub mod service;
pub mod sim;
pub mod store;
mod sync;
pub mod torture;
