"""``/metrics`` under ``courtside serve --workers N``: every worker's numbers, whichever answers.

The workers share one listening socket, so a scrape reaches whichever worker accepts it. Each
worker's own numbers alone would make Prometheus see every counter jump back and forth
between workers (read as resets) and every gauge show one worker's share. Instead each
worker writes a snapshot of its own metrics to a directory its master created
(``COURTSIDE_METRICS_DIR``, set by `courtside serve`) every `PUBLISH_INTERVAL`, and the
worker that answers a scrape merges its fresh numbers with its siblings' latest snapshots,
the way prometheus_client's multiprocess mode aggregates (which does not fit here: it
stores values as they change, and courtside's are read from live state at scrape time):

- counters are summed over every worker that ever wrote, dead ones included, so a crashed
  and restarted worker does not make the total go back;
- gauges are summed over live workers; ``courtside_ready`` and
  ``courtside_pipeline_installed`` are the least of them (the service is ready when every
  worker is); ``courtside_info`` lists every live worker's node;
- ``process_*`` and ``python_*`` stay per process, with a ``pid`` label.

A sibling's numbers are at most `PUBLISH_INTERVAL` old. `merge` is pure; the file handling
around it is small and synchronous (a few kilobytes, no fsync: the files only need to
outlive a worker, not the machine).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

log = logging.getLogger("courtside.metrics")

DIR_ENV = "COURTSIDE_METRICS_DIR"
PUBLISH_INTERVAL = 1.0
_PER_PROCESS = ("process_", "python_")
_LEAST = frozenset({"courtside_ready", "courtside_pipeline_installed"})


@dataclass(frozen=True)
class Snapshot:
    pid: int
    alive: bool
    families: list[Metric]


def dump(families: Iterable[Metric]) -> bytes:
    return json.dumps([
        {"name": f.name, "doc": f.documentation, "type": f.type, "unit": f.unit,
         "samples": [[s.name, s.labels, s.value] for s in f.samples]}
        for f in families
    ]).encode()


def load(data: bytes) -> list[Metric]:
    families = []
    for entry in json.loads(data):
        family = Metric(entry["name"], entry["doc"], entry["type"], entry["unit"])
        for name, labels, value in entry["samples"]:
            family.add_sample(name, labels, float(value))
        families.append(family)
    return families


def merge(own_pid: int, own: list[Metric], siblings: list[Snapshot]) -> list[Metric]:
    """This worker's fresh families and its siblings' snapshots, combined (see the module)."""
    everyone = [Snapshot(own_pid, True, own), *siblings]
    merged: dict[str, Metric] = {}
    # Sample totals per family and sample key, in first-seen order.
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for snap in everyone:
        for family in snap.families:
            name = family.name
            per_process = name.startswith(_PER_PROCESS)
            if not snap.alive and (per_process or family.type != "counter"):
                continue
            if name not in merged:
                merged[name] = Metric(name, family.documentation, family.type, family.unit)
                values[name] = {}
            totals = values[name]
            for sample in family.samples:
                labels = {**sample.labels, "pid": str(snap.pid)} if per_process \
                    else sample.labels
                key = (sample.name, tuple(sorted(labels.items())))
                seen = totals.get(key)
                if seen is None:
                    totals[key] = sample.value
                elif name in _LEAST:
                    totals[key] = min(seen, sample.value)
                elif family.type != "info":  # an info sample is 1 however often it is seen
                    totals[key] = seen + sample.value
    for name, family in merged.items():
        for (sample_name, label_pairs), value in values[name].items():
            family.add_sample(sample_name, dict(label_pairs), value)
    return list(merged.values())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _path(directory: Path, pid: int) -> Path:
    return directory / f"{pid}.json"


def write(directory: Path, families: Iterable[Metric]) -> None:
    """Replace this process's snapshot; readers see the old one or the new one, whole."""
    pid = os.getpid()
    tmp = directory / f".{pid}.json.tmp"
    tmp.write_bytes(dump(families))
    os.replace(tmp, _path(directory, pid))


def read_siblings(directory: Path, own_pid: int) -> list[Snapshot]:
    siblings = []
    for path in directory.glob("*.json"):
        if not path.stem.isdigit() or int(path.stem) == own_pid:
            continue
        pid = int(path.stem)
        try:
            families = load(path.read_bytes())
        except FileNotFoundError:
            continue  # the master removed the directory: it is shutting down
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("metrics snapshot %s unreadable (%s); left out", path, exc)
            continue
        siblings.append(Snapshot(pid, _alive(pid), families))
    return siblings


class WorkersCollector(Collector):
    """``local``'s families (this process, read now) merged with the siblings' snapshots."""

    def __init__(self, local: CollectorRegistry, directory: Path) -> None:
        self._local = local
        self._directory = directory

    def collect(self) -> Iterable[Metric]:
        own = list(self._local.collect())
        return merge(os.getpid(), own, read_siblings(self._directory, os.getpid()))


async def publish(local: CollectorRegistry, directory: Path,
                  interval: float = PUBLISH_INTERVAL) -> None:
    """Write this process's snapshot every ``interval`` seconds, and once more on the way out
    (its final counters stay in the totals)."""
    try:
        while True:
            _write_logged(local, directory)
            await anyio.sleep(interval)
    finally:
        _write_logged(local, directory)


def _write_logged(local: CollectorRegistry, directory: Path) -> None:
    try:
        write(directory, local.collect())
    except OSError as exc:
        log.warning("cannot write this worker's metrics snapshot to %s: %s", directory, exc)


_DIR_PREFIX = "courtside-metrics-"


def make_directory(base: Path | None = None) -> Path:
    """In the master, before the workers start: a new directory for their snapshots. The
    master removes it when it ends; one killed outright cannot, so directories left by
    masters that are no longer running are removed here first (the name carries the pid)."""
    base = base or Path(tempfile.gettempdir())
    for stale in base.glob(f"{_DIR_PREFIX}*-*"):
        pid = stale.name[len(_DIR_PREFIX):].partition("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-", dir=base))


def directory_from_env(environ: Mapping[str, str] = os.environ) -> Path | None:
    raw = environ.get(DIR_ENV, "")
    return Path(raw) if raw else None
