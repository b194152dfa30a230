#!/usr/bin/env bash
# SIP end to end: SIPp (UAC) -> Kamailio (deploy/kamailio) -> holdless, on loopback.
#
# Starts holdless on a temporary store with tests/sip/plan.toml (no business hours, no
# campaign window: the same outcome at any time of day), Kamailio with the deployed
# configuration and adapter, then places one SIPp call per case and checks the Contact
# (and headers) of the 302. Cases with holdless frozen (SIGSTOP: slower than the
# deadline) and stopped check the fail-open target and its counter; a last case checks
# that routing resumes once holdless is back.
#
# Installs what it needs (Debian packages) when missing; every wait is bounded.
# Usage: tests/sip/e2e.sh        (HOLDLESS_BIN=path to use a given binary, KEEP=1 to
#                                 keep the work directory, SIP_E2E_VERBOSE=1 for logs)
# Prints `sip_e2e: N passed, M failed`; exits non-zero on any failure.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
here="$repo/tests/sip"
work="$(mktemp -d /tmp/holdless-sip-e2e.XXXXXX)"
passed=0
failed=0
# shellcheck source=tests/sip/lib.sh
. "$here/lib.sh"

cleanup() {
    set +e
    stop_all
    if [ "${KEEP:-0}" = 1 ] || [ "$failed" -ne 0 ]; then
        log "sip_e2e: logs kept in $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

fatal() {
    failed=$((failed + 1))
    log "sip_e2e: $passed passed, $failed failed ($1)"
    exit 1
}

install_packages || fatal "package install"
bin="$(holdless_binary)" || fatal "cargo build"
[ -x "$bin" ] || fatal "no holdless binary at $bin"
pick_ports

log "== adapter unit tests"
if timeout 60 /usr/bin/python3 "$here/test_adapter.py" >"$work/unit.log" 2>&1; then
    passed=$((passed + 1))
    log "ok   adapter helpers ($(grep -o 'Ran [0-9]* tests' "$work/unit.log"))"
else
    failed=$((failed + 1))
    sed 's/^/     /' "$work/unit.log"
    log "FAIL adapter helpers"
fi

log "== holdless on 127.0.0.1:$grpc_port ($bin)"
start_holdless "$bin" "$here/plan.toml" || fatal "holdless start"
timeout 10 "$bin" customer upsert cust-gold --name "Gold Customer" \
    --phone +13125550100 --status gold --server "$server" >"$work/customer.log" 2>&1 ||
    { cat "$work/customer.log"; fatal "customer upsert"; }

log "== kamailio on udp:127.0.0.1:$sip_port"
start_kamailio 2 "agent_uri_template = sip:{agent}@agents.example.com" ||
    fatal "kamailio start"

# --- cases -------------------------------------------------------------------------

# Bash 5.2 would read '&' in a ${var//pattern/replacement} as the matched text.
shopt -u patsub_replacement 2>/dev/null || true

# Renders tests/sip/redirect.xml for one case; placeholders are replaced literally.
render() { # name from_user headers contact_re checks
    local out="$work/$1.xml" line
    while IFS= read -r line || [ -n "$line" ]; do
        line="${line//@FROM_USER@/$2}"
        line="${line//@CONTACT_RE@/$4}"
        if [[ "$line" == "@HEADERS@" ]]; then
            [ -n "$3" ] && printf '%s\n' "$3"
            continue
        fi
        if [[ "$line" == "@CHECKS@" ]]; then
            [ -n "$5" ] && printf '%s\n' "$5"
            continue
        fi
        printf '%s\n' "$line"
    done <"$here/redirect.xml" >"$out"
}

# The regexp of an exact Contact value, XML-escaped for the scenario attribute.
contact_re() {
    local re="$1"
    re="${re//./\\.}"
    re="${re//\?/\\?}"
    printf '^ *&lt;%s&gt;$' "$re"
}

# Runs one call; passes when SIPp completes it (all regexp checks held).
call() { # name dialed from_user headers contact_re [checks]
    local name="$1" dialed="$2"
    render "$name" "$3" "$4" "$5" "${6:-}"
    local rc=0
    timeout 30 sipp -sf "$work/$name.xml" -s "$dialed" -i 127.0.0.1 -p "$uac_port" \
        -m 1 -l 1 -recv_timeout 5000 -timeout 20s -timeout_error -nostdin \
        -trace_msg -message_file "$work/$name.msg" \
        -trace_logs -log_file "$work/$name.log" \
        -trace_err -error_file "$work/$name.err" \
        "127.0.0.1:$sip_port" >"$work/$name.out" 2>&1 || rc=$?
    local got
    got="$(grep -m1 '302 Contact:' "$work/$name.log" 2>/dev/null | sed 's/^302 Contact: *//' || true)"
    if [ "$rc" -eq 0 ] && [ -n "$got" ]; then
        passed=$((passed + 1))
        log "ok   $name -> $got"
    else
        failed=$((failed + 1))
        log "FAIL $name (sipp exit $rc) got Contact: ${got:-none}"
        grep -h -A12 '^SIP/2.0 302' "$work/$name.msg" 2>/dev/null | head -14 | sed 's/^/     /' || true
        tail -5 "$work/$name.err" 2>/dev/null | sed 's/^/     /' || true
        echo
    fi
}

header_check() { # header regexp (one per call: it uses variable $9)
    printf '      <ereg regexp="%s" search_in="hdr" header="%s:" check_it="true" assign_to="9"/>\n' "$2" "$1"
    printf '      <log message="%s:[$9]"/>' "$1"
}

counter() { # name -> value of script:NAME
    timeout 5 kamcmd -s "$ctl" stats.get_statistics "$1" 2>/dev/null |
        sed -n "s/^script:$1 = //p"
}

expect_counter() { # name value
    local got
    got="$(counter "$1")"
    if [ "$got" = "$2" ]; then
        passed=$((passed + 1))
        log "ok   counter $1 = $got"
    else
        failed=$((failed + 1))
        log "FAIL counter $1 = ${got:-?}, expected $2"
    fi
}

log "== calls"
call uk-caller +18005550100 +442079460958 "" \
    "$(contact_re sip:uk-support@queues.example.com)" \
    "$(header_check X-Holdless-Queue '^ *uk_support$')"
call uk-caller-00-prefix +18005550100 00442079460958 "" \
    "$(contact_re sip:uk-support@queues.example.com)"
call gold-customer-by-pai +18005550100 anonymous \
    "P-Asserted-Identity: <sip:+13125550100@carrier.example.com;user=phone>" \
    "$(contact_re sip:priority@queues.example.com)"
call campaign-number +18005550199 +12125550100 "" \
    "$(contact_re sip:sales@queues.example.com)"
call campaign-header +18005550100 +12125550100 "X-Campaign: WINTER26" \
    "$(contact_re sip:sales@queues.example.com)"
call callback-offer +18005550111 +12125550100 "" \
    '^ *&lt;sip:callback-offer@ivr\.example\.com\?X-Holdless-Offer=queue%3Dbilling%3Breason%3Drule%3B.*&gt;$' \
    "$(header_check X-Holdless-Offer '^ *queue=billing;reason=rule;decision=[0-9A-Z]{26};call-id=')"

# An available agent with the sales skill is reserved for the next sales call: the 302
# names the agent first and the queue second. The two campaign calls above still wait
# in sales, and a freed agent belongs to the head of the line: agent-5 and agent-6 take
# them, so agent-7 is free for the next call.
timeout 20 /usr/bin/python3 - "$work/gen" "127.0.0.1:$grpc_port" >"$work/agent.log" 2>&1 <<'EOF' ||
import sys
sys.path.insert(0, sys.argv[1])
import grpc
from google.protobuf import timestamp_pb2
from holdless.v1 import routing_pb2 as pb
ts = timestamp_pb2.Timestamp()
ts.GetCurrentTime()
rpc = grpc.insecure_channel(sys.argv[2]).unary_unary(
    "/holdless.v1.RoutingService/ReportAgentState",
    request_serializer=pb.ReportAgentStateRequest.SerializeToString,
    response_deserializer=pb.ReportAgentStateResponse.FromString)
for agent in ["agent-5", "agent-6", "agent-7"]:
    req = pb.ReportAgentStateRequest(agent_id=agent, skills={"sales": 1},
                                     state=pb.AGENT_STATE_AVAILABLE, event_time=ts)
    print(rpc(req, timeout=10))
EOF
    { cat "$work/agent.log"; fatal "report agent state"; }
call agent-reserved +18005550199 +12125550100 "" \
    '^ *&lt;sip:agent-7@agents\.example\.com&gt;;q=1, *&lt;sip:sales@queues\.example\.com&gt;;q=0\.5$' \
    "$(header_check X-Holdless-Agent '^ *agent-7$')"
expect_counter holdless_routed 6
expect_counter holdless_callback_offers 1

log "== holdless slower than the deadline (SIGSTOP)"
kill -STOP "$holdless_pid"
call fail-open-slow +18005550199 +12125550100 "" \
    "$(contact_re sip:fail-open@fallback.example.com)" \
    "$(header_check X-Holdless-Fail-Open '^ *deadline_exceeded$')"
kill -CONT "$holdless_pid"

log "== holdless stopped"
stop_holdless
call fail-open-down +18005550199 +12125550100 "" \
    "$(contact_re sip:fail-open@fallback.example.com)" \
    "$(header_check X-Holdless-Fail-Open '^ *(unavailable|deadline_exceeded)$')"
expect_counter holdless_fail_open 2

log "== holdless back"
start_holdless "$bin" "$here/plan.toml" || fatal "holdless restart"
# The adapter reconnects within about a second (max reconnect backoff 1 s); a call made
# during that second fails open, so allow a few attempts (each bounded by the deadline).
for attempt in 1 2 3 4 5 6 7 8 9 10; do
    render probe +12125550100 "" "$(contact_re sip:sales@queues.example.com)" ""
    if timeout 15 sipp -sf "$work/probe.xml" -s +18005550199 -i 127.0.0.1 -p "$uac_port" \
        -m 1 -recv_timeout 5000 -timeout 10s -timeout_error -nostdin \
        "127.0.0.1:$sip_port" >"$work/probe.out" 2>&1; then
        log "     routing resumed after $attempt probe call(s)"
        break
    fi
    sleep 0.5
done
call routes-again-after-restart +18005550100 +442079460958 "" \
    "$(contact_re sip:uk-support@queues.example.com)"

if [ "${SIP_E2E_VERBOSE:-0}" = 1 ]; then
    log "== kamailio log"
    grep -v ' INFO: ' "$work/kamailio.log" | tail -40 || true
fi

log "sip_e2e: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
