#!/usr/bin/env bash
# CPU seconds (user + system, from /proc) that a `local` federation's five processes spend on a
# fixed amount of work, for comparing two builds where wall-clock noise is larger than the
# difference (PERFORMANCE.md, "The cost of the memory guard"):
#   trivial: 4,000 x `SELECT count(*) FROM nation`, 4 clients, SF0.1;
#   tpch:    the 22 TPC-H queries twice, 1 client, SF1.
#
#   load-tests/scripts/cpu-cost.sh BINARY LABEL [DATA_ROOT]
#
# BINARY is a `cluster-agent`; run it alternately for the builds compared (ABBA). Data is
# generated under DATA_ROOT (default data/) on first use. Prints one line per workload:
#   LABEL trivial cpu_s=... wall_s=... user_s=... sys_s=... minflt=...
# Set SKIP_TRIVIAL=1 for the TPC-H part only, SKIP_TPCH=1 for the trivial part only. Loopback only; stops what it started, by PID.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
BIN="$1"; LABEL="$2"; DATA="${3:-$ROOT/data}"
LOAD="$ROOT/target/release/flotilla-load"
[ -x "$LOAD" ] || (cd "$ROOT" && cargo build --release -q -p flotilla-load)
WORK="$(mktemp -d -t flotilla-cpu-cost.XXXXXX)"
LPID=""
cleanup() {
    if [ -n "$LPID" ] && kill -0 "$LPID" 2>/dev/null; then kill -TERM "$LPID"; wait "$LPID" || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
echo "SELECT count(*) FROM nation" >"$WORK/trivial.sql"

# ticks FEDERATION_JSON FIELD: the sum over its members of a /proc/<pid>/stat field
# (utime, stime or minflt).
ticks() {
    python3 - "$1" "$2" <<'PY'
import json, sys
index = {"utime": 11, "stime": 12, "minflt": 7}[sys.argv[2]]
total = 0
for node in json.load(open(sys.argv[1]))["nodes"]:
    try:
        fields = open(f"/proc/{node['pid']}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[index])
    except FileNotFoundError:
        pass
print(total)
PY
}

# run SCALE PORT REQUESTS CLIENTS QUERIES NAME
run() {
    local data="$DATA/tpch-sf$1" federation
    federation="$data/local/federation.json"
    rm -f "$federation"
    "$BIN" local --scale "$1" --data-dir "$data" --http "127.0.0.1:$2" --flight 127.0.0.1:0 \
        >"$WORK/local.log" 2>&1 &
    LPID=$!
    for _ in $(seq 1 900); do [ -s "$federation" ] && break; sleep 1; done
    [ -s "$federation" ] || { echo "local did not come up; see $WORK/local.log" >&2; exit 1; }
    "$LOAD" --url "http://127.0.0.1:$2" --clients "$4" --requests 50 --queries "$5" --quiet >/dev/null
    local u0 s0 f0 t0 u1 s1 f1 t1
    u0=$(ticks "$federation" utime); s0=$(ticks "$federation" stime); f0=$(ticks "$federation" minflt)
    t0=$(date +%s.%N)
    "$LOAD" --url "http://127.0.0.1:$2" --clients "$4" --requests "$3" --queries "$5" --quiet >/dev/null
    t1=$(date +%s.%N)
    u1=$(ticks "$federation" utime); s1=$(ticks "$federation" stime); f1=$(ticks "$federation" minflt)
    python3 -c "
hz = 100
u, s = ($u1 - $u0) / hz, ($s1 - $s0) / hz
print('$LABEL $6 cpu_s=%.2f wall_s=%.2f user_s=%.2f sys_s=%.2f minflt=%d' % (u + s, $t1 - $t0, u, s, $f1 - $f0))"
    kill -TERM "$LPID"; wait "$LPID" || true; LPID=""
}

[ -n "${SKIP_TRIVIAL:-}" ] || run 0.1 18090 4000 4 "$WORK/trivial.sql" trivial
[ -n "${SKIP_TPCH:-}" ] || run 1 18092 44 1 "$ROOT/sql-samples/tpch" tpch
