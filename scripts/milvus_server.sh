#!/usr/bin/env bash
# Start or stop a local Milvus standalone server (PyPI package `milvus`, e.g. 2.3.5) for tests.
#
#   scripts/milvus_server.sh start DIR PORT   # background start; returns once the server answers
#   scripts/milvus_server.sh stop  DIR        # SIGINT, then wait for it to exit (PORT optional)
#   scripts/milvus_server.sh status DIR
#
# The `milvus` package pins old dependencies, so it lives in its own virtualenv:
#   python3 -m venv /tmp/milvus-venv && /tmp/milvus-venv/bin/pip install milvus==2.3.5
# MILVUS_SERVER_BIN overrides the launcher; MILVUS_VENV=DIR uses DIR/bin/milvus-server (default:
# /tmp/milvus-venv/bin/milvus-server, else milvus-server on PATH). MILVUS_START_TIMEOUT (seconds, default 180) bounds the wait.
#
# The launcher picks a free port when the requested one is busy, so this script refuses to
# start when PORT is taken and checks that the server really listens on PORT. Readiness means:
# the proxy port accepts TCP connections and the server's /healthz (on its METRICS_PORT, read
# from the server process' environment) answers OK. The server must be stopped with SIGINT:
# the launcher then terminates the milvus process it started and exits.
set -euo pipefail

usage() {
    echo "usage: $0 start DIR PORT | stop DIR [PORT] | status DIR" >&2
    exit 2
}

[[ $# -ge 2 ]] || usage
cmd=$1
dir=$2
port=${3:-}
pidfile="$dir/milvus-server.pid"
logfile="$dir/milvus-server.log"
timeout_s=${MILVUS_START_TIMEOUT:-180}

launcher=${MILVUS_SERVER_BIN:-}
if [[ -z "$launcher" && -n "${MILVUS_VENV:-}" ]]; then
    launcher="$MILVUS_VENV/bin/milvus-server"
fi
if [[ -z "$launcher" ]]; then
    if [[ -x /tmp/milvus-venv/bin/milvus-server ]]; then
        launcher=/tmp/milvus-venv/bin/milvus-server
    else
        launcher=$(command -v milvus-server || true)
    fi
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

read_pid() { [[ -f "$pidfile" ]] && cat "$pidfile" || true; }

# The `milvus run standalone` child of the launcher (found by parent pid, not by name).
server_child() {
    local parent=$1 child
    for child in $(cat "/proc/$parent/task/"*/children 2>/dev/null); do
        echo "$child"
        return 0
    done
    return 0
}

healthz_ok() {
    local child=$1 metrics
    metrics=$(tr '\0' '\n' <"/proc/$child/environ" 2>/dev/null | sed -n 's/^METRICS_PORT=//p')
    [[ -n "$metrics" ]] || return 1
    local body
    if command -v curl >/dev/null 2>&1; then
        body=$(curl -fsS --max-time 2 "http://127.0.0.1:$metrics/healthz" 2>/dev/null) || return 1
    else
        body=$(python3 - "$metrics" <<'PY' 2>/dev/null
import sys, urllib.request
print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=2).read().decode())
PY
        ) || return 1
    fi
    [[ "$body" == *OK* ]]
}

start() {
    [[ -n "$port" ]] || usage
    [[ -n "$launcher" && -x "$launcher" ]] || {
        echo "milvus-server not found; install it: python3 -m venv /tmp/milvus-venv &&" \
            "/tmp/milvus-venv/bin/pip install milvus==2.3.5 (or set MILVUS_SERVER_BIN)" >&2
        exit 1
    }
    mkdir -p "$dir"
    local old
    old=$(read_pid)
    if alive "$old"; then
        echo "milvus already running (pid $old, dir $dir)" >&2
        exit 1
    fi
    if port_open "$port"; then
        echo "port $port is already in use; pick another" >&2
        exit 1
    fi
    # Growing segments searched exactly, not through the interim IVF index that loses recall
    # under filters on 2.3.x (docs/scaling.md); override with the variable.
    export QUERYNODE_SEGCORE_INTERIMINDEX_ENABLEINDEX="${QUERYNODE_SEGCORE_INTERIMINDEX_ENABLEINDEX:-false}"
    # setsid: the server does not receive the terminal's signals; only `stop` ends it.
    setsid "$launcher" --data "$dir" --proxy-port "$port" >"$logfile" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$pidfile"
    local deadline=$((SECONDS + timeout_s)) child=""
    while ((SECONDS < deadline)); do
        if ! alive "$pid"; then
            echo "milvus-server exited during start; see $logfile and $dir/logs/" >&2
            tail -20 "$logfile" >&2 || true
            rm -f "$pidfile"
            exit 1
        fi
        [[ -n "$child" ]] || child=$(server_child "$pid")
        if [[ -n "$child" ]] && port_open "$port" && healthz_ok "$child"; then
            echo "milvus ready on 127.0.0.1:$port (launcher pid $pid, server pid $child)"
            return 0
        fi
        sleep 0.5
    done
    echo "milvus did not become ready on port $port within ${timeout_s}s; stopping it" >&2
    stop
    exit 1
}

stop() {
    local pid child
    pid=$(read_pid)
    if ! alive "$pid"; then
        echo "milvus not running (no live pid in $pidfile)"
        rm -f "$pidfile"
        return 0
    fi
    child=$(server_child "$pid")
    kill -INT "$pid"
    local deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)) && { alive "$pid" || alive "$child"; }; do
        sleep 0.2
    done
    if alive "$pid" || alive "$child"; then
        echo "milvus (pid $pid/$child) still alive 60s after SIGINT" >&2
        exit 1
    fi
    rm -f "$pidfile"
    echo "milvus stopped"
}

status() {
    local pid
    pid=$(read_pid)
    if alive "$pid"; then
        echo "running (pid $pid)"
    else
        echo "not running"
        return 1
    fi
}

case "$cmd" in
start) start ;;
stop) stop ;;
status) status ;;
*) usage ;;
esac
