#!/usr/bin/env bash
# Checks the Prometheus alert rules: `promtool check rules` (syntax, templates) and
# `promtool test rules` (alerts_test.yml: each alert fires when it should and not
# otherwise). promtool comes with Debian's `prometheus` package, installed here when
# missing (as root, or with sudo). The metric names the rules and the Grafana
# dashboard use are checked against the real exporter by `cargo test` (tests/api/
# deploy.rs).
set -euo pipefail
cd "$(dirname "$0")/prometheus"

if ! command -v promtool >/dev/null; then
    echo "== installing promtool (Debian package prometheus)"
    sudo=""
    if [ "$(id -u)" != 0 ]; then
        sudo="sudo"
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus
fi

echo "== promtool check rules"
promtool check rules alerts.yml
echo "== promtool test rules"
promtool test rules alerts_test.yml
