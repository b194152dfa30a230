//! The lease row kept in memory, with tokio's clock as the database's clock: for tests
//! (paused time makes lease expiry instant to reach) and for several nodes in one
//! process sharing a lease. It fences nothing: only a real database can refuse a stale
//! leader's writes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::{Claim, Holder, LeaseBackend, LeaseError, NodeInfo};

#[derive(Debug, Default)]
pub struct MemoryLease {
    row: Mutex<Option<(Holder, Instant)>>,
    epoch: Mutex<u64>,
    /// While set, every call fails (the database is unreachable).
    down: AtomicBool,
    /// While set, every call hangs (a partition that drops packets).
    hang: AtomicBool,
}

impl MemoryLease {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call fails while `down`.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Every call hangs while `hang`.
    pub fn set_hang(&self, hang: bool) {
        self.hang.store(hang, Ordering::SeqCst);
    }

    /// When the current lease expires, if any.
    pub fn expires_at(&self) -> Option<Instant> {
        self.lock_row().as_ref().map(|(_, t)| *t)
    }

    /// The current holder, expired or not.
    pub fn holder(&self) -> Option<Holder> {
        self.lock_row().as_ref().map(|(h, _)| h.clone())
    }

    /// Hands the lease to `holder` for `ttl` (another node's takeover, simulated).
    pub fn force(&self, holder: Holder, ttl: Duration) {
        let mut epoch = self.epoch.lock().expect("lease epoch lock poisoned");
        *epoch = (*epoch).max(holder.epoch);
        *self.lock_row() = Some((holder, Instant::now() + ttl));
    }

    fn lock_row(&self) -> std::sync::MutexGuard<'_, Option<(Holder, Instant)>> {
        self.row.lock().expect("lease row lock poisoned")
    }

    async fn reachable(&self) -> Result<(), LeaseError> {
        if self.hang.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(LeaseError("connection refused".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl LeaseBackend for MemoryLease {
    async fn claim(&self, me: &NodeInfo, ttl: Duration) -> Result<Claim, LeaseError> {
        self.reachable().await?;
        let now = Instant::now();
        let mut row = self.lock_row();
        if let Some((h, exp)) = row.as_ref() {
            if *exp > now {
                return Ok(Claim::Held(Some(h.clone())));
            }
        }
        let mut epoch = self.epoch.lock().expect("lease epoch lock poisoned");
        *epoch += 1;
        *row = Some((
            Holder {
                node_id: me.node_id.clone(),
                epoch: *epoch,
                advertise_addr: me.advertise_addr.clone(),
            },
            now + ttl,
        ));
        Ok(Claim::Won { epoch: *epoch })
    }

    async fn renew(&self, me: &NodeInfo, epoch: u64, ttl: Duration) -> Result<bool, LeaseError> {
        self.reachable().await?;
        let now = Instant::now();
        let mut row = self.lock_row();
        match row.as_mut() {
            Some((h, exp)) if h.node_id == me.node_id && h.epoch == epoch && *exp > now => {
                *exp = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release(&self, me: &NodeInfo, epoch: u64) -> Result<(), LeaseError> {
        self.reachable().await?;
        let now = Instant::now();
        if let Some((h, exp)) = self.lock_row().as_mut() {
            if h.node_id == me.node_id && h.epoch == epoch {
                *exp = now;
            }
        }
        Ok(())
    }
}
