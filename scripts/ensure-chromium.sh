#!/usr/bin/env bash
# The rendered-page check (tests/book/test_rendered.py) opens the built book in headless Chromium.
# Make sure there is one: take $REMAP_CHROMIUM or /usr/bin/chromium, else install Debian's own
# `chromium` package when we are root on Debian or Ubuntu. Never a browser build from anywhere else.
# REMAP_SKIP_RENDERED=1 is the only way to go without it, and it is said out loud.
set -euo pipefail

if [[ "${REMAP_SKIP_RENDERED:-0}" == 1 ]]; then
    echo "REMAP_SKIP_RENDERED=1: the rendered-page check (tests/book/test_rendered.py) will be skipped"
    exit 0
fi

browser="${REMAP_CHROMIUM:-/usr/bin/chromium}"
if [[ -x "$browser" ]] || command -v "$browser" >/dev/null 2>&1; then
    echo "chromium: $("$browser" --version 2>/dev/null || echo "$browser")"
    exit 0
fi

advice="run 'sudo apt-get update && sudo apt-get install -y chromium' (Debian/Ubuntu), or set REMAP_CHROMIUM=/path/to/chromium, or skip the check with REMAP_SKIP_RENDERED=1"
if [[ -n "${REMAP_CHROMIUM:-}" ]]; then
    echo "error: REMAP_CHROMIUM=$browser is not an executable Chromium; $advice" >&2
    exit 1
fi

if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1 \
        && grep -qiE '^(ID|ID_LIKE)=.*(debian|ubuntu)' /etc/os-release 2>/dev/null; then
    echo "Chromium is missing: installing the distribution's chromium package with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -q && apt-get install -y -q chromium && [[ -x "$browser" ]]; then
        echo "chromium: $("$browser" --version 2>/dev/null || echo "$browser")"
        exit 0
    fi
    echo "error: apt-get could not install chromium; $advice" >&2
    exit 1
fi

echo "error: the rendered-page check needs Chromium and this is not root on Debian/Ubuntu; $advice" >&2
exit 1
