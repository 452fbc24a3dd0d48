"""Flight SQL clients no one on this project wrote (ADBC's Go driver through its Python
DBAPI, and pyarrow.flight), driven against a running gateway by the Rust tests in
cluster-agent/tests/flight_sql/. They write what they saw as JSON and Arrow IPC files; the
Rust side checks it against in-process DataFusion.

    client.py check  --uri U --token T --busy-token B --samples DIR --out DIR
    client.py loop   --uri U --seconds S --max-queries N --samples DIR --out DIR
    client.py cancel --uri U --token T --sql-file F --out DIR
    client.py gateways --uri U --other-uri V --token T --busy-token B --out DIR
"""

import argparse
import json
import os
import re
import sys
import threading
import time

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa
import pyarrow.flight as flight

# Flotilla's stable error codes (protocol/src/error.rs), as they lead a status message.
CODES = (
    "bad_request sql_syntax sql_planning not_allowed payload_too_large unsupported_media_type "
    "not_acceptable not_found unauthorized unavailable cluster_busy tenant_queue_full "
    "query_timeout cancelled resources_exhausted result_too_large ticket_not_found "
    "data_exception execution_error internal"
).split()
CODE = re.compile(r"\b(" + "|".join(CODES) + r"): ")


def connect(uri, token=None, header=False):
    """An ADBC connection: the token by the handshake (Basic, password = token) or as a header."""
    db_kwargs = {}
    if token and header:
        db_kwargs[adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value] = (
            "Bearer " + token
        )
    elif token:
        db_kwargs["username"] = "flotilla"
        db_kwargs["password"] = token
    return flight_sql.connect(uri, db_kwargs=db_kwargs, autocommit=True)


def failure(error):
    """What a client sees of an error: the driver's status, and the stable code in the message."""
    message = str(error)
    found = CODE.search(message)
    status = getattr(error, "status_code", None)
    return {
        "type": type(error).__name__,
        "status": getattr(status, "name", str(status)),
        "code": found.group(1) if found else None,
        "message": message[:500],
    }


def run(cursor, sql, parameters=None):
    cursor.execute(sql, parameters=parameters)
    return cursor.fetch_arrow_table()


def write_table(path, table):
    with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def samples(directory):
    """The 22 TPC-H queries and the short ones, as (name, sql)."""
    queries = []
    for number in range(1, 23):
        name = "tpch/q%02d.sql" % number
        queries.append((name, open(os.path.join(directory, name)).read()))
    short = os.path.join(directory, "short")
    for file in sorted(os.listdir(short)):
        queries.append(("short/" + file, open(os.path.join(short, file)).read()))
    return queries


def varint(number):
    """A protobuf varint."""
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


def field(tag, data):
    """A protobuf length-delimited field."""
    return varint(tag << 3 | 2) + varint(len(data)) + data


def any_command(type_name, fields):
    """A Flight SQL command packed in google.protobuf.Any, encoded by hand (string fields)."""
    inner = b"".join(field(tag, value.encode()) for tag, value in fields)
    url = ("type.googleapis.com/arrow.flight.protocol.sql." + type_name).encode()
    return field(1, url) + field(2, inner)


def check(args):
    report = {}
    # Without a token: refused, with the stable code.
    try:
        with connect(args.uri) as conn, conn.cursor() as cursor:
            run(cursor, "SELECT 1")
        report["no_token"] = None
    except Exception as error:  # noqa: BLE001 - what the client sees is the point
        report["no_token"] = failure(error)
    try:
        with connect(args.uri, "not-a-token") as conn, conn.cursor() as cursor:
            run(cursor, "SELECT 1")
        report["bad_token"] = None
    except Exception as error:  # noqa: BLE001
        report["bad_token"] = failure(error)

    with connect(args.uri, args.token) as conn, conn.cursor() as cursor:
        report["info"] = {key: str(value) for key, value in conn.adbc_get_info().items()}
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        report["objects"] = [
            {
                "catalog": catalog["catalog_name"],
                "schema": schema["db_schema_name"],
                "table": table["table_name"],
                "type": table["table_type"],
                "columns": [column["column_name"] for column in table["table_columns"]],
            }
            for catalog in objects
            for schema in catalog["catalog_db_schemas"]
            for table in schema["db_schema_tables"]
        ]
        report["table_types"] = conn.adbc_get_table_types()
        schema = conn.adbc_get_table_schema("orders")
        report["orders_schema"] = [field.name for field in schema]

        names = []
        for index, (name, sql) in enumerate(samples(args.samples)):
            write_table(os.path.join(args.out, "%02d.arrow" % index), run(cursor, sql))
            names.append(name)
        report["samples"] = names

        # A parameterized query, run twice with different values, on one prepared statement.
        sql = "SELECT count(*) AS n, sum(o_totalprice) AS total FROM orders WHERE o_orderkey < $1 AND o_orderstatus = $2"
        for label, values in (("param_a", (1000, "F")), ("param_b", (30000, "O"))):
            write_table(os.path.join(args.out, label + ".arrow"), run(cursor, sql, values))
        report["params"] = {"sql": sql, "param_a": [1000, "F"], "param_b": [30000, "O"]}

        errors = {}
        for label, sql in (
            ("syntax", "SELEC 1"),
            ("planning", "SELECT * FROM no_such_table"),
            ("not_allowed", "CREATE TABLE t (a INT)"),
            ("data", "SELECT o_orderkey / (o_orderkey - o_orderkey) FROM orders"),
        ):
            try:
                run(cursor, sql)
                errors[label] = None
            except Exception as error:  # noqa: BLE001
                errors[label] = failure(error)
        errors["queue_full"] = queue_full(args)
        report["errors"] = errors
        # The connection still works after every error.
        report["after_errors"] = run(cursor, "SELECT 42 AS answer").to_pylist()

    report["pyarrow_flight"] = pyarrow_flight(args)
    json.dump(report, open(os.path.join(args.out, "report.json"), "w"), indent=1)


def queue_full(args):
    """The busy tenant may run one query and queue none: a second one while the first runs is
    refused with tenant_queue_full."""
    slow = open(args.slow_sql).read()
    first = connect(args.uri, args.busy_token)
    holding = first.cursor()

    def hold():
        try:
            run(holding, slow)
        except Exception:  # noqa: BLE001 - cancelled below
            pass

    holder = threading.Thread(target=hold)
    holder.start()
    # Long enough for the first query to be admitted (its prepare, then its execute), even on
    # a loaded machine; the query itself runs for much longer.
    time.sleep(3)
    try:
        with connect(args.uri, args.busy_token) as second, second.cursor() as cursor:
            run(cursor, "SELECT 1")
        result = None
    except Exception as error:  # noqa: BLE001
        result = failure(error)
    holding.adbc_cancel()
    holder.join(timeout=120)
    holding.close()
    first.close()
    return result


def pyarrow_flight(args):
    """pyarrow.flight: a statement's FlightInfo names no location and its ticket streams the
    result from the gateway; CancelFlightInfo ends a statement whose result waits."""
    options = flight.FlightCallOptions(headers=[(b"authorization", ("Bearer " + args.token).encode())])
    client = flight.connect(args.uri)
    sql = "SELECT n_nationkey, n_name FROM nation ORDER BY n_nationkey"
    descriptor = flight.FlightDescriptor.for_command(any_command("CommandStatementQuery", [(1, sql)]))
    info = client.get_flight_info(descriptor, options)
    endpoint = info.endpoints[0]
    table = client.do_get(endpoint.ticket, options).read_all()
    write_table(os.path.join(args.out, "pyarrow_flight.arrow"), table)
    seen = {
        "sql": sql,
        "locations": [str(location) for location in endpoint.locations],
        "schema_matches": info.schema.equals(table.schema, check_metadata=True),
        "rows": table.num_rows,
    }
    # Fetching the same ticket again: it is spent.
    try:
        client.do_get(endpoint.ticket, options).read_all()
        seen["refetch"] = None
    except Exception as error:  # noqa: BLE001 - pyarrow maps codes to several classes
        seen["refetch"] = failure(error)
    # Another caller may not fetch it: a fresh statement, fetched without the token.
    info = client.get_flight_info(descriptor, options)
    try:
        client.do_get(info.endpoints[0].ticket).read_all()
        seen["stranger"] = None
    except Exception as error:  # noqa: BLE001 - pyarrow maps codes to several classes
        seen["stranger"] = failure(error)
    # CancelFlightInfo (Flight's CancelFlightInfoRequest{info}): CANCELLED (1), then the ticket
    # is gone.
    info = client.get_flight_info(descriptor, options)
    request = field(1, info.serialize())
    results = list(client.do_action(flight.Action("CancelFlightInfo", request), options))
    seen["cancel_status"] = list(results[0].body.to_pybytes()) if results else None
    try:
        client.do_get(info.endpoints[0].ticket, options).read_all()
        seen["after_cancel"] = None
    except Exception as error:  # noqa: BLE001 - pyarrow maps codes to several classes
        seen["after_cancel"] = failure(error)
    # CloseSession: CloseSessionResult{status: CLOSED (1)}.
    results = list(client.do_action(flight.Action("CloseSession", b""), options))
    seen["close_session"] = list(results[0].body.to_pybytes()) if results else None
    client.close()
    return seen


def attempt(call):
    """None if `call` succeeds, else what the client saw of its error."""
    try:
        call()
        return None
    except Exception as error:  # noqa: BLE001 - pyarrow maps codes to several classes
        return failure(error)


def gateways(args):
    """Stateless gateways: a statement's FlightInfo asked of one gateway, its ticket fetched
    from another, through pyarrow.flight and through ADBC's partitioned reads."""
    sql = "SELECT n_regionkey, count(*) AS nations FROM nation GROUP BY n_regionkey ORDER BY n_regionkey"

    def bearer(token):
        return flight.FlightCallOptions(headers=[(b"authorization", ("Bearer " + token).encode())])

    options = bearer(args.token)
    issuer, other = flight.connect(args.uri), flight.connect(args.other_uri)
    descriptor = flight.FlightDescriptor.for_command(any_command("CommandStatementQuery", [(1, sql)]))
    seen = {"sql": sql}
    info = issuer.get_flight_info(descriptor, options)
    table = other.do_get(info.endpoints[0].ticket, options).read_all()
    write_table(os.path.join(args.out, "other_gateway.arrow"), table)
    seen["schema_matches"] = info.schema.equals(table.schema, check_metadata=True)
    # On the gateway that issued it: the result it started, spent once.
    info = issuer.get_flight_info(descriptor, options)
    ticket = info.endpoints[0].ticket
    write_table(os.path.join(args.out, "same_gateway.arrow"), issuer.do_get(ticket, options).read_all())
    seen["refetch"] = attempt(lambda: issuer.do_get(ticket, options).read_all())
    # Another tenant's caller, and a ticket with one bit changed: refused on the other gateway.
    info = issuer.get_flight_info(descriptor, options)
    ticket = info.endpoints[0].ticket
    seen["other_tenant"] = attempt(lambda: other.do_get(ticket, bearer(args.busy_token)).read_all())
    tampered = bytearray(ticket.ticket)
    tampered[-5] ^= 1
    seen["tampered"] = attempt(lambda: other.do_get(flight.Ticket(bytes(tampered)), options).read_all())
    issuer.close()
    other.close()
    # ADBC: the partitions of a statement executed on one gateway, read on the other.
    with connect(args.uri, args.token) as conn, conn.cursor() as cursor:
        partitions, schema = cursor.adbc_execute_partitions(sql)
    with connect(args.other_uri, args.token) as conn, conn.cursor() as cursor:
        cursor.adbc_read_partition(partitions[0])
        table = cursor.fetch_arrow_table()
    write_table(os.path.join(args.out, "adbc_other_gateway.arrow"), table)
    seen["adbc_partitions"] = len(partitions)
    seen["adbc_schema_matches"] = schema is None or schema.equals(table.schema)
    json.dump(seen, open(os.path.join(args.out, "gateways.json"), "w"), indent=1)


def loop(args):
    """Short queries one after another for a bounded time and count; every answer of a query
    must equal its first, which the Rust side checks against DataFusion."""
    queries = [query for query in samples(args.samples) if query[0].startswith("short/")]
    first, failures, sent = {}, [], 0
    deadline = time.monotonic() + args.seconds
    with connect(args.uri) as conn, conn.cursor() as cursor:
        while time.monotonic() < deadline and sent < args.max_queries:
            name, sql = queries[sent % len(queries)]
            sent += 1
            try:
                table = run(cursor, sql)
            except Exception as error:  # noqa: BLE001
                failures.append({"query": name, **failure(error)})
                continue
            rows = sorted(map(repr, table.to_pylist()))
            if name not in first:
                first[name] = rows
                write_table(os.path.join(args.out, "loop-%s.arrow" % name.replace("/", "_")), table)
            elif rows != first[name]:
                failures.append({"query": name, "type": "wrong answer"})
    json.dump({"sent": sent, "failures": failures, "names": sorted(first)},
              open(os.path.join(args.out, "loop.json"), "w"), indent=1)


def cancel(args):
    """Starts a long query, cancels it from another thread after 2 s, reports how it ended."""
    conn = connect(args.uri, args.token)
    cursor = conn.cursor()
    ended = {}

    def long_query():
        started = time.monotonic()
        try:
            run(cursor, open(args.sql_file).read())
            ended["error"] = None
        except Exception as error:  # noqa: BLE001
            ended["error"] = failure(error)
        ended["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=long_query)
    worker.start()
    time.sleep(2)
    cursor.adbc_cancel()
    worker.join(timeout=60)
    ended["joined"] = not worker.is_alive()
    json.dump(ended, open(os.path.join(args.out, "cancel.json"), "w"), indent=1)
    cursor.close()
    conn.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["check", "loop", "cancel", "gateways"])
    parser.add_argument("--uri", required=True)
    parser.add_argument("--other-uri")
    parser.add_argument("--token")
    parser.add_argument("--busy-token")
    parser.add_argument("--samples")
    parser.add_argument("--slow-sql")
    parser.add_argument("--sql-file")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--max-queries", type=int, default=2000)
    args = parser.parse_args()
    for uri in filter(None, [args.uri, args.other_uri]):
        if not re.match(r"^grpc(\+tls)?://(127\.0\.0\.1|localhost|\[::1\]):\d+$", uri):
            sys.exit("refusing a gateway that is not on loopback: " + uri)
    {"check": check, "loop": loop, "cancel": cancel, "gateways": gateways}[args.mode](args)


if __name__ == "__main__":
    main()
