#!/usr/bin/env python3
"""Real processes on one machine: for each N, `cluster-agent local` with N TaskManagers of one
slot, 4 shards and a second gateway, then

  1. waits until every shard can choose every TaskManager (time to converge);
  2. idles 20 s: CPU (% of one core) and loopback bytes/s per process, UDP datagrams/s,
     the largest datagram's bound, IP fragments created;
  3. runs 3,000 trivial queries (flotilla-load, 4 clients): shard CPU per query (less the
     shards' idle CPU over the same time), p50/p99;
  4. runs the short mix (`cluster-agent bench short --flotilla-only`, every answer checked
     against in-process DataFusion) for 20 s and kills 10 % of the TaskManagers with SIGKILL
     5 s in: wrong answers, errors, and how long until no shard chooses a killed one.

Usage: load-tests/scripts/scale.py [N ...]   (default 8 50 100 200; results in
load-tests/out/scale.json and a table on stdout). Stops only the processes it started.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "target/release/cluster-agent"
LOAD = ROOT / "target/release/flotilla-load"
OUT = ROOT / "load-tests/out"
DATA = ROOT / "data/tpch-sf0.01"
PORT = 18080
TICKS = os.sysconf("SC_CLK_TCK")


def get_json(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def cpu_seconds(pid):
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except OSError:
        return 0.0


def loopback_bytes():
    for line in Path("/proc/net/dev").read_text().splitlines():
        if line.strip().startswith("lo:"):
            return int(line.split(":", 1)[1].split()[8])
    return 0


def snmp(table, field):
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    for header, values in zip(lines, lines[1:]):
        if header[0] == f"{table}:" and values[0] == f"{table}:":
            return int(values[header.index(field)])
    return 0


def counters(pids):
    return {
        "cpu": {pid: cpu_seconds(pid) for pid in pids},
        "lo": loopback_bytes(),
        "udp_out": snmp("Udp", "OutDatagrams"),
        "frags": snmp("Ip", "FragCreates"),
        "at": time.monotonic(),
    }


def shard_state(admin, query=""):
    return get_json(f"http://{admin}/v1/state{query}")


def wait_for(what, timeout, check):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout} s waiting for {what}")


def run(n, processes):
    run_dir = DATA / "local"
    federation = run_dir / "federation.json"
    if federation.exists():
        federation.unlink()
    log = open(OUT / f"scale-local-{n}.log", "w")
    started = time.monotonic()
    local = subprocess.Popen(
        [str(AGENT), "local", "--scale", "0.01", "--taskmanagers", str(n), "--slots", "1",
         "--shards", "4", "--http", f"127.0.0.1:{PORT}", "--flight", "127.0.0.1:0",
         "--data-dir", str(DATA)],
        stdout=log, stderr=subprocess.STDOUT)
    processes.append(local)
    wait_for("federation.json", 600, federation.exists)
    nodes = json.loads(federation.read_text())["nodes"]
    shards = [node["addresses"]["admin"] for node in nodes if node["role"] == "jobmanager"]
    wait_for(f"every shard to choose {n} TaskManagers", 300, lambda: all(
        shard_state(admin)["taskmanagers"]["counts"]["up"] == n for admin in shards))
    converged = time.monotonic() - started
    second = subprocess.Popen(
        [str(AGENT), "gateway", "--config", str(run_dir / "gateway.toml"),
         "--set", 'http.listen="127.0.0.1:0"', "--set", 'flight.listen="127.0.0.1:0"',
         "--set", 'gossip.listen="127.0.0.1:0"'],
        stdout=subprocess.PIPE, stderr=open(OUT / f"scale-gateway2-{n}.log", "w"), text=True)
    processes.append(second)
    line = second.stdout.readline()
    http = re.search(r"http=(\S+)", line)
    if not http:
        raise SystemExit(f"the second gateway did not start: {line!r}")
    second_url = f"http://{http.group(1)}"
    wait_for("the second gateway", 60, lambda: get_json(f"{second_url}/readyz")["ready"])
    nodes = json.loads(federation.read_text())["nodes"]
    roles = {node["pid"]: node["role"] for node in nodes}
    roles[second.pid] = "gateway"
    pids = list(roles)

    time.sleep(5)
    before = counters(pids)
    time.sleep(20)
    after = counters(pids)
    seconds = after["at"] - before["at"]
    idle = {}
    for role in ("taskmanager", "jobmanager", "gateway"):
        members = [pid for pid in pids if roles[pid] == role]
        cpu = sum(after["cpu"][pid] - before["cpu"][pid] for pid in members)
        idle[role] = 100 * cpu / seconds / len(members)
    idle_all = 100 * sum(after["cpu"][pid] - before["cpu"][pid] for pid in pids) / seconds
    lo = (after["lo"] - before["lo"]) / seconds
    udp = (after["udp_out"] - before["udp_out"]) / seconds
    frags = after["frags"] - before["frags"]

    shard_pids = [pid for pid in pids if roles[pid] == "jobmanager"]
    idle_shard_rate = sum(after["cpu"][pid] - before["cpu"][pid] for pid in shard_pids) / seconds
    shard_cpu = sum(cpu_seconds(pid) for pid in shard_pids)
    load_started = time.monotonic()
    load = subprocess.run(
        [str(LOAD), "--url", f"http://127.0.0.1:{PORT}", "--clients", "4", "--requests", "3000",
         "--sql", "SELECT count(*) FROM nation", "--quiet", "--out", str(OUT / f"scale-load-{n}.json")],
        capture_output=True, text=True)
    if load.returncode != 0:
        raise SystemExit(f"flotilla-load failed: {load.stdout}{load.stderr}")
    # Less what the shards spend idle (reports, gossip, sweeps) over the same time.
    busy = sum(cpu_seconds(pid) for pid in shard_pids) - shard_cpu
    per_query_ms = 1000 * (busy - idle_shard_rate * (time.monotonic() - load_started)) / 3000
    report = json.loads((OUT / f"scale-load-{n}.json").read_text())

    taskmanagers = [node for node in nodes if node["role"] == "taskmanager"]
    victims = taskmanagers[:: max(1, len(taskmanagers) // max(1, n // 10))][: max(1, n // 10)]
    generations = {}
    for victim in victims:
        rows = shard_state(shards[0], f"?taskmanagers={victim['name']}")["taskmanagers"]["members"]
        generations[victim["name"]] = rows[0]["generation"] if rows else None
    mix = subprocess.Popen(
        [str(AGENT), "bench", "short", "--url", f"http://127.0.0.1:{PORT}", "--data-dir", str(DATA),
         "--mix", str(ROOT / "sql-samples/short"), "--flotilla-only", "--concurrency", "4",
         "--seconds", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    processes.append(mix)
    time.sleep(8)  # the mix checks every query once first, then runs 20 s
    for victim in victims:
        os.kill(victim["pid"], signal.SIGKILL)
    killed = time.monotonic()

    def passed_over():
        for admin in shards:
            up = shard_state(admin, "?taskmanagers=up&limit=1000")["taskmanagers"]["members"]
            if any(generations.get(row["id"]) == row["generation"] for row in up):
                return False
        return True

    wait_for("every shard to pass over the killed TaskManagers", 30, passed_over)
    left_after = time.monotonic() - killed
    output, _ = mix.communicate(timeout=120)
    row = re.search(r"Flotilla, 4 clients\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)", output)
    if not row:
        raise SystemExit(f"bench short failed:\n{output}")
    qps, _, _, failed, wrong = row.groups()
    answered = float(qps) * 20
    result = {
        "taskmanagers": n,
        "processes": len(pids),
        "converged_s": round(converged, 1),
        "idle_cpu_percent_per_taskmanager": round(idle["taskmanager"], 2),
        "idle_cpu_percent_per_shard": round(idle["jobmanager"], 2),
        "idle_cpu_percent_per_gateway": round(idle["gateway"], 2),
        "idle_cpu_percent_all": round(idle_all, 1),
        "loopback_bytes_per_s_per_process": round(lo / len(pids)),
        "loopback_bytes_per_s": round(lo),
        "udp_datagrams_per_s": round(udp),
        "ip_fragments_created": frags,
        "trivial_p50_ms": report["summary"]["p50_ms"],
        "trivial_p99_ms": report["summary"]["p99_ms"],
        "trivial_failed": report["summary"]["failed"],
        "shard_cpu_ms_per_query": round(per_query_ms, 3),
        "killed": len(victims),
        "killed_out_of_choice_s": round(left_after, 2),
        "mix_answers": int(answered),
        "mix_errors": int(failed),
        "mix_wrong": int(wrong),
    }
    print(json.dumps(result), flush=True)
    for process in (mix, second, local):
        stop(process)
    return result


def stop(process):
    """SIGTERM first (`local` then stops its children), SIGKILL only if it does not stop."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main():
    sizes = [int(arg) for arg in sys.argv[1:]] or [8, 50, 100, 200]
    OUT.mkdir(parents=True, exist_ok=True)
    if not (AGENT.exists() and LOAD.exists()):
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "cluster-agent"], cwd=ROOT, check=True)
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "flotilla-load"], cwd=ROOT, check=True)
    results = []
    processes = []
    try:
        for n in sizes:
            results.append(run(n, processes))
    finally:
        for process in reversed(processes):
            stop(process)
    (OUT / "scale.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
