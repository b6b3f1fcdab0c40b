"""The run's results as JSON, a Markdown table (each result beside its target, as ratios to
the baselines of the same run) and a PNG of the latency distributions."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

from bench.stats import finite, ratio

_LABELS = {"courtside": "courtside", "pusher": "courtside, Pusher protocol",
           "floor": "floor (psycopg LISTEN → Starlette loop)",
           "naive": "naive bridge (broadcaster)", "socketio": "Socket.IO + postgres-adapter"}


def _get(tree: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _leg_floor(results: dict[str, Any], key: str, leg: dict[str, Any]) -> float | None:
    """The plain-socket floor a fan-out leg is judged against: the mean of the two measured
    just before and after it, else (older results) the scenario's one at that N."""
    for value in (leg.get("socket_floor_cpu_per_send_us"),
                  _get(results, "scenarios", "fanout", "socket_floor", key, "cpu_per_send_us")):
        if isinstance(value, int | float) and finite(value):
            return float(value)
    return None


def _leg_ratio(results: dict[str, Any], key: str, leg: dict[str, Any]) -> float | None:
    """A fan-out leg's CPU per delivery × the floor: the median of its blocks' ratios (each
    block against the floors just before and after it), else its mean against the floor."""
    median = leg.get("ratio_to_floor")
    if isinstance(median, int | float) and finite(median):
        return float(median)
    return ratio(leg.get("server_cpu_per_delivery_us"), _leg_floor(results, key, leg))


def _leg_ratio_note(leg: dict[str, Any]) -> str:
    span = leg.get("ratio_to_floor_range")
    blocks = leg.get("blocks") or []
    if not span or len(blocks) < 2:
        return "just before and after"
    return (f"median of {len(blocks)} blocks, each between two floors; "
            f"range {span[0]:.2f}–{span[1]:.2f}")


def _largest_fanout(results: dict[str, Any], system: str) -> tuple[str, dict[str, Any]] | None:
    sizes = _get(results, "scenarios", "fanout", "systems", system)
    if not isinstance(sizes, dict):
        return None
    measured = [(v["subscribers"], k, v) for k, v in sizes.items()
                if isinstance(v, dict) and finite(v.get("server_cpu_per_delivery_us"))]
    if not measured:
        return None
    _, key, value = max(measured)
    return key, value


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue: the measured value, what it is compared with, pass/fail."""
    rows: list[dict[str, Any]] = []

    def add(target: str, measured: float | None, unit: str, bound: float | None,
            baseline: str = "", ok: bool | None = None, note: str = "") -> None:
        if ok is None and measured is not None and bound is not None:
            ok = measured <= bound
        rows.append({"target": target, "measured": measured, "unit": unit, "bound": bound,
                     "baseline": baseline, "pass": ok if measured is not None else None,
                     "note": note})

    lat = _get(results, "scenarios", "latency", "systems") or {}
    cs100 = _get(lat, "courtside", "sql@100") or {}
    floor100 = _get(lat, "floor", "sql@100") or {}
    add("latency @100/s: courtside p99 ≤ 1.5 × floor p99",
        ratio(cs100.get("p99_ms"), floor100.get("p99_ms")), "× floor", 1.5,
        f"courtside {cs100.get('p99_ms', math.nan):.2f} ms, floor "
        f"{floor100.get('p99_ms', math.nan):.2f} ms")
    add("latency @100/s: courtside p50 ≤ 3 ms", cs100.get("p50_ms"), "ms", 3.0)
    for peer in ("naive", "socketio"):
        peer100 = _get(lat, peer, "sql@100") or {}
        r = ratio(cs100.get("p99_ms"), peer100.get("p99_ms"))
        add(f"latency @100/s: p99 lower than {_LABELS[peer]}", r, f"× {peer}", None,
            f"{peer} p99 {peer100.get('p99_ms', math.nan):.2f} ms",
            ok=None if r is None else r < 1.0)

    top_rate = max((int(k.split("@")[1]) for k in (lat.get("courtside") or {})
                    if k.startswith("sql@")), default=None)
    if top_rate is not None and top_rate > 100:
        leg = f"sql@{top_rate}"
        cs_top = _get(lat, "courtside", leg) or {}
        for peer in ("naive", "socketio"):
            other = _get(lat, peer, leg) or {}
            r = ratio(cs_top.get("deliveries_per_s"), other.get("deliveries_per_s"))
            add(f"latency @{top_rate}/s (saturated): more deliveries/s than {_LABELS[peer]}", r,
                f"× {peer}", None,
                f"courtside {cs_top.get('deliveries_per_s') or math.nan:,.0f}/s, {peer} "
                f"{other.get('deliveries_per_s') or math.nan:,.0f}/s",
                ok=None if r is None else r > 1.0)

    fan = _largest_fanout(results, "courtside")
    if fan is not None:
        key, cs = fan
        sock = _leg_floor(results, key, cs)
        add(f"fan-out {key}: server CPU per delivered message ≤ 1.5 × plain-socket floor",
            _leg_ratio(results, key, cs), "× socket.send", 1.5,
            f"courtside {cs.get('server_cpu_per_delivery_us', math.nan):.1f} µs, socket.send "
            f"{sock if sock is not None else math.nan:.1f} µs ({_leg_ratio_note(cs)})")
        for peer in ("naive", "socketio"):
            other = _get(results, "scenarios", "fanout", "systems", peer, key) or {}
            r = ratio(cs.get("deliveries_per_s"), other.get("deliveries_per_s"))
            add(f"fan-out {key}: more deliveries/s than {_LABELS[peer]}", r, f"× {peer}", None,
                f"courtside {cs.get('deliveries_per_s') or math.nan:,.0f}/s, {peer} "
                f"{other.get('deliveries_per_s') or math.nan:,.0f}/s",
                ok=None if r is None else r > 1.0)
    else:
        add("fan-out: server CPU per delivered message ≤ 1.5 × plain-socket floor", None,
            "× socket.send", 1.5)

    conn = _get(results, "scenarios", "connections", "systems", "courtside") or {}
    n = conn.get("connections")
    add(f"{n or 10000} idle connections on one process at ≤ 20 KB RSS each",
        conn.get("rss_per_connection_kb"), "KB", 20.0,
        "" if n == 10000 or n is None else f"measured with {n} connections (full mode: 10000)")

    writes = _get(results, "scenarios", "writes", "results") or {}

    def minimum(clients: str) -> str:
        # What any trigger keeping DESIGN §4 costs, measured beside it: the bound on the ratio.
        least = _get(writes, clients, "minimum", "ratio_to_none")
        return "" if least is None else f"the design's minimum trigger: {least:.2f} ×"

    one = _get(writes, "1", "triggers", "ratio_to_none")
    add("writes: 1 writer with triggers ≥ 0.85 × without", one, "× no triggers", 0.85,
        ok=None if one is None else one >= 0.85, note=minimum("1"))
    for clients in sorted(writes, key=int):
        if clients == "1":
            continue
        add(f"writes: {clients} writers with triggers (reported, no target)",
            _get(writes, clients, "triggers", "ratio_to_none"), "× no triggers", None,
            note="; ".join(filter(None, ["NOTIFYing commits serialize on one lock",
                                         minimum(clients)])), ok=None)
    return rows


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS
                                  | orjson.OPT_SERIALIZE_NUMPY))


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out.extend("| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows)
    return out


def _failed(entry: Any) -> str | None:
    if isinstance(entry, dict):
        if "skipped" in entry:
            return f"skipped: {entry['skipped']}"
        if "error" in entry:
            return f"error: {str(entry['error']).splitlines()[0][:200]}"
    return None


def markdown(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    lines = [f"# courtside bench — {meta.get('mode', '?')} run",
             "",
             f"`{meta.get('command', '')}` — {meta.get('started', '')}, "
             f"{meta.get('cpus', '?')} CPUs, Python {meta.get('python', '?')}, "
             f"PostgreSQL {meta.get('postgres', '?')}, "
             f"{_fmt(meta.get('seconds'), 0)} s. Ratios are taken within this run; absolute "
             "times on a shared machine are noise.", ""]
    if meta.get("profiled"):
        lines += [f"**Profiled run**: {meta.get('profiler') or 'py-spy'} sampled the servers "
                  "during the measurements, which slows them; use these numbers for the "
                  "profiles, not the targets.", ""]
    lines += ["## Targets", ""]
    lines += _table(["target", "measured", "unit", "bound", "pass", "detail"],
                    [[t["target"], t["measured"], t["unit"], t["bound"], t["pass"],
                      t["baseline"] or t["note"]] for t in results.get("targets", [])])
    scen = results.get("scenarios", {})
    lat = scen.get("latency")
    if lat:
        lines += ["", "## latency — commit → receipt", "",
                  f"Workload: {lat.get('workload')}", ""]
        rows: list[list[Any]] = []
        floor = _get(lat, "systems", "floor") or {}
        for system, legs in (lat.get("systems") or {}).items():
            why = _failed(legs)
            if why:
                rows.append([_LABELS.get(system, system), why] + [None] * 10)
                continue
            for leg, v in legs.items():
                if not isinstance(v, dict) or "@" not in leg:
                    continue
                why = _failed(v)
                if why:
                    rows.append([_LABELS.get(system, system), leg, why] + [None] * 9)
                    continue
                rows.append([_LABELS.get(system, system), leg, v.get("p50_ms"), v.get("p90_ms"),
                             v.get("p99_ms"), v.get("max_ms"),
                             ratio(v.get("p99_ms"), _get(floor, leg, "p99_ms")),
                             f"{v.get('received')}/{v.get('expected')}",
                             v.get("achieved_rate"), _get(v, "write_round_trip", "p50_ms"),
                             v.get("deliveries_per_s"), v.get("server_cpu_per_delivery_us")])
        lines += _table(["system", "leg", "p50 ms", "p90 ms", "p99 ms", "max ms",
                         "p99 × floor", "received", "writes/s", "write round trip p50 ms",
                         "deliveries/s", "server CPU µs/delivery"], rows)
    fan = scen.get("fanout")
    if fan:
        lines += ["", "## fanout — one session, N subscribers", ""]
        rows = []
        for key, v in (fan.get("socket_floor") or {}).items():
            rows.append(["plain socket.send", key, None, None, None,
                         1e6 / v["wall_per_send_us"] if v.get("wall_per_send_us") else None,
                         v.get("cpu_per_send_us"), 1.0])
            if v.get("back_to_back_cpu_per_send_us"):  # measured beside it, not judged against
                wall = v.get("back_to_back_wall_per_send_us")
                rows.append(["plain socket.send, rounds back to back", key, None, None, None,
                             1e6 / wall if wall else None, v["back_to_back_cpu_per_send_us"],
                             ratio(v["back_to_back_cpu_per_send_us"], v.get("cpu_per_send_us"))])
        for system, sizes in (fan.get("systems") or {}).items():
            why = _failed(sizes)
            if why:
                rows.append([_LABELS.get(system, system), why] + [None] * 6)
                continue
            for key, v in sizes.items():
                why = _failed(v)
                if why:
                    rows.append([_LABELS.get(system, system), key, why] + [None] * 5)
                    continue
                rows.append([_LABELS.get(system, system), key,
                             _get(v, "commit_to_first_ms", "p50"),
                             _get(v, "commit_to_last_ms", "p50"),
                             _get(v, "commit_to_last_ms", "max"), v.get("deliveries_per_s"),
                             v.get("server_cpu_per_delivery_us"),
                             _leg_ratio(results, key, v)])
        lines += _table(["system", "N", "first receipt p50 ms", "last receipt p50 ms",
                         "last receipt max ms", "deliveries/s", "CPU µs/delivery",
                         "× socket.send"], rows)
    con = scen.get("connections")
    if con:
        lines += ["", "## connections — idle subscribers on one server process", ""]
        rows = []
        for system, v in (con.get("systems") or {}).items():
            why = _failed(v)
            if why:
                rows.append([_LABELS.get(system, system), why] + [None] * 11)
                continue
            rows.append([_LABELS.get(system, system), v.get("connections"),
                         v.get("accept_all_s"), v.get("server_cpu_per_accept_us"),
                         v.get("rss_per_connection_kb"),
                         _get(v, "broadcast", "p50_ms"), _get(v, "broadcast", "p99_ms"),
                         _get(v, "broadcast", "max_ms"), v.get("lost"),
                         v.get("server_cpu_per_close_us"),
                         v.get("presence_gone_s"), v.get("presence_rows_left")])
        lines += _table(["system", "connections", "accept all s", "CPU µs/accept",
                         "RSS KB/conn", "broadcast p50 ms", "broadcast p99 ms",
                         "broadcast max ms", "lost", "all closed: CPU µs/close",
                         "presence gone s", "presence rows left"], rows)
    wr = scen.get("writes")
    if wr:
        lines += ["", "## writes — inserts/s (pgbench)", "",
                  f"Tool: {wr.get('tool')}; durable commits: "
                  f"{_fmt(wr.get('durable_commits'))}; {_get(wr, 'workload')}", ""]
        modes = list(_get(wr, "workload", "modes") or [])
        for key, series in wr.items():
            if not key.startswith("results") or not isinstance(series, dict):
                continue
            setting = key.removeprefix("results_synchronous_commit_")
            commit = "synchronous_commit = " + ("on" if key == "results" else setting)
            rows = []
            for clients, row in series.items():
                cells: list[Any] = [clients]
                for mode in modes:
                    cells.append(_get(row, mode, "tps") or _failed(row.get(mode)))
                for mode in modes:
                    if mode != "none":
                        cells.append(_get(row, mode, "ratio_to_none"))
                rows.append(cells)
            lines += [f"{commit}:", ""]
            lines += _table(["writers", *[f"{m} tps" for m in modes],
                             *[f"{m} ÷ none" for m in modes if m != "none"]], rows)
            lines += [""]
    res = scen.get("resume")
    if res:
        lines += ["", "## resume — reconnect at once, each client behind", ""]
        rows = []
        for system, v in (res.get("systems") or {}).items():
            why = _failed(v)
            if why:
                rows.append([_LABELS.get(system, system), why] + [None] * 7)
                continue
            db = v.get("db") or {}
            rows.append([_LABELS.get(system, system), v.get("clients"), v.get("behind"),
                         v.get("caught_up_all_s"),
                         f"{v.get('events_replayed')}/{v.get('expected')}",
                         db.get("postgres_cpu_s"), db.get("xact_commit"),
                         db.get("tup_returned")])
        lines += _table(["system", "clients", "behind", "all caught up s", "events",
                         "PostgreSQL CPU s", "transactions", "tuples returned"], rows)
    for name, entry in scen.items():
        why = _failed(entry)
        if why:
            lines += ["", f"## {name}", "", why]
    profiles = results.get("profiles") or {}
    if profiles:
        lines += ["", "## Profiles", ""]
        for label, prof in profiles.items():
            if prof.get("kind") == "functions":
                lines += [f"### {label} — pg_stat_user_functions, "
                          f"{_fmt(prof.get('insert_us'), 0)} µs per insert", ""]
                lines += _table(["function", "calls", "total µs/insert", "self µs/insert"],
                                [[f"`{n}`", c, t, o] for n, c, t, o in prof.get("rows", [])])
                lines += [""]
                continue
            if prof.get("kind") == "memory":
                lines += [f"### {label} — tracemalloc, "
                          f"{_fmt(prof.get('python_bytes_per_connection'), 0)} bytes of Python "
                          "objects per connection", ""]
                lines += _table(["bytes/conn", "allocations/conn", "where"],
                                [[b, c, f"`{w}`"] for w, b, c in prof.get("by_line", [])])
                lines += [""]
                lines += _table(["bytes/conn", "file"],
                                [[b, f"`{w}`"] for w, b in prof.get("by_file", [])])
                lines += [""]
                continue
            if prof.get("kind") == "perf":
                lines += [f"### {label} — perf, {prof.get('samples', 0)} samples", ""]
                lines += _table(["samples %", "where the top frame is"],
                                [[p[1], p[0]] for p in prof.get("areas", [])[:8]])
                lines += [""]
            else:
                lines += [f"### {label} — {prof.get('samples', 0)} samples", ""]
            lines += _table(["self %", "function"], [[p[1], f"`{p[0]}`"]
                                                      for p in prof.get("self", [])[:10]])
            lines += [""]
            lines += _table(["inclusive %", "function"], [[p[1], f"`{p[0]}`"]
                                                           for p in prof.get("inclusive", [])[:12]])
            lines += [""]
    notes = results.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> bool:
    """CDF of commit → receipt per system, one panel per latency leg. False if nothing to
    plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    systems = _get(results, "scenarios", "latency", "systems") or {}
    legs = sorted({leg for legs in systems.values() if isinstance(legs, dict)
                   for leg, v in legs.items() if isinstance(v, dict) and v.get("cdf")},
                  key=lambda s: (s.split("@")[0] != "sql", float(s.split("@")[1])))
    if not legs:
        return False
    cols = min(2, len(legs))
    rows = (len(legs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 4.4 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(legs):]:
        ax.set_visible(False)
    for ax, leg in zip(flat, legs, strict=True):
        for system, data in systems.items():
            cdf = _get(data, leg, "cdf")
            if not cdf:
                continue
            xs = [max(x, 1e-3) for x, _ in cdf]
            ys = [y for _, y in cdf]
            ax.plot(xs, ys, label=f"{_LABELS.get(system, system)} "
                                  f"(p99 {_get(data, leg, 'p99_ms'):.1f} ms)")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("commit → receipt (ms, log)")
        ax.set_ylabel("fraction of receipts ≤")
        ax.set_title(f"latency, {leg.replace('@', ' writes @')}/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
