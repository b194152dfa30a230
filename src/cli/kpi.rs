//! `holdless stats` and `holdless staffing`: KPI reports and staffing plans from a
//! running server, as readable tables (or JSON with `--json`).

use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use serde_json::json;

use super::{connect, Failure, ServerArg, EXIT_CONFIG};
use crate::api::pb;
use crate::api::pb::stats_service_client::StatsServiceClient;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Queue id (default: all queues together).
    #[arg(long)]
    pub queue: Option<String>,
    /// Start: RFC 3339 instant or a UTC date (YYYY-MM-DD). Default: today, UTC.
    #[arg(long)]
    pub from: Option<String>,
    /// End (exclusive): RFC 3339 instant or a UTC date. Default: from + 1 day.
    #[arg(long)]
    pub to: Option<String>,
    /// Interval length in minutes (a multiple of 15).
    #[arg(long, default_value_t = 60)]
    pub interval_minutes: u32,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Debug, Args)]
pub struct StaffingArgs {
    /// Queue id to plan for.
    #[arg(long)]
    pub queue: String,
    /// The UTC date to plan (measured from that day's counters unless overridden).
    #[arg(long)]
    pub date: String,
    /// Callers' mean patience in seconds: also plan with Erlang A.
    #[arg(long)]
    pub patience_secs: Option<u64>,
    /// Arrivals per hour to plan for instead of the measured ones.
    #[arg(long)]
    pub calls_per_hour: Option<f64>,
    /// Average handle time in seconds instead of the measured one.
    #[arg(long)]
    pub aht_secs: Option<u64>,
    #[command(flatten)]
    pub server: ServerArg,
}

fn bad(message: String) -> Failure {
    Failure {
        code: EXIT_CONFIG,
        message,
    }
}

fn parse_instant(s: &str, field: &str) -> Result<DateTime<Utc>, Failure> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| {
            bad(format!(
                "bad --{field} {s}: give an RFC 3339 instant or YYYY-MM-DD"
            ))
        })
}

fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    crate::api::convert::timestamp(t)
}

fn secs(d: Option<&prost_types::Duration>) -> Option<f64> {
    d.map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

/// A configured share exactly as set (0.79459 -> 79.459%, 0.8 -> 80%): a target is
/// a contract figure, not one to round.
fn exact_pct(v: f64) -> String {
    let text = format!("{:.4}", v * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

fn num(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn when(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(crate::api::convert::instant)
        .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M").to_string())
}

/// A length of time as a supervisor reads it: seconds, minutes or hours.
fn span(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(s) if s < 120.0 => format!("{s:.0} s"),
        Some(s) if s < 7200.0 => format!("{:.1} min", s / 60.0),
        Some(s) => format!("{:.1} h", s / 3600.0),
    }
}

fn calls_row(label: &str, i: &pb::KpiInterval) -> String {
    let c = i.counts.unwrap_or_default();
    let f = i.figures.unwrap_or_default();
    format!(
        "{label:<17} {:>7} {:>8} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7}\n",
        c.offered,
        c.answered,
        c.abandoned,
        pct(f.service_level),
        num(secs(f.average_speed_of_answer.as_ref())),
        pct(f.abandonment_rate),
        pct(f.transfer_rate),
        pct(f.first_contact_resolution),
    )
}

/// Callback and survey figures: acceptance, success, mean attempts, hold time the
/// accepted callbacks spared callers, mean time from request to connect; CSAT, CES, NPS.
fn callbacks_row(label: &str, i: &pb::KpiInterval) -> String {
    let f = i.figures.unwrap_or_default();
    let c = i.counts.unwrap_or_default();
    let avoided = (c.callbacks_accepted > 0)
        .then(|| secs(f.hold_time_avoided.as_ref()))
        .flatten();
    format!(
        "{label:<17} {:>7} {:>7} {:>8} {:>9} {:>10} {:>6} {:>5} {:>6}\n",
        pct(f.callback_acceptance_rate),
        pct(f.callback_success_rate),
        num(f.callback_mean_attempts),
        span(avoided),
        span(secs(f.mean_time_to_connect.as_ref())),
        pct(f.csat),
        num(f.ces),
        num(f.nps),
    )
}

pub(super) async fn stats(a: StatsArgs) -> Result<String, Failure> {
    let from = match &a.from {
        Some(s) => parse_instant(s, "from")?,
        None => Utc::now()
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .map(|d| d.and_utc())
            .unwrap_or_else(Utc::now),
    };
    let to = match &a.to {
        Some(s) => parse_instant(s, "to")?,
        None => from + chrono::Duration::days(1),
    };
    let mut client = StatsServiceClient::new(connect(&a.server).await?);
    let r = client
        .get_kpi_report(pb::GetKpiReportRequest {
            queue_id: a.queue.clone().unwrap_or_default(),
            from: Some(ts(from)),
            to: Some(ts(to)),
            interval: Some(prost_types::Duration {
                seconds: i64::from(a.interval_minutes) * 60,
                nanos: 0,
            }),
        })
        .await?
        .into_inner();
    let total = r.total.unwrap_or_default();
    if a.server.json {
        let c = total.counts.unwrap_or_default();
        let f = total.figures.unwrap_or_default();
        return Ok(super::to_json(&json!({
            "queue": a.queue,
            "from": when(r.from.as_ref()),
            "to": when(r.to.as_ref()),
            "offered": c.offered,
            "answered": c.answered,
            "abandoned": c.abandoned,
            "transferred_in": c.transferred_in,
            "calls_counted_once": a.queue.is_none(),
            "service_level": f.service_level,
            "asa_secs": secs(f.average_speed_of_answer.as_ref()),
            "abandonment_rate": f.abandonment_rate,
            "transfer_rate": f.transfer_rate,
            "fcr": f.first_contact_resolution,
            "fcr_final": r.fcr_final,
            "callback_acceptance_rate": f.callback_acceptance_rate,
            "callback_success_rate": f.callback_success_rate,
            "callback_mean_attempts": f.callback_mean_attempts,
            "hold_time_avoided_secs": secs(f.hold_time_avoided.as_ref()),
            "mean_time_to_connect_secs": secs(f.mean_time_to_connect.as_ref()),
            "csat": f.csat,
            "ces": f.ces,
            "nps": f.nps,
        })));
    }
    let mut out = format!(
        "KPIs for {} from {} to {} (UTC)\n",
        a.queue.as_deref().unwrap_or("all queues"),
        when(r.from.as_ref()),
        when(r.to.as_ref())
    );
    out.push_str(&format!(
        "{:<17} {:>7} {:>8} {:>9} {:>7} {:>7} {:>7} {:>7} {:>7}\n",
        "interval", "offered", "answered", "abandoned", "SL", "ASA s", "aband", "transf", "FCR"
    ));
    let busy: Vec<&pb::KpiInterval> = r
        .intervals
        .iter()
        .filter(|i| {
            i.counts.as_ref().is_some_and(|c| {
                c.offered
                    + c.callbacks_requested
                    + c.callbacks_offered
                    + c.csat_answers
                    + c.ces_answers
                    + c.nps_answers
                    > 0
            })
        })
        .collect();
    for i in &busy {
        out.push_str(&calls_row(&when(i.start.as_ref()), i));
    }
    out.push_str(&calls_row("total", &total));
    out.push_str(&format!(
        "\n{:<17} {:>7} {:>7} {:>8} {:>9} {:>10} {:>6} {:>5} {:>6}\n",
        "callbacks", "cb acc", "cb ok", "attempts", "avoided", "to connect", "CSAT", "CES", "NPS"
    ));
    for i in &busy {
        out.push_str(&callbacks_row(&when(i.start.as_ref()), i));
    }
    out.push_str(&callbacks_row("total", &total));
    out.push_str(
        "(cb ok: completed / closed; attempts: mean per closed callback; avoided: hold time \
         spared by accepted callbacks; to connect: mean from request to connect)\n",
    );
    if a.queue.is_none() {
        out.push_str(
            "All queues: a transferred call counts once, in the queue it entered (offered, \
             answered, abandoned, waits); handle time and transfers count every visit.\n",
        );
    }
    if !r.fcr_final {
        out.push_str("FCR is provisional until 7 days after the range.\n");
    }
    Ok(out)
}

pub(super) async fn staffing(a: StaffingArgs) -> Result<String, Failure> {
    let from = parse_instant(&a.date, "date")?;
    let to = from + chrono::Duration::days(1);
    let duration = |s: u64| prost_types::Duration {
        seconds: i64::try_from(s).unwrap_or(i64::MAX),
        nanos: 0,
    };
    let mut client = StatsServiceClient::new(connect(&a.server).await?);
    let r = client
        .get_staffing_plan(pb::GetStaffingPlanRequest {
            queue_id: a.queue.clone(),
            from: Some(ts(from)),
            to: Some(ts(to)),
            patience: a.patience_secs.map(duration),
            arrivals_per_hour: a.calls_per_hour,
            average_handle_time: a.aht_secs.map(duration),
        })
        .await?
        .into_inner();
    let prediction = |p: Option<pb::StaffingPrediction>, with_abandon: bool| {
        p.map(|p| {
            let mut v = json!({
                "agents": p.agents,
                "service_level": p.service_level,
                "asa_secs": secs(p.average_speed_of_answer.as_ref()),
                "probability_of_waiting": p.probability_of_waiting,
                "occupancy": p.occupancy,
            });
            if with_abandon {
                v["probability_of_abandoning"] = p.probability_of_abandoning.into();
            }
            v
        })
    };
    if a.server.json {
        let hours: Vec<_> = r
            .hours
            .iter()
            .map(|h| {
                json!({
                    "start": when(h.start.as_ref()),
                    "calls_per_hour": h.arrivals_per_hour,
                    "aht_secs": secs(h.average_handle_time.as_ref()),
                    "erlang_c": prediction(h.erlang_c, false),
                    "erlang_a": prediction(h.erlang_a, true),
                })
            })
            .collect();
        return Ok(super::to_json(&json!({
            "queue": r.queue_id,
            "date": a.date,
            "service_level_target": r.service_level_target,
            "service_level_threshold_secs": secs(r.service_level_threshold.as_ref()),
            "patience_secs": a.patience_secs,
            "hours": hours,
        })));
    }
    let mut out = format!(
        "Staffing for {} on {} (UTC hours): target {} within {} s\n",
        r.queue_id,
        a.date,
        exact_pct(r.service_level_target),
        secs(r.service_level_threshold.as_ref()).unwrap_or(0.0)
    );
    let with_a = a.patience_secs.is_some();
    out.push_str(&format!(
        "{:<6} {:>9} {:>7} {:>8} {:>7} {:>7} {:>7}",
        "hour", "calls/h", "AHT s", "agents C", "SL", "ASA s", "occ"
    ));
    if with_a {
        out.push_str(&format!(
            " {:>8} {:>7} {:>7} {:>7}",
            "agents A", "SL A", "P(ab)", "occ A"
        ));
    }
    out.push('\n');
    let mut idle = 0;
    for h in &r.hours {
        let hour = h
            .start
            .as_ref()
            .and_then(crate::api::convert::instant)
            .map_or("-".into(), |t| t.format("%H:00").to_string());
        let c = h.erlang_c;
        if h.erlang_c.is_none() && h.arrivals_per_hour == 0.0 {
            idle += 1;
        }
        out.push_str(&format!(
            "{hour:<6} {:>9.1} {:>7.0} {:>8} {:>7} {:>7} {:>7}",
            h.arrivals_per_hour,
            secs(h.average_handle_time.as_ref()).unwrap_or(0.0),
            c.map_or("-".into(), |p| p.agents.to_string()),
            pct(c.map(|p| p.service_level)),
            num(c.and_then(|p| secs(p.average_speed_of_answer.as_ref()))),
            pct(c.map(|p| p.occupancy)),
        ));
        if with_a {
            let e = h.erlang_a;
            out.push_str(&format!(
                " {:>8} {:>7} {:>7} {:>7}",
                e.map_or("-".into(), |p| p.agents.to_string()),
                pct(e.map(|p| p.service_level)),
                pct(e.map(|p| p.probability_of_abandoning)),
                pct(e.map(|p| p.occupancy)),
            ));
        }
        out.push('\n');
    }
    if idle > 0 {
        out.push_str(&format!(
            "{idle} hour(s) without calls: nothing to plan (\"-\")\n"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_shown_as_configured() {
        assert_eq!(exact_pct(0.79459), "79.459%");
        assert_eq!(exact_pct(0.8), "80%");
        assert_eq!(exact_pct(0.955), "95.5%");
    }
}
