//! The supervisor web console.

pub mod charts;
pub mod report;
