#!/usr/bin/env bash
# SIP load run (not part of CI): SIPp -> Kamailio -> holdless (release build) on
# loopback, at increasing call rates, then the same rates with the adapter in
# `mode = static` (Kamailio answers without asking holdless) as the baseline.
#
# For each rate: calls placed, failed calls (no 302 within 5 s, or a fail-open
# Contact), the rate achieved, the adapter's decision time per INVITE p50/p99 (measured
# in Kamailio, microsecond clock: Python + gRPC RouteCall + holdless + reply) and
# SIPp's INVITE -> 302 time p50/p99 (SIPp's clock has 1 ms resolution). The routing
# latency holdless adds is the difference with the static baseline at the same rate.
# The machine should be otherwise idle: each line shows the load average before the run.
#
# Usage: tests/sip/load.sh  [RATES="400 600 800 1000 1200"] [SECS=20] [WORKERS=4] [KAMAILIO_SHM_MB=256]
#        (HOLDLESS_BIN=path to use a given binary; KEEP=1 keeps the work directory)
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
here="$repo/tests/sip"
work="$(mktemp -d /tmp/holdless-sip-load.XXXXXX)"
rates="${RATES:-400 600 800 1000 1200}"
secs="${SECS:-20}"
workers="${WORKERS:-4}"
export KAMAILIO_SHM_MB="${KAMAILIO_SHM_MB:-256}"
# shellcheck source=tests/sip/lib.sh
. "$here/lib.sh"

cleanup() {
    set +e
    stop_all
    if [ "${KEEP:-0}" = 1 ]; then log "load: logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

install_packages
bin="$(PROFILE=release holdless_binary)"
pick_ports

# 2,000 callers: London, New York, Chicago, Dublin; most dial the support number, one in
# ten the campaign number.
/usr/bin/python3 - "$work/callers.csv" <<'EOF'
import sys
with open(sys.argv[1], "w") as f:
    f.write("SEQUENTIAL\n")
    prefixes = ["+44207946", "+1212555", "+1312555", "+35318"]
    for i in range(2000):
        caller = "%s%04d" % (prefixes[i % 4], i)
        dialed = "+18005550199" if i % 10 == 0 else "+18005550100"
        f.write("%s;%s\n" % (caller, dialed))
EOF

scenario() { # contact regexp (XML-escaped)
    local line out="$work/load-$1.xml"
    while IFS= read -r line || [ -n "$line" ]; do
        printf '%s\n' "${line//@CONTACT_RE@/$2}"
    done <"$here/load.xml" >"$out"
    printf '%s\n' "$out"
}
shopt -u patsub_replacement 2>/dev/null || true
routed_xml="$(scenario routed '^ *&lt;sip:[a-z-]+@(queues|ivr)\.example\.com')"
static_xml="$(scenario static '^ *&lt;sip:fail-open@fallback\.example\.com&gt;$')"

run() { # label scenario rate  (Kamailio restarted per run: its latency log is per run)
    local label="$1" xml="$2" rate="$3" calls dir
    calls=$((rate * secs))
    dir="$work/$label-$rate"
    mkdir -p "$dir"
    # A fresh holdless per run: no ACD reports call events here, so every routed call
    # stays waiting in holdless's live queues until the run ends.
    rm -rf "$work/store"
    HOLDLESS_LOG="warn,holdless::app=info" start_holdless "$bin" "$here/plan.toml" >&2
    start_kamailio "$workers" "mode = $label
latency_log = $dir/latency" >&2
    local load
    load="$(cut -d' ' -f1 /proc/loadavg)"
    local start end rc=0
    start="$(date +%s.%N)"
    (sleep $((secs / 2)) && top -b -n 1 -w 120 | head -14 >"$dir/top.txt") &
    (cd "$dir" && timeout $((secs * 3 + 60)) sipp -sf "$xml" -inf "$work/callers.csv" \
        -i 127.0.0.1 -p "$uac_port" -r "$rate" -m "$calls" -l $((rate * 5)) \
        -recv_timeout 5000 -timeout $((secs * 3 + 30))s -nostdin -max_socket 4096 \
        -trace_rtt -rtt_freq 1 -trace_stat -fd 1 -trace_err \
        "127.0.0.1:$sip_port" >"$dir/sipp.out" 2>&1) || rc=$?
    end="$(date +%s.%N)"
    timeout 5 kamcmd -s "$ctl" stats.get_statistics script: >"$dir/counters.txt" 2>&1 || true
    stop_kamailio
    stop_holdless
    /usr/bin/python3 - "$dir" "$label" "$rate" "$calls" "$start" "$end" "$rc" "$load" <<'EOF'
import csv, glob, sys
d, label, rate, calls, start, end, rc, load = sys.argv[1:]
rtts = []
for f in glob.glob(d + "/*_rtt.csv"):
    for row in csv.reader(open(f), delimiter=";"):
        try:
            rtts.append(float(row[1]))
        except (ValueError, IndexError):
            pass
ok = failed = 0
for f in glob.glob(d + "/*_.csv") or glob.glob(d + "/*.csv"):
    if f.endswith("_rtt.csv"):
        continue
    rows = list(csv.reader(open(f), delimiter=";"))
    if len(rows) >= 2:
        h, last = rows[0], rows[-1]
        ok = int(last[h.index("SuccessfulCall(C)")])
        failed = int(last[h.index("FailedCall(C)")])
lat = []
for f in glob.glob(d + "/latency.*"):
    lat += [int(x) / 1000.0 for x in open(f).read().split()]
def q(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")
elapsed = float(end) - float(start)
print("%-8s %5s/s  calls %6s  ok %6d  failed %4d  achieved %6.1f/s  | adapter decide p50 %5.2f p99 %6.2f ms"
      " | SIPp INVITE->302 p50 %3.0f p99 %3.0f ms  [sipp exit %s, load avg before %s]"
      % (label, rate, calls, ok, failed, ok / elapsed, q(lat, .5), q(lat, .99), q(rtts, .5), q(rtts, .99), rc, load))
EOF
}

log "== $(date -u +%FT%TZ) $(nproc) cores, Kamailio $workers workers (-m $KAMAILIO_SHM_MB), ${secs}s per rate"
for r in $rates; do
    run holdless "$routed_xml" "$r"
    run static "$static_xml" "$r"
done | tee "$work/summary.txt"
