//! Queueing formulas for staffing: Erlang B, Erlang C (M/M/N) and Erlang A (M/M/N+M).
//! Pure functions over `f64`; no I/O.
//!
//! Notation: `rate` arrivals per second, `aht` mean handle time in seconds, offered load
//! `A = rate * aht` (Erlangs), `n` agents, `t` the service-level threshold in seconds.
//!
//! - **Erlang B** by the recursion `B(0) = 1`, `B(k) = A B(k-1) / (k + A B(k-1))`: every
//!   term lies in (0, 1], so it neither overflows nor loses precision for thousands of
//!   agents (the factorial form overflows `f64` beyond ~170 agents).
//! - **Erlang C** from it: `C = n B / (n - A (1 - B))` for `n > A` (else every call waits).
//! - **Service level** `SL(t) = 1 - C e^{-(n - A) t / aht}`, **ASA** `= C aht / (n - A)`,
//!   **occupancy** `= A / n`.
//! - **Erlang A** (Palm's M/M/N+M: callers abandon after an exponential patience with mean
//!   `patience`, rate `theta = 1 / patience`): the number in system is a birth-death chain
//!   with birth rate `rate` and death rate `min(k, n) mu + max(k - n, 0) theta`. Its
//!   stationary distribution is computed as ratios to the state `n` (`pi_k / pi_n`), which
//!   are products of factors below one on the far side of `n` and are summed outward
//!   until the terms vanish, so nothing overflows; states below `n` use the Erlang B
//!   recursion (`pi_k / pi_n` for `k < n` sums to `1 / B(n) - 1`). From it: P(wait)
//!   `= P(k >= n)` (PASTA), P(abandon) `= theta E[queue] / rate`, mean wait of all
//!   callers `= E[queue] / rate` (Little). For the service level, a caller who finds `j`
//!   callers waiting ahead is followed as a small absorbing chain ("j ahead" -> "j - 1
//!   ahead" at rate `n mu + j theta`, served from 0 ahead at rate `n mu`, abandons at
//!   rate `theta` in every state); its forward equations are integrated with RK4 over
//!   `[0, t]`, giving P(answered within t) and P(abandoned within t). Service level is
//!   then answered within t / (1 - abandoned within t), the same definition holdless
//!   uses for measured service level (answered within / (answered + abandoned after)).

/// Most agents `agents_for_service_level` tries before giving up.
pub const MAX_AGENTS: u32 = 100_000;

/// Erlang B blocking probability for offered load `a` (Erlangs) on `n` servers.
pub fn erlang_b(n: u32, a: f64) -> f64 {
    if a <= 0.0 {
        return if n == 0 { 1.0 } else { 0.0 };
    }
    let mut b = 1.0;
    for k in 1..=n {
        let ab = a * b;
        b = ab / (f64::from(k) + ab);
    }
    b
}

/// Erlang C: probability that a caller has to wait (all `n` agents busy). 1 when the
/// load is not below the agents (`n <= a`): the queue grows without bound.
pub fn erlang_c(n: u32, a: f64) -> f64 {
    if a <= 0.0 {
        return 0.0;
    }
    let nf = f64::from(n);
    if nf <= a {
        return 1.0;
    }
    let b = erlang_b(n, a);
    (nf * b / (nf - a * (1.0 - b))).clamp(0.0, 1.0)
}

/// Share of callers answered within `t` seconds (Erlang C).
pub fn service_level(n: u32, a: f64, aht: f64, t: f64) -> f64 {
    let nf = f64::from(n);
    if a <= 0.0 {
        return 1.0;
    }
    if nf <= a || aht <= 0.0 {
        return 0.0;
    }
    (1.0 - erlang_c(n, a) * (-(nf - a) * t / aht).exp()).clamp(0.0, 1.0)
}

/// Average speed of answer in seconds (Erlang C); infinite when `n <= a`.
pub fn asa(n: u32, a: f64, aht: f64) -> f64 {
    let nf = f64::from(n);
    if a <= 0.0 {
        return 0.0;
    }
    if nf <= a {
        return f64::INFINITY;
    }
    erlang_c(n, a) * aht / (nf - a)
}

/// Share of agent time spent handling calls (capped at 1).
pub fn occupancy(n: u32, a: f64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    (a / f64::from(n)).clamp(0.0, 1.0)
}

/// What a number of agents achieves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Staffing {
    pub agents: u32,
    pub service_level: f64,
    /// Mean wait in seconds (Erlang C: of all callers; Erlang A: of all callers too,
    /// abandoned ones counted until they hung up).
    pub asa_secs: f64,
    pub prob_wait: f64,
    pub occupancy: f64,
    /// Erlang A only (0 for Erlang C).
    pub prob_abandon: f64,
}

/// Erlang C figures for `n` agents.
pub fn erlang_c_staffing(n: u32, rate: f64, aht: f64, t: f64) -> Staffing {
    let a = rate * aht;
    Staffing {
        agents: n,
        service_level: service_level(n, a, aht, t),
        asa_secs: asa(n, a, aht),
        prob_wait: erlang_c(n, a),
        occupancy: occupancy(n, a),
        prob_abandon: 0.0,
    }
}

/// The fewest agents whose Erlang C service level reaches `target_fraction` within
/// `target_secs`, with what they achieve. `None` for invalid input (negative or
/// non-finite rates, a target outside `[0, 1)`) or past [`MAX_AGENTS`].
pub fn agents_for_service_level(
    rate: f64,
    aht: f64,
    target_secs: f64,
    target_fraction: f64,
) -> Option<Staffing> {
    if !(rate.is_finite() && aht.is_finite() && target_secs.is_finite()) {
        return None;
    }
    if rate < 0.0 || aht < 0.0 || target_secs < 0.0 || !(0.0..1.0).contains(&target_fraction) {
        return None;
    }
    let a = rate * aht;
    if a == 0.0 {
        return Some(erlang_c_staffing(0, rate, aht, target_secs));
    }
    // Fewer agents than the load can never keep up.
    let start = (a.floor() as u64 + 1).min(u64::from(MAX_AGENTS)) as u32;
    (start..=MAX_AGENTS)
        .map(|n| erlang_c_staffing(n, rate, aht, target_secs))
        .find(|s| s.service_level >= target_fraction)
}

/// The fewest agents whose Erlang A service level reaches `target_fraction`, given
/// the callers' mean patience in seconds. Starts below the load: with abandonment the
/// queue is stable with any number of agents.
pub fn agents_for_service_level_a(
    rate: f64,
    aht: f64,
    patience: f64,
    target_secs: f64,
    target_fraction: f64,
) -> Option<Staffing> {
    if !(rate.is_finite() && aht.is_finite() && target_secs.is_finite() && patience.is_finite()) {
        return None;
    }
    if rate < 0.0
        || aht <= 0.0
        || patience <= 0.0
        || target_secs < 0.0
        || !(0.0..1.0).contains(&target_fraction)
    {
        return None;
    }
    if rate == 0.0 {
        return erlang_a(0, rate, aht, patience, target_secs);
    }
    // Erlang A never needs more agents than Erlang C; search upwards from 1.
    let upper = agents_for_service_level(rate, aht, target_secs, target_fraction)
        .map_or(MAX_AGENTS, |s| s.agents);
    let mut lo = 1u32;
    let mut hi = upper;
    // Service level grows with agents: binary search for the first that reaches it.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let sl = erlang_a(mid, rate, aht, patience, target_secs)?.service_level;
        if sl >= target_fraction {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    erlang_a(lo, rate, aht, patience, target_secs)
}

/// Relative size below which a stationary term is dropped.
const TAIL_EPS: f64 = 1e-16;
/// Above this a stationary ratio is scaled down by [`RESCALE_BY`] (with everything
/// summed so far), far from both ends of the f64 range.
const RESCALE_ABOVE: f64 = 1e200;
const RESCALE_BY: f64 = 1e-200;
/// Longest queue the Erlang A chain is followed to.
const MAX_QUEUE: usize = 1_000_000;

/// Erlang A (M/M/N+M) figures for `n` agents; `patience` is the callers' mean patience
/// in seconds. `None` for invalid input, or when the load is at or above the agents
/// with infinite patience (then the queue grows without bound).
pub fn erlang_a(n: u32, rate: f64, aht: f64, patience: f64, t: f64) -> Option<Staffing> {
    if !(rate >= 0.0 && aht > 0.0 && patience > 0.0 && t >= 0.0) {
        return None;
    }
    let mu = 1.0 / aht;
    let theta = if patience.is_finite() {
        1.0 / patience
    } else {
        0.0
    };
    let a = rate * aht;
    let nf = f64::from(n);
    if rate == 0.0 {
        return Some(Staffing {
            agents: n,
            service_level: 1.0,
            asa_secs: 0.0,
            prob_wait: 0.0,
            occupancy: 0.0,
            prob_abandon: 0.0,
        });
    }
    if theta == 0.0 && nf <= a {
        return None;
    }
    // States at or above n, as ratios to pi_n: q[j] = pi_{n+j} / pi_n, all times
    // `shrink`. Far above capacity (hundreds of Erlangs on few agents, long patience) the
    // ratios grow past f64 before they turn down; they are then scaled down together,
    // so the sums stay finite instead of reading as "nobody waits".
    let mut q = vec![1.0f64];
    let mut term = 1.0f64;
    let (mut sum_q, mut sum_jq) = (1.0f64, 0.0f64);
    let mut shrink = 1.0f64;
    for j in 1..MAX_QUEUE {
        term *= rate / (nf * mu + j as f64 * theta);
        if term > RESCALE_ABOVE {
            term *= RESCALE_BY;
            sum_q *= RESCALE_BY;
            sum_jq *= RESCALE_BY;
            shrink *= RESCALE_BY;
            q.iter_mut().for_each(|x| *x *= RESCALE_BY);
        }
        if term < TAIL_EPS * sum_q {
            break;
        }
        q.push(term);
        sum_q += term;
        sum_jq += j as f64 * term;
    }
    // States below n: sum_{k<n} pi_k / pi_n = 1/B(n) - 1 (B(0) = 1, so 0 for n = 0).
    let below = if n == 0 {
        0.0
    } else {
        let b = erlang_b(n, a);
        // For huge n with tiny load, B underflows to 0: everything is below n.
        if b == 0.0 {
            f64::INFINITY
        } else {
            // Scaled like the states above n (0 once they dwarf these).
            (1.0 / b - 1.0) * shrink
        }
    };
    let total = below + sum_q;
    let prob_wait = if total.is_finite() {
        sum_q / total
    } else {
        0.0
    };
    let mean_queue = if total.is_finite() {
        sum_jq / total
    } else {
        0.0
    };
    let prob_abandon = (theta * mean_queue / rate).clamp(0.0, 1.0);
    let mean_wait = mean_queue / rate;
    let busy = a * (1.0 - prob_abandon);
    // The tagged caller who arrives to find j waiting ahead (state n + j).
    let (answered_in_t, abandoned_in_t) = if prob_wait > 0.0 {
        let (served, abandoned) = tagged_caller(n, mu, theta, t, q.len());
        let mut s = 0.0;
        let mut ab = 0.0;
        for (j, w) in q.iter().enumerate() {
            s += w * served[j];
            ab += w * abandoned[j];
        }
        (
            (1.0 - prob_wait) + prob_wait * s / sum_q,
            prob_wait * ab / sum_q,
        )
    } else {
        (1.0, 0.0)
    };
    let denominator = 1.0 - abandoned_in_t;
    let service_level = if denominator > 0.0 {
        (answered_in_t / denominator).clamp(0.0, 1.0)
    } else {
        0.0
    };
    Some(Staffing {
        agents: n,
        service_level,
        asa_secs: mean_wait,
        prob_wait: prob_wait.clamp(0.0, 1.0),
        occupancy: if n == 0 {
            1.0
        } else {
            (busy / nf).clamp(0.0, 1.0)
        },
        prob_abandon,
    })
}

/// For a caller who finds `j` callers waiting ahead (`j < len`): the probabilities of
/// being answered and of abandoning within `t`. Forward equations of the tagged-caller
/// chain, integrated with classical RK4. `g[j]`: answered by now; `h[j]`: abandoned by
/// now. `dg_j = (n mu + j theta)(g_{j-1} - g_j) - theta g_j` with `g_{-1} = 1`;
/// `dh_j = (n mu + j theta)(h_{j-1} - h_j) + theta (1 - h_j)` with `h_{-1} = 0`.
fn tagged_caller(n: u32, mu: f64, theta: f64, t: f64, len: usize) -> (Vec<f64>, Vec<f64>) {
    let mut g = vec![0.0; len];
    let mut h = vec![0.0; len];
    if t <= 0.0 {
        return (g, h);
    }
    let nmu = f64::from(n) * mu;
    let fastest = nmu + len as f64 * theta + theta;
    // A step well inside RK4's stability region for the fastest rate.
    let steps = ((t * fastest / 0.25).ceil() as usize).clamp(50, 2_000_000);
    let dt = t / steps as f64;
    let deriv = |g: &[f64], h: &[f64], dg: &mut [f64], dh: &mut [f64]| {
        for j in 0..g.len() {
            let r = nmu + j as f64 * theta;
            let (gp, hp) = if j == 0 {
                (1.0, 0.0)
            } else {
                (g[j - 1], h[j - 1])
            };
            dg[j] = r * (gp - g[j]) - theta * g[j];
            dh[j] = r * (hp - h[j]) + theta * (1.0 - h[j]);
        }
    };
    let v = || vec![0.0; len];
    let (mut k1g, mut k1h, mut k2g, mut k2h) = (v(), v(), v(), v());
    let (mut k3g, mut k3h, mut k4g, mut k4h) = (v(), v(), v(), v());
    let (mut tg, mut th) = (v(), v());
    for _ in 0..steps {
        deriv(&g, &h, &mut k1g, &mut k1h);
        for j in 0..len {
            tg[j] = g[j] + 0.5 * dt * k1g[j];
            th[j] = h[j] + 0.5 * dt * k1h[j];
        }
        deriv(&tg, &th, &mut k2g, &mut k2h);
        for j in 0..len {
            tg[j] = g[j] + 0.5 * dt * k2g[j];
            th[j] = h[j] + 0.5 * dt * k2h[j];
        }
        deriv(&tg, &th, &mut k3g, &mut k3h);
        for j in 0..len {
            tg[j] = g[j] + dt * k3g[j];
            th[j] = h[j] + dt * k3h[j];
        }
        deriv(&tg, &th, &mut k4g, &mut k4h);
        for j in 0..len {
            g[j] += dt / 6.0 * (k1g[j] + 2.0 * k2g[j] + 2.0 * k3g[j] + k4g[j]);
            h[j] += dt / 6.0 * (k1h[j] + 2.0 * k2h[j] + 2.0 * k3h[j] + k4h[j]);
        }
    }
    (g, h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64, eps: f64) -> bool {
        (a - b).abs() <= eps
    }

    /// 100 calls in 30 minutes, AHT 180 s: 10 Erlangs.
    const RATE: f64 = 100.0 / 1800.0;
    const AHT: f64 = 180.0;

    #[test]
    fn published_example_needs_14_agents_for_80_in_20() {
        let s = agents_for_service_level(RATE, AHT, 20.0, 0.8).unwrap();
        assert_eq!(s.agents, 14);
        assert!(close(s.service_level, 0.888, 0.0005), "{s:?}");
        assert!(close(s.prob_wait, 0.174, 0.0005), "{s:?}");
        assert!(close(s.asa_secs, 7.8, 0.05), "{s:?}");
        assert!(close(s.occupancy, 10.0 / 14.0, 1e-12));
        let thirteen = erlang_c_staffing(13, RATE, AHT, 20.0);
        assert!(close(thirteen.service_level, 0.796, 0.0005), "{thirteen:?}");
    }

    fn factorial(n: u32) -> f64 {
        (1..=n).map(f64::from).product()
    }

    /// The textbook formula, fine for small n.
    fn naive_erlang_c(n: u32, a: f64) -> f64 {
        let nf = f64::from(n);
        let top = a.powi(n as i32) / factorial(n) * nf / (nf - a);
        let sum: f64 = (0..n).map(|k| a.powi(k as i32) / factorial(k)).sum();
        top / (sum + top)
    }

    #[test]
    fn erlang_c_matches_the_factorial_formula_for_small_teams() {
        for n in 1..=30u32 {
            for a in [0.1, 0.5, 1.0, 2.5, 7.0, 12.3, 25.0] {
                if f64::from(n) > a {
                    let want = naive_erlang_c(n, a);
                    let got = erlang_c(n, a);
                    assert!(close(got, want, 1e-12), "n={n} a={a}: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn erlang_b_known_value() {
        // 5 Erlangs on 10 trunks: 1.838% blocking.
        assert!(close(erlang_b(10, 5.0), 0.01838, 0.00001));
    }

    #[test]
    fn large_centres_do_not_overflow() {
        for n in [500u32, 2000] {
            let a = f64::from(n) * 0.9;
            let rate = a / AHT;
            let s = agents_for_service_level(rate, AHT, 20.0, 0.8).unwrap();
            assert!(s.service_level.is_finite() && s.asa_secs.is_finite());
            assert!(s.agents > n * 9 / 10 && s.agents < n + 100, "{s:?}");
            let at = erlang_c_staffing(n, rate, AHT, 20.0);
            assert!(at.prob_wait.is_finite() && (0.0..=1.0).contains(&at.prob_wait));
            let ea = erlang_a(n, rate, AHT, 120.0, 20.0).unwrap();
            assert!(
                ea.service_level.is_finite() && ea.prob_abandon.is_finite(),
                "{ea:?}"
            );
            assert!((0.0..=1.0).contains(&ea.service_level));
        }
    }

    #[test]
    fn erlang_a_far_over_capacity_has_everyone_wait_instead_of_overflowing() {
        // 300 Erlangs on one agent, callers who wait four hours: the stationary ratios
        // pass f64's range long before they turn down.
        let (rate, aht) = (3000.0 / 3600.0, 360.0);
        let one = erlang_a(1, rate, aht, 14_400.0, 20.0).unwrap();
        assert!(one.prob_wait > 0.999, "{one:?}");
        assert!(one.service_level < 0.01, "{one:?}");
        assert!(one.prob_abandon > 0.99, "{one:?}");
        let c = agents_for_service_level(rate, aht, 20.0, 0.8).unwrap();
        let a = agents_for_service_level_a(rate, aht, 14_400.0, 20.0, 0.8).unwrap();
        assert!(
            a.agents <= c.agents && a.agents + 5 >= c.agents,
            "{a:?} vs {c:?}"
        );
    }

    #[test]
    fn erlang_a_tends_to_erlang_c_as_patience_grows() {
        for n in [11u32, 12, 14] {
            let c = erlang_c_staffing(n, RATE, AHT, 20.0);
            let a = erlang_a(n, RATE, AHT, 1e9, 20.0).unwrap();
            assert!(close(a.prob_wait, c.prob_wait, 1e-4), "{a:?} {c:?}");
            assert!(close(a.service_level, c.service_level, 1e-4), "{a:?} {c:?}");
            assert!(close(a.asa_secs, c.asa_secs, 1e-3), "{a:?} {c:?}");
            assert!(a.prob_abandon < 1e-6);
        }
    }

    #[test]
    fn erlang_a_abandonment_lowers_the_agents_needed() {
        let c = agents_for_service_level(RATE, AHT, 20.0, 0.8).unwrap();
        let a = agents_for_service_level_a(RATE, AHT, 60.0, 20.0, 0.8).unwrap();
        assert!(a.agents <= c.agents, "{a:?} {c:?}");
        assert!(a.service_level >= 0.8);
        let fewer = erlang_a(a.agents - 1, RATE, AHT, 60.0, 20.0).unwrap();
        assert!(fewer.service_level < 0.8);
    }

    /// Solves the truncated chain's balance equations directly (Gaussian elimination).
    #[allow(clippy::needless_range_loop)] // matrix code reads best with indices
    fn brute_force_stationary(n: u32, lambda: f64, mu: f64, theta: f64, k: usize) -> Vec<f64> {
        let size = k + 1;
        // Build Q^T with the last equation replaced by normalization.
        let mut m = vec![vec![0.0; size + 1]; size];
        let death = |s: usize| {
            (s.min(n as usize)) as f64 * mu + s.saturating_sub(n as usize) as f64 * theta
        };
        for s in 0..size {
            let up = if s < k { lambda } else { 0.0 };
            let down = death(s);
            // Column s of Q: flows out of state s.
            m[s][s] -= up + down;
            if s < k {
                m[s + 1][s] += up;
            }
            if s > 0 {
                m[s - 1][s] += down;
            }
        }
        for c in 0..size {
            m[size - 1][c] = 1.0;
        }
        m[size - 1][size] = 1.0;
        for col in 0..size {
            let pivot = (col..size)
                .max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))
                .unwrap();
            m.swap(col, pivot);
            for r in 0..size {
                if r != col {
                    let f = m[r][col] / m[col][col];
                    for c in col..=size {
                        m[r][c] -= f * m[col][c];
                    }
                }
            }
        }
        (0..size).map(|r| m[r][size] / m[r][r]).collect()
    }

    #[test]
    fn erlang_a_matches_a_brute_force_birth_death_solution() {
        let (n, rate, aht, patience) = (3u32, 1.0 / 60.0, 200.0, 90.0);
        let pi = brute_force_stationary(n, rate, 1.0 / aht, 1.0 / patience, 80);
        let wait: f64 = pi[n as usize..].iter().sum();
        let queue: f64 = pi
            .iter()
            .enumerate()
            .map(|(s, p)| s.saturating_sub(n as usize) as f64 * p)
            .sum();
        let got = erlang_a(n, rate, aht, patience, 20.0).unwrap();
        assert!(close(got.prob_wait, wait, 1e-9), "{got:?} vs {wait}");
        assert!(close(got.prob_abandon, queue / patience / rate, 1e-9));
        assert!(close(got.asa_secs, queue / rate, 1e-6));
    }

    #[test]
    fn erlang_a_service_level_matches_a_simulation_free_check_at_zero_threshold() {
        // With t = 0 only callers who find a free agent are answered within t.
        let got = erlang_a(12, RATE, AHT, 100.0, 0.0).unwrap();
        assert!(close(got.service_level, 1.0 - got.prob_wait, 1e-12));
    }

    #[test]
    fn bad_input_gives_none() {
        assert!(agents_for_service_level(f64::NAN, AHT, 20.0, 0.8).is_none());
        assert!(agents_for_service_level(RATE, AHT, 20.0, 1.0).is_none());
        assert!(agents_for_service_level(-1.0, AHT, 20.0, 0.8).is_none());
        assert!(erlang_a(10, RATE, AHT, -1.0, 20.0).is_none());
        assert_eq!(
            agents_for_service_level(0.0, AHT, 20.0, 0.8)
                .unwrap()
                .agents,
            0
        );
    }

    proptest! {
        #[test]
        fn service_level_is_a_probability_and_grows_with_agents(
            a in 0.01f64..400.0, aht in 10.0f64..1000.0, t in 0.0f64..120.0, extra in 0u32..50,
        ) {
            let n0 = a.floor() as u32 + 1;
            let mut last = -1.0;
            for n in n0..n0 + extra + 2 {
                let sl = service_level(n, a, aht, t);
                prop_assert!((0.0..=1.0).contains(&sl));
                prop_assert!(sl + 1e-12 >= last, "n={} sl={} last={}", n, sl, last);
                last = sl;
                let c = erlang_c(n, a);
                prop_assert!((0.0..=1.0).contains(&c));
            }
        }

        #[test]
        fn erlang_a_service_level_is_a_probability(
            n in 1u32..40, a in 0.1f64..40.0, patience in 5.0f64..600.0, t in 0.0f64..60.0,
        ) {
            let aht = 120.0;
            let s = erlang_a(n, a / aht, aht, patience, t).unwrap();
            prop_assert!((0.0..=1.0).contains(&s.service_level));
            prop_assert!((0.0..=1.0).contains(&s.prob_abandon));
            let more = erlang_a(n + 1, a / aht, aht, patience, t).unwrap();
            prop_assert!(more.service_level + 1e-9 >= s.service_level);
        }
    }
}
