//! The embedded backend over sled 0.34: the only code in holdless that imports sled.
//! `sled_store` holds the store and its trait impl, `committer` the group commit,
//! `callbacks` and `kpi` the callback and KPI trees, `known` the filter of phone
//! numbers that have a customer.

mod callbacks;
mod committer;
mod known;
mod kpi;
mod sled_store;

pub(crate) use sled_store::content_hash;
pub use sled_store::SledStore;
