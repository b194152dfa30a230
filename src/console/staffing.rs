//! The Staffing page (weekday x hour heatmap of arrivals, Erlang C/A required agents, what-if).
//!
//! A placeholder until the page lands: the route exists so the navigation works.

use axum::routing::get;
use axum::Router;
use maud::{html, Markup};

use super::{page, ConsoleState, Nav};

pub fn routes() -> Router<ConsoleState> {
    Router::new().route("/staffing", get(placeholder))
}

async fn placeholder() -> Markup {
    page(
        "Staffing",
        Nav::Staffing,
        html! {
            h1 { "Staffing" }
            p { "This page is not built yet." }
        },
    )
}
