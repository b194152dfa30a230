//! The KPIs page (day and week reports with charts, CSV download).
//!
//! A placeholder until the page lands: the route exists so the navigation works.

use axum::routing::get;
use axum::Router;
use maud::{html, Markup};

use super::{page, ConsoleState, Nav};

pub fn routes() -> Router<ConsoleState> {
    Router::new().route("/kpis", get(placeholder))
}

async fn placeholder() -> Markup {
    page(
        "KPIs",
        Nav::Kpis,
        html! {
            h1 { "KPIs" }
            p { "This page is not built yet." }
        },
    )
}
