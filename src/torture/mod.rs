//! `holdless torture`: crash consistency of a real server, checked against what its
//! clients were told. [`check`] judges a store against the ledger of every OK reply.

pub mod check;

pub use check::{check, check_store, Kind, Ledger, Problem, Report};
