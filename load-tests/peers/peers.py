"""Measures one Flight SQL system through ADBC's Flight SQL driver (its Python DBAPI), the same
way for every system: Flotilla's Flight SQL front door, Sail (`sail flight server`) and
DataFusion Ballista (its scheduler started with `--flight-sql`). One system at a time; the
`run` script next to this file starts each and passes its address.

    peers.py --name NAME --uri grpc://127.0.0.1:PORT --data DIR --queries DIR --out FILE
             [--dialect none|spark|datafusion] [--sequential 300] [--clients 8] [--seconds 10]
             [--tpch DIR] [--kill-pid PID] [--kill-at 3] [--header NAME=VALUE ...]

Figures: the trivial statement (`SELECT 1`) sequential p50/p99 and its q/s with N client
threads; the same for the short mix (the files of --queries, in turn); with --tpch, the 22
TPC-H queries once each and their total; with --kill-pid, the short mix again with N clients
while that process (the coordinator) is SIGKILLed at --kill-at seconds: answers and errors
after the kill, and the time to the first answer after it. Every answer of a statement must
equal its first one (rows, in order when the statement orders them).

--dialect says how tables are registered on each connection: `none` (Flotilla: its catalog
already lists them), `spark` (Sail: CREATE TABLE ... USING parquet LOCATION), `datafusion`
(Ballista: CREATE EXTERNAL TABLE ... STORED AS PARQUET LOCATION).
"""

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql

TABLES = ["nation", "region", "part", "supplier", "partsupp", "customer", "orders", "lineitem"]


def setup_statements(dialect, data):
    if dialect == "spark":
        return ["CREATE TABLE IF NOT EXISTS %s USING parquet LOCATION '%s/%s'" % (t, data, t) for t in TABLES]
    if dialect == "datafusion":
        return ["CREATE EXTERNAL TABLE IF NOT EXISTS %s STORED AS PARQUET LOCATION '%s/%s/'" % (t, data, t)
                for t in TABLES]
    return []


def load_queries(directory):
    files = sorted(name for name in os.listdir(directory) if name.endswith(".sql"))
    return [(name, open(os.path.join(directory, name)).read()) for name in files]


class Client:
    """One ADBC connection with one cursor, its tables registered."""

    def __init__(self, args):
        headers = dict(header.split("=", 1) for header in args.header)
        db_kwargs = {"adbc.flight.sql.rpc.call_header." + name: value for name, value in headers.items()}
        self.conn = flight_sql.connect(args.uri, db_kwargs=db_kwargs, autocommit=True)
        self.cursor = self.conn.cursor()
        for statement in setup_statements(args.dialect, args.data):
            self.cursor.execute(statement)
            self.cursor.fetch_arrow_table()

    def run(self, sql):
        self.cursor.execute(sql)
        return self.cursor.fetch_arrow_table()

    def close(self):
        for closing in (self.cursor.close, self.conn.close):
            try:
                closing()
            except Exception:  # noqa: BLE001 - a killed server may refuse the goodbye
                pass


class Answers:
    """The first answer of each statement; later ones must equal it."""

    def __init__(self):
        self.first, self.lock = {}, threading.Lock()

    def check(self, name, table):
        rows = table.to_pylist()
        with self.lock:
            expected = self.first.setdefault(name, rows)
        return rows == expected


def percentile(samples, fraction):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else None


def sequential(args, answers, queries):
    """`args.sequential` statements in a row on one connection; the latencies of the answered
    ones (an error is counted, with its first words, and the run goes on)."""
    client = Client(args)
    latencies, wrong, errors = [], 0, {}
    try:
        for index in range(args.sequential):
            name, sql = queries[index % len(queries)]
            started = time.perf_counter()
            try:
                table = client.run(sql)
            except Exception as error:  # noqa: BLE001 - every driver error counts
                errors.setdefault(name, [0, str(error)[:200]])[0] += 1
                continue
            latencies.append((time.perf_counter() - started) * 1e3)
            wrong += not answers.check(name, table)
    finally:
        client.close()
    return {"p50_ms": round(statistics.median(latencies), 3) if latencies else None,
            "p99_ms": percentile(latencies, 0.99) and round(percentile(latencies, 0.99), 3),
            "wrong": wrong, "errors": sum(count for count, _ in errors.values()),
            "first_errors": {name: message for name, (_, message) in errors.items()}}


def closed_loop(args, answers, queries, seconds, on_tick=None):
    """N threads, each with its own connection, for `seconds`; returns counts and the times of
    each answer and error (seconds from the start)."""
    clients = [Client(args) for _ in range(args.clients)]
    done, errors, wrong = [], [], [0]
    lock = threading.Lock()
    start = time.monotonic()
    deadline = start + seconds

    def work(index, client):
        sent = index
        while time.monotonic() < deadline:
            name, sql = queries[sent % len(queries)]
            sent += 1
            try:
                table = client.run(sql)
            except Exception as error:  # noqa: BLE001 - every driver error counts
                with lock:
                    errors.append((time.monotonic() - start, str(error)[:200]))
                time.sleep(0.01)
                continue
            ok = answers.check(name, table)
            with lock:
                done.append(time.monotonic() - start)
                wrong[0] += not ok

    threads = [threading.Thread(target=work, args=(i, c)) for i, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    if on_tick:
        on_tick(start)
    for thread in threads:
        thread.join(timeout=seconds + 120)
    for client in clients:
        client.close()
    return {"answers": len(done), "qps": round(len(done) / seconds, 1), "errors": len(errors),
            "wrong": wrong[0], "first_errors": sorted(set(e for _, e in errors))[:5],
            "_done": done, "_errors": [t for t, _ in errors]}


def public(result):
    return {key: value for key, value in result.items() if not key.startswith("_")}


def tpch(args, directory):
    client = Client(args)
    total, failed = 0.0, {}
    try:
        for number in range(1, 23):
            sql = open(os.path.join(directory, "q%02d.sql" % number)).read()
            started = time.perf_counter()
            try:
                client.run(sql)
                total += time.perf_counter() - started
            except Exception as error:  # noqa: BLE001
                failed["q%02d" % number] = str(error)[:200]
    finally:
        client.close()
    return {"total_s": round(total, 3), "failed": failed}


def kill_under_load(args, answers, mix):
    killed_at = [None]

    def kill(start):
        time.sleep(max(0.0, start + args.kill_at - time.monotonic()))
        os.kill(args.kill_pid, signal.SIGKILL)
        killed_at[0] = time.monotonic() - start

    result = closed_loop(args, answers, mix, args.seconds, on_tick=kill)
    at = killed_at[0]
    after = [t for t in result["_done"] if t > at]
    return {**public(result), "killed_at_s": round(at, 3), "answers_after_kill": len(after),
            "errors_after_kill": len([t for t in result["_errors"] if t > at]),
            "first_answer_after_kill_s": round(min(after) - at, 3) if after else None}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--uri", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--queries", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dialect", choices=["none", "spark", "datafusion"], default="none")
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--tpch")
    parser.add_argument("--kill-pid", type=int)
    parser.add_argument("--kill-at", type=float, default=3)
    parser.add_argument("--header", action="append", default=[],
                        help="NAME=VALUE sent with every call (cache-control=no-cache)")
    args = parser.parse_args()
    if not args.uri.startswith(("grpc://127.0.0.1:", "grpc://localhost:")):
        sys.exit("refusing a system that is not on loopback: " + args.uri)
    answers = Answers()
    trivial = [("trivial", "SELECT 1")]
    mix = load_queries(args.queries)
    report = {"name": args.name, "clients": args.clients, "seconds": args.seconds}
    report["trivial_sequential"] = sequential(args, answers, trivial)
    report["trivial_clients"] = public(closed_loop(args, answers, trivial, args.seconds))
    report["mix_sequential"] = sequential(args, answers, mix)
    report["mix_clients"] = public(closed_loop(args, answers, mix, args.seconds))
    if args.tpch:
        report["tpch"] = tpch(args, args.tpch)
    if args.kill_pid:
        report["kill"] = kill_under_load(args, answers, mix)
    json.dump(report, open(args.out, "w"), indent=1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
