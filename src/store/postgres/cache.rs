//! The read cache behind the store's plain (non-async) reads; see the module docs of
//! `store::postgres` for what it holds and its limits.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use tokio_postgres::types::Json;

use super::{TxError, CONTACT_CACHE_DAYS};
use crate::domain::contact::ContactRecord;
use crate::domain::Customer;

#[derive(Default)]
struct Inner {
    customers: HashMap<String, Customer>,
    /// E.164 -> customer id.
    phones: HashMap<String, String>,
    contacts: HashMap<String, ContactRecord>,
    /// (`c:<customer id>` or `p:<number>`, entered, call id).
    by_party: BTreeSet<(String, DateTime<Utc>, String)>,
}

#[derive(Default)]
pub(super) struct Cache(RwLock<Inner>);

fn parties(c: &ContactRecord) -> impl Iterator<Item = (String, DateTime<Utc>, String)> + '_ {
    [
        c.customer_id.as_deref().map(|id| format!("c:{id}")),
        c.caller.as_deref().map(|p| format!("p:{p}")),
    ]
    .into_iter()
    .flatten()
    .map(|p| (p, c.enqueued_at, c.call_id.clone()))
}

impl Inner {
    fn put_contact(&mut self, c: ContactRecord) {
        if let Some(old) = self.contacts.get(&c.call_id) {
            if old.updated_at > c.updated_at {
                return;
            }
            for k in parties(old).collect::<Vec<_>>() {
                self.by_party.remove(&k);
            }
        }
        for k in parties(&c) {
            self.by_party.insert(k);
        }
        self.contacts.insert(c.call_id.clone(), c);
    }
}

impl Cache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every customer, and the contacts entered within the horizon of the newest one.
    pub(super) async fn load(client: &tokio_postgres::Client) -> Result<Self, TxError> {
        let mut inner = Inner::default();
        for row in client.query("SELECT doc FROM customers", &[]).await? {
            let Json(c): Json<Customer> = row.try_get(0)?;
            for p in &c.phones {
                inner.phones.insert(p.clone(), c.id.as_str().to_owned());
            }
            inner.customers.insert(c.id.as_str().to_owned(), c);
        }
        let rows = client
            .query(
                "SELECT doc FROM contacts WHERE enqueued_at >= \
                 (SELECT max(enqueued_at) FROM contacts) - make_interval(days => $1)",
                &[&(CONTACT_CACHE_DAYS as i32)],
            )
            .await?;
        for row in rows {
            let Json(c): Json<ContactRecord> = row.try_get(0)?;
            inner.put_contact(c);
        }
        Ok(Self(RwLock::new(inner)))
    }

    pub(super) fn customer(&self, id: &str) -> Option<Customer> {
        self.read().customers.get(id).cloned()
    }

    pub(super) fn customer_by_phone(&self, e164: &str) -> Option<Customer> {
        let inner = self.read();
        let id = inner.phones.get(e164)?;
        inner.customers.get(id).cloned()
    }

    /// After a committed upsert: the customer, and the others that lost a number.
    pub(super) fn put_customers(&self, changed: Vec<Customer>) {
        let mut inner = self.write();
        for c in changed {
            if let Some(old) = inner.customers.get(c.id.as_str()) {
                let gone: Vec<String> = old
                    .phones
                    .iter()
                    .filter(|p| !c.phones.contains(p))
                    .cloned()
                    .collect();
                for p in gone {
                    if inner.phones.get(&p).map(String::as_str) == Some(c.id.as_str()) {
                        inner.phones.remove(&p);
                    }
                }
            }
            for p in &c.phones {
                inner.phones.insert(p.clone(), c.id.as_str().to_owned());
            }
            inner.customers.insert(c.id.as_str().to_owned(), c);
        }
    }

    pub(super) fn remove_customer(&self, id: &str) {
        let mut inner = self.write();
        if let Some(old) = inner.customers.remove(id) {
            for p in &old.phones {
                if inner.phones.get(p).map(String::as_str) == Some(id) {
                    inner.phones.remove(p);
                }
            }
        }
    }

    pub(super) fn put_contact(&self, c: ContactRecord) {
        self.write().put_contact(c);
    }

    /// Drops contacts last updated before `before` (as the table's prune does).
    pub(super) fn prune_contacts(&self, before: DateTime<Utc>) {
        let mut inner = self.write();
        let old: Vec<ContactRecord> = inner
            .contacts
            .values()
            .filter(|c| c.updated_at < before)
            .cloned()
            .collect();
        for c in old {
            for k in parties(&c) {
                inner.by_party.remove(&k);
            }
            inner.contacts.remove(&c.call_id);
        }
    }

    /// See `Store::recent_contacts`.
    pub(super) fn recent_contacts(
        &self,
        customer_id: Option<&str>,
        caller: Option<&str>,
        since: DateTime<Utc>,
        limit: usize,
    ) -> Vec<ContactRecord> {
        let inner = self.read();
        let mut ids = BTreeSet::new();
        let parties = [
            customer_id.map(|id| format!("c:{id}")),
            caller.map(|p| format!("p:{p}")),
        ];
        for party in parties.into_iter().flatten() {
            let from = Bound::Included((party.clone(), since, String::new()));
            let to = Bound::Excluded((
                format!("{party}\0"),
                DateTime::<Utc>::MIN_UTC,
                String::new(),
            ));
            for (_, _, id) in inner.by_party.range((from, to)).rev().take(limit) {
                ids.insert(id.clone());
            }
        }
        let mut out: Vec<ContactRecord> = ids
            .iter()
            .filter_map(|id| inner.contacts.get(id).cloned())
            .collect();
        out.sort_by(|a, b| {
            b.enqueued_at
                .cmp(&a.enqueued_at)
                .then(b.call_id.cmp(&a.call_id))
        });
        out.truncate(limit);
        out
    }
}
