#!/usr/bin/env python3
"""Evaluates every PromQL expression of Flotilla's dashboards and alert rules against a live
Prometheus, through its HTTP API. Fails (exit 1) when an expression is invalid or returns no
series.

usage: check_promql.py PROMETHEUS_URL DASHBOARD.json...

Dashboard variables are replaced the way Grafana would fill them for "all nodes":
$__rate_interval → 1m, $node → .+ (a regex, as the panels use it). Alert rules are read back
from Prometheus (/api/v1/rules), so these are the rules it loaded; each must be healthy. An
alert's full expression must be valid; it normally returns nothing (nothing is wrong), so its
signal, the part before its last top-level comparison, must return series.
"""

import json
import sys
import urllib.parse
import urllib.request

SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "${node}": ".+",
    "$node": ".+",
}
COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")


def api(prometheus, path, **params):
    url = f"{prometheus}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:  # 400/422: a bad expression; the body says why
        return json.load(error)


def evaluate(prometheus, expr):
    """Returns (series count, error or None)."""
    answer = api(prometheus, "/api/v1/query", query=expr)
    if answer.get("status") != "success":
        return 0, answer.get("error", "unknown error")
    return len(answer["data"]["result"]), None


def panels(dashboard):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # panels inside collapsed rows


def signal(expr):
    """The expression up to its last comparison outside brackets and strings."""
    depth, quote, last, i = 0, None, None, 0
    while i < len(expr):
        char = expr[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = None
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            for op in COMPARISONS:
                if expr.startswith(op, i):
                    # `=~` and `!~` are matchers, always inside braces.
                    last = i
                    i += len(op) - 1
                    break
        i += 1
    return expr[:last].strip() if last is not None else None


def main():
    prometheus, dashboards = sys.argv[1].rstrip("/"), sys.argv[2:]
    checked, failures = 0, []

    for path in dashboards:
        with open(path) as file:
            dashboard = json.load(file)
        for panel in panels(dashboard):
            for target in panel.get("targets", []):
                expr = target.get("expr")
                if not expr:
                    continue
                for variable, value in SUBSTITUTIONS.items():
                    expr = expr.replace(variable, value)
                name = f"{path}: panel {panel.get('title')!r} {target.get('refId')}"
                checked += 1
                if "$" in expr:
                    failures.append(f"{name}: unknown variable in {expr}")
                    continue
                series, error = evaluate(prometheus, expr)
                if error:
                    failures.append(f"{name}: invalid: {error}\n    {expr}")
                elif series == 0:
                    failures.append(f"{name}: no series\n    {expr}")
                else:
                    print(f"ok  {series:3d} series  {name}")

    rules = api(prometheus, "/api/v1/rules")["data"]["groups"]
    if not rules:
        failures.append("Prometheus loaded no alert rules")
    for group in rules:
        for rule in group["rules"]:
            name = f"rule {rule['name']}"
            checked += 1
            if rule.get("health") != "ok":
                failures.append(f"{name}: health {rule.get('health')}: {rule.get('lastError')}")
                continue
            series, error = evaluate(prometheus, rule["query"])
            if error:
                failures.append(f"{name}: invalid: {error}\n    {rule['query']}")
                continue
            if rule["type"] == "alerting":
                lhs = signal(rule["query"])
                if lhs is None:
                    failures.append(f"{name}: no comparison in {rule['query']}")
                    continue
                series, error = evaluate(prometheus, lhs)
                if error or series == 0:
                    failures.append(f"{name}: its signal returns {error or 'no series'}\n    {lhs}")
                    continue
            print(f"ok  {series:3d} series  {name} ({rule.get('state', rule['type'])})")

    print(f"\n{checked} expressions checked, {len(failures)} failed")
    for failure in failures:
        print(f"FAIL {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
