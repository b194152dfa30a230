#!/usr/bin/env bash
# Browser end to end of the web console: Debian's chromium driven by playwright-core
# (tests/console/e2e.mjs) against a real `holdless serve` on loopback.
#
# Starts holdless on a temporary store with tests/sip/plan.toml (no business hours: the
# same outcome at any time of day), a supervisor, a customer and a telephony principal, and free
# ports for gRPC and the console; e2e.mjs seeds calls, a callback and a second plan
# version, then drives the pages. Screenshots of every page go to $SHOTS (default
# target/console-e2e/).
#
# Installs what it needs when missing: chromium (and nodejs/npm) from Debian, then
# playwright-core and grpc-js with `npm ci` into tests/console/node_modules. Every wait
# is bounded. Usage: tests/console/e2e.sh   (HOLDLESS_BIN=path to use a given binary,
# KEEP=1 to keep the work directory). Prints `console_e2e: N passed, M failed`.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
here="$repo/tests/console"
work="$(mktemp -d /tmp/holdless-console-e2e.XXXXXX)"
shots="${SHOTS:-${CARGO_TARGET_DIR:-$repo/target}/console-e2e}"
holdless_pid=""
status=1

log() { printf '%s\n' "$*"; }

cleanup() {
    set +e
    if [ -n "$holdless_pid" ]; then
        kill "$holdless_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$holdless_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$holdless_pid" 2>/dev/null
    fi
    if [ "${KEEP:-0}" = 1 ] || [ "$status" -ne 0 ]; then
        log "console_e2e: logs kept in $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

fatal() {
    log "console_e2e: 0 passed, 1 failed ($1)"
    exit 1
}

install_packages() {
    local missing=() p
    command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "== installing ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    if ! { timeout 180 $sudo apt-get update -qq >"$work/apt.log" 2>&1 &&
        timeout 600 $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" \
            fonts-dejavu-core >>"$work/apt.log" 2>&1; }; then
        tail -20 "$work/apt.log"
        return 1
    fi
}

free_port() {
    node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

install_packages || fatal "package install"
if [ ! -d "$here/node_modules/playwright-core" ] || [ ! -d "$here/node_modules/@grpc/grpc-js" ]; then
    log "== npm ci (playwright-core, grpc-js)"
    (cd "$here" && timeout 300 npm ci --no-audit --no-fund --ignore-scripts >"$work/npm.log" 2>&1) ||
        { tail -20 "$work/npm.log"; fatal "npm ci"; }
fi
if [ -n "${HOLDLESS_BIN:-}" ]; then
    bin="$HOLDLESS_BIN"
else
    (cd "$repo" && timeout 1200 cargo build --locked --quiet --bin holdless) || fatal "cargo build"
    bin="${CARGO_TARGET_DIR:-$repo/target}/debug/holdless"
fi
[ -x "$bin" ] || fatal "no holdless binary at $bin"

grpc_port="$(free_port)"
console_port="$(free_port)"
supervisor_token="e2e-supervisor-$RANDOM$RANDOM"
customer_token="e2e-customer-$RANDOM$RANDOM"
telephony_token="e2e-telephony-$RANDOM$RANDOM"
sha() { printf %s "$1" | sha256sum | cut -d' ' -f1; }
cat >"$work/holdless.toml" <<EOF
[server]
listen = "127.0.0.1:$grpc_port"
[metrics]
listen = "127.0.0.1:0"
[console]
listen = "127.0.0.1:$console_port"
[store]
path = "$work/store"
[plan]
file = "$repo/tests/sip/plan.toml"
[[auth.principals]]
name = "e2e-supervisor"
token_sha256 = "$(sha "$supervisor_token")"
roles = ["supervisor"]
[[auth.principals]]
name = "e2e-web"
token_sha256 = "$(sha "$customer_token")"
roles = ["customer"]
[[auth.principals]]
name = "e2e-pbx"
token_sha256 = "$(sha "$telephony_token")"
roles = ["telephony"]
EOF
# The second plan version: one line changed (billing's contact URI; routing to
# general, which the wallboard step watches, stays as it is).
changed_line='contact_uri = "sip:billing-desk@queues.example.com"'
sed "s|^contact_uri = \"sip:billing@queues.example.com\"|$changed_line|" \
    "$repo/tests/sip/plan.toml" >"$work/plan2.toml"
cmp -s "$repo/tests/sip/plan.toml" "$work/plan2.toml" && fatal "plan2 did not change"

log "== holdless: gRPC 127.0.0.1:$grpc_port, console http://127.0.0.1:$console_port"
HOLDLESS_LOG=info "$bin" serve --config "$work/holdless.toml" >"$work/holdless.log" 2>&1 &
holdless_pid=$!
for _ in $(seq 150); do
    grep -q 'holdless is SERVING' "$work/holdless.log" && break
    kill -0 "$holdless_pid" 2>/dev/null || break
    sleep 0.1
done
grep -q 'holdless is SERVING' "$work/holdless.log" || { tail -20 "$work/holdless.log"; fatal "holdless start"; }

rm -rf "$shots"
log "== browser (screenshots in $shots)"
set +e
CONSOLE_URL="http://127.0.0.1:$console_port" GRPC_ADDR="127.0.0.1:$grpc_port" \
    SUPERVISOR_TOKEN="$supervisor_token" CUSTOMER_TOKEN="$customer_token" \
    TELEPHONY_TOKEN="$telephony_token" \
    SHOTS="$shots" REPO="$repo" HOLDLESS_BIN="$bin" PLAN2="$work/plan2.toml" \
    CHANGED_LINE="$changed_line" \
    timeout 300 node "$here/e2e.mjs"
status=$?
set -e
[ "$status" -eq 0 ] || tail -20 "$work/holdless.log"
exit "$status"
