"""Writes tables in the formats Flotilla reads, with the tools their users write them with:
pyarrow.orc for ORC files, delta-rs's Python package (`deltalake`) for Delta Lake tables,
pyiceberg (with its SQL catalog on SQLite) for Iceberg tables.

    write.py orc --parquet DIR --out DIR      TPC-H (the Parquet files of gen-data) as ORC
    write.py delta --parquet DIR --out DIR    TPC-H as Delta tables (orders and lineitem
                                              partitioned)
    write.py iceberg --parquet DIR --out DIR  TPC-H as Iceberg v2 tables (orders partitioned by
                                              o_orderstatus, hidden)
    write.py iceberg-changes --out DIR --answers FILE
        the Iceberg table DIR/events written, appended to, deleted from and overwritten; then,
        for each snapshot, count(*) and sum(x) as pyiceberg reads it, and its time
    write.py changes --out DIR --answers FILE [--commits 8] [--pause-ms 300]
        the Delta table DIR/events changed commit after commit (appends, overwrites, deletes:
        CHANGES) up to version COMMITS - 1, continuing from its current version; then, for each
        version, count(*) and sum(x) as deltalake reads that version, and its commit time

With --parquet, each table goes to OUT/<table>/ and OUT/_DONE is written last, so a
half-written directory is never taken for a finished one.
"""

import argparse
import json
import os
import sys
import time

import deltalake
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.orc as orc
import pyarrow.parquet as pq

# Partition columns of the TPC-H tables written as Delta tables.
DELTA_PARTITIONS = {"orders": ["o_orderstatus"], "lineitem": ["l_returnflag"]}


def tables(parquet):
    """The tables under PARQUET, their view types (which ORC has not) read as plain ones."""
    for name in sorted(os.listdir(parquet)):
        path = os.path.join(parquet, name)
        if os.path.isdir(path):
            table = pq.read_table(path)
            plain = pa.schema([pa.field(field.name, plain_type(field.type), field.nullable)
                               for field in table.schema])
            yield name, table.cast(plain)


def plain_type(data_type):
    if pa.types.is_string_view(data_type):
        return pa.string()
    if pa.types.is_binary_view(data_type):
        return pa.binary()
    return data_type


def write_orc(args):
    for name, table in tables(args.parquet):
        os.makedirs(os.path.join(args.out, name), exist_ok=True)
        orc.write_table(table, os.path.join(args.out, name, "part-0.orc"), compression="zstd")


def write_delta(args):
    for name, table in tables(args.parquet):
        deltalake.write_deltalake(os.path.join(args.out, name), table,
                                  partition_by=DELTA_PARTITIONS.get(name))


def events(start, count):
    """Rows x = start..start+count, in 4 partitions by k."""
    x = pa.array(range(start, start + count), pa.int64())
    return pa.table({"x": x, "k": pc.cast(pc.remainder(x, 4), pa.string())})


# The commits of `changes`, in order: what each does to the table.
CHANGES = [
    ("create", lambda t: deltalake.write_deltalake(t, events(0, 1000), partition_by=["k"])),
    ("append", lambda t: deltalake.write_deltalake(t, events(1000, 500), mode="append")),
    ("delete a third", lambda t: deltalake.DeltaTable(t).delete("x % 3 = 0")),
    ("overwrite a partition", lambda t: deltalake.write_deltalake(
        t, events(5000, 40).filter(pc.equal(events(5000, 40)["k"], "1")), mode="overwrite",
        predicate="k = '1'")),
    ("append", lambda t: deltalake.write_deltalake(t, events(2000, 300), mode="append")),
    ("delete a partition", lambda t: deltalake.DeltaTable(t).delete("k = '2'")),
    ("overwrite all", lambda t: deltalake.write_deltalake(t, events(7000, 200), mode="overwrite")),
    ("append", lambda t: deltalake.write_deltalake(t, events(9000, 100), mode="append")),
]


def answer(table, version):
    """count(*) and sum(x) of `table` at `version`, as deltalake reads it."""
    rows = deltalake.DeltaTable(table, version=version).to_pyarrow_table()
    return [rows.num_rows, pc.sum(rows["x"]).as_py()]


def iceberg_catalog(out):
    """pyiceberg's SQL catalog, on SQLite in OUT, with tables under OUT/<name>/."""
    from pyiceberg.catalog.sql import SqlCatalog

    os.makedirs(out, exist_ok=True)
    catalog = SqlCatalog("flotilla", uri=f"sqlite:///{out}/catalog.db", warehouse=f"file://{out}")
    catalog.create_namespace_if_not_exists("lake")
    return catalog


def write_iceberg(args):
    catalog = iceberg_catalog(args.out)
    for name, table in tables(args.parquet):
        created = catalog.create_table(f"lake.{name}", schema=table.schema,
                                       location=f"file://{args.out}/{name}")
        if name == "orders":
            with created.update_spec() as spec:
                spec.add_identity("o_orderstatus")
        created.append(table)


def write_iceberg_changes(args):
    from pyiceberg.expressions import EqualTo, GreaterThanOrEqual

    catalog = iceberg_catalog(args.out)
    table = catalog.create_table("lake.events", schema=events(0, 1).schema,
                                 location=f"file://{args.out}/events")
    table.append(events(0, 1000))
    table.append(events(1000, 500))
    table.delete(GreaterThanOrEqual("x", 1200))
    table.delete(EqualTo("k", "2"))
    table.overwrite(events(7000, 200))
    table.append(events(9000, 100))
    table = catalog.load_table("lake.events")
    answers = []
    for snapshot in table.snapshots():
        rows = table.scan(snapshot_id=snapshot.snapshot_id).to_arrow()
        answers.append({"version": snapshot.snapshot_id, "timestamp_ms": snapshot.timestamp_ms,
                        "answer": [rows.num_rows, pc.sum(rows["x"]).as_py() or 0]})
    with open(args.answers, "w") as out:
        json.dump(answers, out)


def write_changes(args):
    table = os.path.join(args.out, "events")
    start = deltalake.DeltaTable(table).version() + 1 if os.path.isdir(table) else 0
    for _, change in CHANGES[start:args.commits]:
        change(table)
        time.sleep(args.pause_ms / 1000)
    history = {entry["version"]: entry["timestamp"] for entry in deltalake.DeltaTable(table).history()}
    answers = [{"version": version, "change": name, "answer": answer(table, version),
                "timestamp_ms": history[version]}
               for version, (name, _) in enumerate(CHANGES[:args.commits])]
    with open(args.answers, "w") as out:
        json.dump(answers, out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["orc", "delta", "iceberg", "changes", "iceberg-changes"])
    parser.add_argument("--parquet")
    parser.add_argument("--out", required=True)
    parser.add_argument("--answers")
    parser.add_argument("--commits", type=int, default=len(CHANGES))
    parser.add_argument("--pause-ms", type=int, default=300)
    args = parser.parse_args()
    if args.mode in ("changes", "iceberg-changes"):
        {"changes": write_changes, "iceberg-changes": write_iceberg_changes}[args.mode](args)
        return
    {"orc": write_orc, "delta": write_delta, "iceberg": write_iceberg}[args.mode](args)
    open(os.path.join(args.out, "_DONE"), "w").close()


if __name__ == "__main__":
    main()
    # Everything is written and closed: skip the interpreter's teardown, which native threads
    # (delta-rs's runtime, pyarrow's pools) have aborted once under load ("terminate called
    # without an active exception"), failing a run whose work was done.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
