//! Black-box tests: a real holdless server on a loopback port 0 with a private store,
//! driven by real tonic clients (and the real binary for the CLI).

mod helpers;

mod auth;
mod cli;
mod customers;
mod health;
mod live;
mod plans;
mod routing;
mod tls;
