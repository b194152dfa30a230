# Shared by tests/sip/e2e.sh and tests/sip/load.sh: packages, ports, and starting and
# stopping holdless and Kamailio on loopback. Every wait is bounded. Source it after
# setting `repo` and `work`; it sets holdless_pid, kamailio_pid, grpc_port, sip_port,
# uac_port, server and ctl.

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
holdless_pid=""
kamailio_pid=""

log() { printf '%s\n' "$*"; }

# Stops what we started (by pid), within about 5 s.
stop_all() {
    [ -n "$kamailio_pid" ] && kill "$kamailio_pid" 2>/dev/null
    if [ -n "$holdless_pid" ]; then
        kill -CONT "$holdless_pid" 2>/dev/null
        kill "$holdless_pid" 2>/dev/null
    fi
    for _ in $(seq 50); do
        { [ -z "$kamailio_pid" ] || ! kill -0 "$kamailio_pid" 2>/dev/null; } &&
            { [ -z "$holdless_pid" ] || ! kill -0 "$holdless_pid" 2>/dev/null; } && break
        sleep 0.1
    done
    [ -n "$kamailio_pid" ] && kill -9 "$kamailio_pid" 2>/dev/null
    [ -n "$holdless_pid" ] && kill -9 "$holdless_pid" 2>/dev/null
    kamailio_pid=""
    holdless_pid=""
    return 0
}

# Installs the Debian packages that are missing (idempotent). Returns non-zero on failure.
install_packages() {
    local packages=(kamailio kamailio-python3-modules sip-tester python3-grpcio
        python3-protobuf protobuf-compiler libprotobuf-dev)
    local missing=() p
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "== installing ${missing[*]}"
    local sudo="" policy="" rc=0
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    # Keep the package's own Kamailio service from starting (it would listen on every
    # interface); ours runs on loopback only.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
        $sudo chmod +x "$policy"
    fi
    export DEBIAN_FRONTEND=noninteractive
    timeout 180 $sudo apt-get update -qq >"$work/apt.log" 2>&1 &&
        timeout 240 $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" \
            >>"$work/apt.log" 2>&1 || rc=$?
    [ -n "$policy" ] && $sudo rm -f "$policy"
    if [ "$rc" -ne 0 ]; then
        tail -20 "$work/apt.log"
        return 1
    fi
}

# A free loopback port, free for both TCP and UDP.
free_port() {
    /usr/bin/python3 - <<'EOF'
import socket
while True:
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(port)
    break
EOF
}

pick_ports() {
    grpc_port="$(free_port)"
    sip_port="$(free_port)"
    uac_port="$(free_port)"
    server="http://127.0.0.1:$grpc_port"
    ctl="unix:$work/kamailio_ctl"
}

# start_holdless BIN PLAN: on grpc_port with a store in $work; waits for SERVING (15 s).
start_holdless() {
    local bin="$1" plan="$2" n0
    touch "$work/holdless.log"
    n0="$(grep -c 'holdless is SERVING' "$work/holdless.log" || true)"
    HOLDLESS__SERVER__LISTEN="127.0.0.1:$grpc_port" \
        HOLDLESS__METRICS__LISTEN="127.0.0.1:0" \
        HOLDLESS__CONSOLE__LISTEN="127.0.0.1:0" \
        HOLDLESS__STORE__PATH="$work/store" \
        HOLDLESS__PLAN__FILE="$plan" \
        HOLDLESS_LOG="${HOLDLESS_LOG:-info}" \
        "$bin" serve >>"$work/holdless.log" 2>&1 &
    holdless_pid=$!
    for _ in $(seq 150); do
        if [ "$(grep -c 'holdless is SERVING' "$work/holdless.log" || true)" -gt "$n0" ]; then
            return 0
        fi
        kill -0 "$holdless_pid" 2>/dev/null || break
        sleep 0.1
    done
    tail -20 "$work/holdless.log"
    log "holdless did not start"
    return 1
}

# Stops holdless (SIGTERM, then SIGKILL after 10 s) and waits for it to exit.
stop_holdless() {
    kill "$holdless_pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$holdless_pid" 2>/dev/null || { holdless_pid=""; return 0; }
        sleep 0.1
    done
    kill -9 "$holdless_pid" 2>/dev/null || true
    holdless_pid=""
}

# start_kamailio WORKERS [extra ini lines]: deploy/kamailio on udp+tcp sip_port, the
# adapter pointed at holdless; waits until its control socket answers (10 s).
start_kamailio() {
    local workers="$1" extra="${2:-}"
    [ -d "$work/gen" ] || "$repo/deploy/kamailio/gen-stubs.sh" "$work/gen" >/dev/null
    cat >"$work/holdless-sip.ini" <<EOF
[holdless]
holdless_address = 127.0.0.1:$grpc_port
deadline_ms = 200
fail_open_uri = sip:fail-open@fallback.example.com
callback_offer_uri = sip:callback-offer@ivr.example.com
stubs_dir = $work/gen
$extra
EOF
    HOLDLESS_SIP_CONFIG="$work/holdless-sip.ini" kamailio -DD -E -m "${KAMAILIO_SHM_MB:-64}" \
        -f "$repo/deploy/kamailio/kamailio.cfg" \
        -A "SIP_LISTEN=udp:127.0.0.1:$sip_port" -A "SIP_LISTEN_TCP=tcp:127.0.0.1:$sip_port" \
        -A "ROUTER_PY=\"$repo/deploy/kamailio/holdless_router.py\"" \
        -A "CTL_SOCKET=\"$ctl\"" -A "WORKERS=$workers" \
        -Y "$work" -P "$work/kamailio.pid" -w "$work" >>"$work/kamailio.log" 2>&1 &
    kamailio_pid=$!
    for _ in $(seq 100); do
        timeout 2 kamcmd -s "$ctl" core.uptime >/dev/null 2>&1 && return 0
        kill -0 "$kamailio_pid" 2>/dev/null || break
        sleep 0.1
    done
    tail -30 "$work/kamailio.log"
    log "kamailio did not start"
    return 1
}

stop_kamailio() {
    kill "$kamailio_pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$kamailio_pid" 2>/dev/null || { kamailio_pid=""; return 0; }
        sleep 0.1
    done
    kill -9 "$kamailio_pid" 2>/dev/null || true
    kamailio_pid=""
}

# The holdless binary: $HOLDLESS_BIN, else `cargo build` (PROFILE=release for release).
holdless_binary() {
    if [ -n "${HOLDLESS_BIN:-}" ]; then
        printf '%s\n' "$HOLDLESS_BIN"
        return 0
    fi
    local profile="${PROFILE:-debug}" flag=""
    [ "$profile" = release ] && flag="--release"
    (cd "$repo" && timeout 1200 cargo build --locked --quiet $flag --bin holdless) >&2
    printf '%s\n' "${CARGO_TARGET_DIR:-$repo/target}/$profile/holdless"
}
