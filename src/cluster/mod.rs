//! One leader at a time: several holdless nodes share one PostgreSQL store, and only the
//! node holding the **lease** runs the scheduler and the live floor and serves the API.
//!
//! The lease is one database row (holder, epoch, expiry, the holder's address). Its
//! expiry is computed and compared by the database's clock only: node clocks are never
//! compared with each other. Taking the lease bumps the **epoch**; the store checks that
//! epoch in the same transaction as every write the leader makes (fencing), so a leader
//! that stalled past its lease can neither write nor dispatch once another node holds a
//! newer epoch.
//!
//! Roles, per process (see [`Role`]):
//!
//! ```text
//! Follower --claims the lease--> TakingOver --store loaded--> Leader --lease lost--> SteppedDown
//! ```
//!
//! - A follower polls the lease every `ttl / 10`, knows the leader's advertised address,
//!   reports NOT_SERVING on gRPC health and answers every holdless RPC UNAVAILABLE with
//!   that address in the error details ([`serving`]).
//! - A leader renews every `ttl / 3`. It may act as leader only until `ttl - ttl / 4`
//!   after the *send* time of its last successful renewal, by its own monotonic clock;
//!   the database extends the lease to at least `ttl` after it received that renewal, so
//!   the node stops serving before the lease can have expired there (unless the
//!   database's clock runs 25% faster than the node's).
//! - Stepping down is final for the process: holdless refuses every RPC at once, ends
//!   the dispatch streams and exits with [`EXIT_LOST_LEASE`], and the orchestrator
//!   restarts it as a follower. A fresh process is simpler to trust than one that
//!   unwinds a half-run scheduler and floor.

pub mod lease;
pub mod memory;
pub mod serving;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Seconds a lease lasts without renewal (`cluster.lease_ttl_secs`).
pub const DEFAULT_LEASE_TTL_SECS: u64 = 10;
/// Shortest lease accepted: below it a renewal's round trip eats the safety margin.
pub const MIN_LEASE_TTL_SECS: u64 = 2;
/// Exit status of a leader that lost its lease (EX_TEMPFAIL: "try again"): the
/// orchestrator restarts it, and it comes back as a follower.
pub const EXIT_LOST_LEASE: u8 = 75;
/// `reason` of the ErrorInfo detail a follower's UNAVAILABLE carries.
pub const NOT_LEADER_REASON: &str = "NOT_LEADER";
/// ErrorInfo metadata key naming the leader's advertised gRPC address.
pub const LEADER_ADDR_KEY: &str = "leader_addr";

/// This node, as the lease row names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Unique among the nodes sharing a store.
    pub node_id: String,
    /// Where clients reach this node's gRPC port (what followers name as the leader).
    pub advertise_addr: String,
}

/// The node named by the lease row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub node_id: String,
    pub epoch: u64,
    pub advertise_addr: String,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The lease is ours, under this new epoch.
    Won { epoch: u64 },
    /// Someone else holds a live lease (None: the row names nobody yet).
    Held(Option<Holder>),
}

#[derive(Debug, thiserror::Error)]
#[error("lease: {0}")]
pub struct LeaseError(pub String);

/// The lease as the database keeps it. Implementations compute and compare expiry on
/// the database's clock, and run on a connection of their own (a busy write pool must
/// never delay a renewal).
#[async_trait::async_trait]
pub trait LeaseBackend: Send + Sync + 'static {
    /// Takes the lease with a new epoch if it has expired (or was released), else says
    /// who holds it.
    async fn claim(&self, me: &NodeInfo, ttl: Duration) -> Result<Claim, LeaseError>;
    /// Extends our lease to `ttl` from now. `Ok(false)`: it is no longer ours (expired
    /// and taken, or a newer epoch exists).
    async fn renew(&self, me: &NodeInfo, epoch: u64, ttl: Duration) -> Result<bool, LeaseError>;
    /// Ends our lease now (graceful shutdown), so a follower takes over at its next
    /// poll instead of waiting for the expiry. The epoch stays: fencing still holds.
    async fn release(&self, me: &NodeInfo, epoch: u64) -> Result<(), LeaseError>;
}

/// What this process is, in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not leader; `leader` is the holder last seen (None: unknown or nobody).
    Follower { leader: Option<Holder> },
    /// Holds the lease under `epoch` and is loading the store; not serving yet.
    TakingOver { epoch: u64 },
    /// Holds the lease under `epoch` and serves.
    Leader { epoch: u64 },
    /// Lost the lease; refuses everything until the process exits.
    SteppedDown { reason: String },
}

/// Why this node refuses an RPC, and whom to ask instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotLeader {
    pub message: String,
    /// The leader's advertised address when known.
    pub leader: Option<Holder>,
}

/// The role shared by the lease task (which changes it), the serving gate and health
/// (which read it) and the app (which waits on it).
#[derive(Debug)]
pub struct ClusterState {
    me: NodeInfo,
    role: watch::Sender<Role>,
    /// The monotonic instant until which this node may act as leader (set from each
    /// successful renewal). Checked on every RPC as well as by the lease task, so a
    /// node that wakes from a stall refuses work even before its lease task runs.
    serve_until: Mutex<Option<Instant>>,
}

impl ClusterState {
    pub fn new(me: NodeInfo) -> Arc<Self> {
        let (role, _) = watch::channel(Role::Follower { leader: None });
        Arc::new(Self {
            me,
            role,
            serve_until: Mutex::new(None),
        })
    }

    pub fn me(&self) -> &NodeInfo {
        &self.me
    }

    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    /// Ok when this node is the leader and its lease is still good by its own clock.
    pub fn check_serving(&self) -> Result<(), NotLeader> {
        let role = self.role.borrow().clone();
        match role {
            Role::Leader { .. } => {
                let until = *self.serve_until.lock().expect("serve_until lock poisoned");
                match until {
                    Some(t) if Instant::now() < t => Ok(()),
                    _ => Err(NotLeader {
                        message: "this node's lease is not renewed; it is stepping down".into(),
                        leader: None,
                    }),
                }
            }
            Role::TakingOver { epoch } => Err(NotLeader {
                message: "this node is taking over as leader; retry shortly".into(),
                leader: Some(Holder {
                    node_id: self.me.node_id.clone(),
                    epoch,
                    advertise_addr: self.me.advertise_addr.clone(),
                }),
            }),
            Role::Follower { leader } => Err(NotLeader {
                message: match &leader {
                    Some(l) => format!("not the leader; the leader is {}", l.advertise_addr),
                    None => "not the leader; no leader is known yet".into(),
                },
                leader,
            }),
            Role::SteppedDown { reason } => Err(NotLeader {
                message: format!("this node lost its lease ({reason}) and is exiting"),
                leader: None,
            }),
        }
    }

    /// The app has loaded the store under `epoch`: start serving (unless the lease was
    /// lost meanwhile).
    pub fn promote(&self, epoch: u64) -> bool {
        self.role.send_if_modified(|r| {
            if *r == (Role::TakingOver { epoch }) {
                *r = Role::Leader { epoch };
                true
            } else {
                false
            }
        })
    }

    fn set_follower(&self, leader: Option<Holder>) {
        self.role.send_if_modified(|r| {
            let next = Role::Follower { leader };
            if *r == next {
                false
            } else {
                *r = next;
                true
            }
        });
    }

    fn take_over(&self, epoch: u64, until: Instant) {
        self.extend(until);
        self.role.send_replace(Role::TakingOver { epoch });
    }

    fn extend(&self, until: Instant) {
        *self.serve_until.lock().expect("serve_until lock poisoned") = Some(until);
    }

    fn step_down(&self, reason: String) {
        *self.serve_until.lock().expect("serve_until lock poisoned") = None;
        self.role.send_replace(Role::SteppedDown { reason });
    }
}

/// The default node id: unique per process start (so three nodes on one machine never
/// collide), recognizable in the lease row: the host name, then a ULID.
pub fn generated_node_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "holdless".into());
    format!("{host}-{}", ulid::Ulid::new())
}
