"""The same short queries over HTTP (Arrow IPC, read with pyarrow) and over Flight SQL (ADBC's
driver through its DBAPI: one cursor cycling through the queries, which prepares each text anew,
and one cursor per query text, which prepares once), against one federation, in one run: sequential latency, then
throughput with N client threads, alternating the two front doors so that machine noise hits
both alike. Every answer is compared with the first answer of its query over HTTP.

    flight_sql_vs_http.py --http URL --flight grpc://HOST:PORT --queries DIR
                          [--rounds 4] [--sequential 100] [--clients 8] [--seconds 10]
                          [--out FILE]
"""

import argparse
import json
import os
import statistics
import threading
import time
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa


def load_queries(directory):
    files = sorted(name for name in os.listdir(directory) if name.endswith(".sql"))
    return [(name, open(os.path.join(directory, name)).read()) for name in files]


class Http:
    name = "http"

    def __init__(self, url):
        self.url = url.rstrip("/") + "/v1/query"

    def run(self, sql):
        request = urllib.request.Request(
            self.url, data=sql.encode(), headers={"content-type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return pa.ipc.open_stream(response).read_all()

    def close(self):
        pass


class Adbc:
    name = "flight_sql"

    def __init__(self, uri):
        self.conn = flight_sql.connect(uri, autocommit=True)
        self.cursor = self.conn.cursor()

    def run(self, sql):
        self.cursor.execute(sql)
        return self.cursor.fetch_arrow_table()

    def close(self):
        self.cursor.close()
        self.conn.close()


class AdbcPrepared(Adbc):
    """ADBC with one cursor per query text: the DBAPI prepares a text once per cursor and runs
    the prepared statement again after that (as a dashboard repeating its queries would)."""

    name = "flight_sql_prepared"

    def __init__(self, uri):
        self.conn = flight_sql.connect(uri, autocommit=True)
        self.cursors = {}

    def run(self, sql):
        cursor = self.cursors.get(sql)
        if cursor is None:
            cursor = self.cursors[sql] = self.conn.cursor()
        cursor.execute(sql)
        return cursor.fetch_arrow_table()

    def close(self):
        for cursor in self.cursors.values():
            cursor.close()
        self.conn.close()


def canonical(table):
    return sorted(map(repr, table.to_pylist()))


def server_phases(url):
    """Mean seconds per phase and front door, as the gateway measured them (all queries so
    far): what the gateway adds, apart from what the clients cost."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=30) as response:
        text = response.read().decode()
    sums, counts = {}, {}
    for line in text.splitlines():
        if not line.startswith("flotilla_gateway_query_phase_seconds_"):
            continue
        series, value = line.rsplit(" ", 1)
        labels = dict(
            pair.split("=", 1) for pair in series[series.index("{") + 1 : -1].split(",")
        )
        key = (labels["protocol"].strip('"'), labels["phase"].strip('"'))
        if series.startswith("flotilla_gateway_query_phase_seconds_sum"):
            sums[key] = float(value)
        elif series.startswith("flotilla_gateway_query_phase_seconds_count"):
            counts[key] = float(value)
    return {
        "%s %s" % key: round(1e3 * sums[key] / counts[key], 2)
        for key in sorted(sums)
        if counts.get(key)
    }


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def sequential(client, queries, count, answers, wrong):
    latencies = []
    for index in range(count):
        name, sql = queries[index % len(queries)]
        started = time.perf_counter()
        table = client.run(sql)
        latencies.append(time.perf_counter() - started)
        if canonical(table) != answers[name]:
            wrong.append((client.name, name))
    return latencies


def throughput(make, queries, clients, seconds, answers, wrong):
    done, errors = [0] * clients, []
    deadline = time.monotonic() + seconds

    def worker(slot):
        client = make()
        try:
            index = slot
            while time.monotonic() < deadline:
                name, sql = queries[index % len(queries)]
                index += 1
                try:
                    table = client.run(sql)
                except Exception as error:  # noqa: BLE001 - counted and reported
                    errors.append(str(error)[:200])
                    continue
                if canonical(table) != answers[name]:
                    wrong.append((client.name, name))
                done[slot] += 1
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    return sum(done) / (time.monotonic() - started), errors


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", required=True)
    parser.add_argument("--flight", required=True)
    parser.add_argument("--queries", required=True)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--sequential", type=int, default=100)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--out")
    args = parser.parse_args()
    queries = load_queries(args.queries)
    http = Http(args.http)
    answers = {name: canonical(http.run(sql)) for name, sql in queries}
    makers = {
        "http": lambda: Http(args.http),
        "flight_sql": lambda: Adbc(args.flight),
        "flight_sql_prepared": lambda: AdbcPrepared(args.flight),
    }
    # Warm both paths (connections, shard caches) before measuring.
    for make in makers.values():
        client = make()
        sequential(client, queries, len(queries) * 2, answers, [])
        client.close()
    latencies = {name: [] for name in makers}
    rates = {name: [] for name in makers}
    errors = {name: [] for name in makers}
    wrong = []
    for round_number in range(args.rounds):
        order = list(makers) if round_number % 2 == 0 else list(reversed(list(makers)))
        for name in order:
            client = makers[name]()
            latencies[name] += sequential(client, queries, args.sequential, answers, wrong)
            client.close()
        for name in order:
            rate, failed = throughput(makers[name], queries, args.clients, args.seconds, answers, wrong)
            rates[name].append(rate)
            errors[name] += failed
        print(
            "round %d: " % (round_number + 1)
            + ", ".join("%s %.0f q/s" % (name, rates[name][-1]) for name in makers),
            flush=True,
        )
    report = {"queries": [name for name, _ in queries], "clients": args.clients, "wrong": wrong}
    for name in makers:
        values = latencies[name]
        report[name] = {
            "sequential_queries": len(values),
            "p50_ms": 1e3 * percentile(values, 0.50),
            "p90_ms": 1e3 * percentile(values, 0.90),
            "p99_ms": 1e3 * percentile(values, 0.99),
            "mean_ms": 1e3 * statistics.fmean(values),
            "throughput_qps": rates[name],
            "throughput_qps_median": statistics.median(rates[name]),
            "errors": len(errors[name]),
            "first_errors": errors[name][:3],
        }
    report["gateway_mean_phase_ms"] = server_phases(args.http)
    print(json.dumps(report, indent=1))
    if args.out:
        json.dump(report, open(args.out, "w"), indent=1)
    if wrong or any(report[name]["errors"] for name in makers):
        raise SystemExit("wrong answers or errors: see the report")


if __name__ == "__main__":
    main()
