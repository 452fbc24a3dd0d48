# Shared by the scenario scripts: build the release binaries, start a `local` federation (or
# use --url), read its federation.json, and stop only what was started, by PID.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT_DIR="$ROOT/load-tests/out"
AGENT="$ROOT/target/release/cluster-agent"
LOAD="$ROOT/target/release/flotilla-load"
LOCAL_PID=""

build() {
    echo "building release binaries (first time: about 30 min on 2 cores)..."
    (cd "$ROOT" && cargo build --release -q -p cluster-agent && cargo build --release -q -p flotilla-load)
}

# start_local SCALE PORT: starts `cluster-agent local` in the background; sets URL, FEDERATION.
start_local() {
    local scale="$1" port="$2"
    local data="$ROOT/data/tpch-sf$scale"
    FEDERATION="$data/local/federation.json"
    URL="http://127.0.0.1:$port"
    mkdir -p "$OUT_DIR"
    rm -f "$FEDERATION"
    "$AGENT" local --scale "$scale" --data-dir "$data" --http "127.0.0.1:$port" --flight 127.0.0.1:0 \
        >"$OUT_DIR/local.log" 2>&1 &
    LOCAL_PID=$!
    trap stop_local EXIT
    local waited=0
    until [ -s "$FEDERATION" ] && grep -q "Serving" "$OUT_DIR/local.log"; do
        if ! kill -0 "$LOCAL_PID" 2>/dev/null; then
            echo "local federation failed to start; see $OUT_DIR/local.log" >&2
            exit 1
        fi
        if [ "$waited" -ge 600 ]; then
            echo "local federation not up after 300 s; see $OUT_DIR/local.log" >&2
            exit 1
        fi
        sleep 0.5
        waited=$((waited + 1))
    done
    echo "local federation up at $URL (pid $LOCAL_PID; log $OUT_DIR/local.log)"
}

# use_running FILE: uses the running federation described by FILE (a `local` run's
# federation.json); sets URL and FEDERATION. Nothing is started, so nothing is stopped.
use_running() {
    FEDERATION="$1"
    [ -s "$FEDERATION" ] || { echo "no federation at $FEDERATION" >&2; exit 1; }
    URL="$(awk '$1 == "\"gateway\":" { gsub(/[",]/, "", $2); print $2; exit }' "$FEDERATION")"
    mkdir -p "$OUT_DIR"
    echo "using the running federation at $URL ($FEDERATION)"
}

stop_local() {
    if [ -n "$LOCAL_PID" ] && kill -0 "$LOCAL_PID" 2>/dev/null; then
        kill -TERM "$LOCAL_PID"
        wait "$LOCAL_PID" 2>/dev/null || true
        echo "local federation stopped"
    fi
}

# node_field NAME FIELD: reads `pid`, or an address key (`grpc`, `admin`, `gossip`, `http`), of
# a node in federation.json (pretty-printed: one node object per 4-space-indented block).
node_field() {
    local name="$1" field="$2"
    awk -v name="$name" -v field="$field" '
        /^    [{]/ { delete values }
        /^ +"[a-z_]+": / {
            key = $1; gsub(/[":]/, "", key)
            value = $2; gsub(/[",]/, "", value)
            values[key] = value
        }
        /^    [}]/ { if (values["name"] == name) { print values[field]; exit } }
    ' "$FEDERATION"
}

# rss_kb PID: resident set size in KiB (0 when the process is gone).
rss_kb() {
    awk '/^VmRSS:/ { print $2; found = 1 } END { if (!found) print 0 }' "/proc/$1/status" 2>/dev/null || echo 0
}

# watch_rss FILE PID...: samples each PID's RSS every 100 ms into FILE (`ms pid kib` lines)
# until killed; prints its own PID.
watch_rss() {
    local file="$1"
    shift
    (
        local started
        started=$(date +%s%N)
        while true; do
            local now=$((($(date +%s%N) - started) / 1000000))
            for pid in "$@"; do
                echo "$now $pid $(rss_kb "$pid")"
            done
            sleep 0.1
        done
    ) >"$file" &
    echo $!
}

# rss_summary FILE PID NAME: `NAME: at rest X MiB, peak Y MiB (+Z MiB)` from watch_rss output.
rss_summary() {
    awk -v pid="$2" -v name="$3" '
        $2 == pid { if (first == "") first = $3; if ($3 > peak) peak = $3 }
        END { printf "%-10s at rest %7.1f MiB, peak %7.1f MiB (+%.1f MiB)\n", name, first / 1024, peak / 1024, (peak - first) / 1024 }
    ' "$1"
}

# big_sql COPIES: every lineitem row COPIES times (about 100 MB of Arrow per copy at scale 0.1).
# warm_up COPIES: runs the short mix for 3 s and the big query's plan (LIMIT 10) on every shard,
# so that "at rest" memory already includes what planning and first queries allocate once.
warm_up() {
    local copies="$1"
    "$LOAD" --url "$URL" --rate 40 --duration 3s --queries "$ROOT/sql-samples/short" --quiet >/dev/null
    for _ in 1 2 3 4 5 6; do
        curl -sS -o /dev/null "$URL/v1/query" --data-binary "SELECT * FROM ($(big_sql "$copies")) LIMIT 10"
    done
}

big_sql() {
    local copies="$1" values=""
    for i in $(seq 1 "$copies"); do values="$values${values:+,}($i)"; done
    echo "SELECT l.*, t.k FROM lineitem l CROSS JOIN (VALUES $values) AS t(k)"
}
