//! The PostgreSQL backend: the only code in holdless that imports the driver
//! (tokio-postgres, pooled by deadpool-postgres).

pub(crate) mod admin;
pub mod lease;
