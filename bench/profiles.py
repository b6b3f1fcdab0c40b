"""Sizes of each scenario in quick mode (CI: under two minutes) and in full mode (the issue's)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace


@dataclass(frozen=True)
class Profile:
    name: str
    time_limit: float  # seconds for the whole run; legs that would not fit are skipped
    client_agents: int
    # latency: sessions × subscribers, comments at each rate for `duration` seconds
    latency_sessions: int
    latency_subscribers: int
    latency_rates: tuple[int, ...]
    latency_duration: float
    latency_rest: bool
    # fanout: one session, each size, `fanout_events` comments
    fanout_sizes: tuple[int, ...]
    fanout_events: int
    fanout_own_floor: tuple[str, ...]  # systems whose legs get a floor just before and after
    fanout_blocks: int  # a leg's events in this many blocks, a floor between each two
    # connections: idle sockets on one server process, then broadcasts to them
    connections: int
    connection_broadcasts: int
    # writes: pgbench clients, seconds per measurement, trigger modes
    write_clients: tuple[int, ...]
    write_duration: float
    write_modes: tuple[str, ...]
    write_repeats: int
    write_commits: tuple[str, ...]  # synchronous_commit settings: "on" (durable), "off"
    # resume: clients over sessions, each `resume_behind` events behind
    resume_clients: int
    resume_sessions: int
    resume_behind: int
    # the plain-socket floor: sockets, rounds
    socket_floor_sockets: int
    socket_floor_rounds: int


QUICK = Profile(
    name="quick", time_limit=115.0, client_agents=2,
    latency_sessions=10, latency_subscribers=20, latency_rates=(100,), latency_duration=2.0,
    latency_rest=True,
    fanout_sizes=(100, 500), fanout_events=8, fanout_own_floor=("courtside",),
    fanout_blocks=2,
    connections=500, connection_broadcasts=2,
    write_clients=(1, 8), write_duration=2.0, write_modes=("triggers", "none", "minimum"),
    write_repeats=1, write_commits=("on",),
    resume_clients=100, resume_sessions=10, resume_behind=100,
    socket_floor_sockets=500, socket_floor_rounds=20,
)

FULL = Profile(
    name="full", time_limit=2400.0, client_agents=4,
    latency_sessions=10, latency_subscribers=100, latency_rates=(100, 1000),
    latency_duration=10.0, latency_rest=True,
    fanout_sizes=(100, 1000, 5000), fanout_events=30,
    fanout_own_floor=("courtside", "pusher", "floor", "naive", "socketio"), fanout_blocks=3,
    connections=10_000, connection_broadcasts=3,
    write_clients=(1, 4, 8), write_duration=6.0,
    write_modes=("triggers", "none", "minimum", "naive"), write_repeats=2,
    write_commits=("on", "off"),
    resume_clients=1000, resume_sessions=10, resume_behind=100,
    socket_floor_sockets=5000, socket_floor_rounds=40,
)

PROFILES = {"quick": QUICK, "full": FULL}


def override(profile: Profile, assignments: list[str]) -> Profile:
    """``field=value`` pairs over a profile (``fanout_sizes=2000,5000``, ``connections=2000``)."""
    changes: dict[str, object] = {}
    types = {f.name: str(f.type) for f in fields(Profile)}
    for item in assignments:
        name, sep, raw = item.partition("=")
        if not sep or name not in types or name == "name":
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE, FIELD one of "
                             f"{', '.join(t for t in types if t != 'name')}")
        kind = types[name]
        value: object
        if kind.startswith("tuple[int"):
            value = tuple(int(v) for v in raw.split(",") if v)
        elif kind.startswith("tuple[str"):
            value = tuple(v for v in raw.split(",") if v)
        elif kind == "int":
            value = int(raw)
        elif kind == "float":
            value = float(raw)
        elif kind == "bool":
            value = raw.lower() in ("1", "true", "yes", "on")
        else:
            value = raw
        changes[name] = value
    return replace(profile, **changes)  # type: ignore[arg-type]
