//! Contact-center figures: the Erlang formulas for staffing (pure), and the KPI
//! counters aggregated per queue and 15-minute interval (defined in the README, "KPIs"), and the
//! Prometheus exporter.

pub mod erlang;
pub mod handles;
pub mod kpi;
pub mod prometheus;
