//! Black-box tests: a real holdless server on a loopback port 0 with a private store,
//! driven by real tonic clients (and the real binary for the CLI).

mod helpers;

mod audit;
mod auth;
mod board;
mod callbacks;
mod cli;
mod cluster;
mod console;
mod console_reports;
mod crash;
mod customers;
mod deploy;
mod export;
mod failover;
mod health;
mod kpi;
mod live;
mod metrics;
mod plans;
mod postgres;
mod readme;
mod reload;
mod routing;
mod simulate;
mod tls;
mod torture;
