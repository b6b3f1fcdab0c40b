"""A real PostgreSQL server in a local folder: the embedded default and the tests' clusters.

Binaries come from the machine (``COURTSIDE_PG_BINDIR``, ``pg_config``, Debian's
``/usr/lib/postgresql/*/bin``) or, on a machine without PostgreSQL, from the ``pgserver``
wheel. ``COURTSIDE_PG_FLAVOR=pgserver|system`` forces one. PostgreSQL refuses to run as
root, so under root the server runs as an unprivileged user (``postgres`` if the machine has
one, else a ``courtside`` system user created on first use).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("courtside.pgcluster")

_SYSTEM_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin")


class ClusterError(RuntimeError):
    """The local PostgreSQL server could not be set up, started or stopped."""


def _has_initdb(path: Path) -> bool:
    return (path / "initdb").is_file() and (path / "pg_ctl").is_file()


def _pgserver_bindir() -> Path | None:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return path if _has_initdb(path) else None


def _system_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        path = Path(out.stdout.strip())
        if out.returncode == 0 and _has_initdb(path):
            return path
    candidates: list[Path] = []
    for pattern in _SYSTEM_GLOBS:
        candidates.extend(p for p in Path("/").glob(pattern.lstrip("/")) if _has_initdb(p))

    def version(p: Path) -> tuple[int, ...]:
        digits = "".join(ch if ch.isdigit() else " " for ch in str(p)).split()
        return tuple(int(d) for d in digits)

    return max(candidates, key=version) if candidates else None


def find_bindir() -> Path:
    """The folder holding initdb, pg_ctl and postgres."""
    explicit = os.environ.get("COURTSIDE_PG_BINDIR")
    if explicit:
        path = Path(explicit)
        if not _has_initdb(path):
            raise ClusterError(f"COURTSIDE_PG_BINDIR={explicit} has no initdb/pg_ctl")
        return path
    flavor = os.environ.get("COURTSIDE_PG_FLAVOR", "").lower()
    if flavor not in ("", "system", "pgserver"):
        raise ClusterError(f"COURTSIDE_PG_FLAVOR must be 'system' or 'pgserver', not {flavor!r}")
    finders = {"system": [_system_bindir], "pgserver": [_pgserver_bindir]}.get(
        flavor, [_system_bindir, _pgserver_bindir]
    )
    for finder in finders:
        found = finder()
        if found is not None:
            return found
    raise ClusterError(
        "no PostgreSQL binaries found: install PostgreSQL, or the 'pgserver' package, "
        "or set COURTSIDE_PG_BINDIR, or set DATABASE_URL to an existing server"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class _RunAs:
    uid: int
    gid: int
    name: str


def _run_as() -> _RunAs | None:
    """None when we may run PostgreSQL ourselves; else the unprivileged user to run it as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "courtside"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return _RunAs(entry.pw_uid, entry.pw_gid, name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "courtside"],
        check=True,
        capture_output=True,
    )
    entry = pwd.getpwnam("courtside")
    log.info("created system user 'courtside' to run PostgreSQL (it refuses to run as root)")
    return _RunAs(entry.pw_uid, entry.pw_gid, "courtside")


def _make_traversable(path: Path) -> None:
    """Let the unprivileged server user reach `path`: o+x on each parent that lacks it."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.info("granting o+x on %s so the PostgreSQL user can reach %s", parent, path)
            parent.chmod(mode | stat.S_IXOTH)


class Cluster:
    """One PostgreSQL data folder and the server running on it (127.0.0.1, TCP only)."""

    def __init__(self, datadir: Path, *, bindir: Path | None = None, fsync: bool = True,
                 settings: dict[str, str] | None = None) -> None:
        self.datadir = datadir.resolve()
        self.bindir = bindir or find_bindir()
        self.fsync = fsync
        self.settings = settings or {}
        self._run_as = _run_as()
        self.port: int | None = None

    # --- commands -------------------------------------------------------------------------

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        run_as = self._run_as
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        try:
            result = subprocess.run(
                [str(self.bindir / args[0]), *args[1:]],
                capture_output=True, text=True, timeout=timeout, env=env, cwd="/", check=False,
                user=run_as.uid if run_as else None, group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
            )
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(f"{args[0]} timed out after {timeout}s") from exc
        if result.returncode != 0:
            raise ClusterError(
                f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}"
                + self._log_tail()
            )
        return result

    def _log_tail(self) -> str:
        logfile = self.datadir / "server.log"
        if not logfile.exists():
            return ""
        return "\n--- server.log (tail) ---\n" + "\n".join(
            logfile.read_text(errors="replace").splitlines()[-20:]
        )

    @property
    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        """initdb, unless the folder already holds a cluster."""
        if self.initialized:
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        if self._run_as is not None:
            os.chown(self.datadir, self._run_as.uid, self._run_as.gid)
            _make_traversable(self.datadir.parent)
            _make_traversable(self.bindir)
        self.datadir.chmod(0o700)
        self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-locale", "--no-sync")
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": "''",
            "max_connections": "300",
            "shared_buffers": "64MB",
            "logging_collector": "off",
            **({} if self.fsync else {"fsync": "off", "synchronous_commit": "off",
                                       "full_page_writes": "off"}),
            **self.settings,
        }
        with (self.datadir / "postgresql.conf").open("a") as f:
            f.write("\n# courtside\n")
            for key, value in conf.items():
                f.write(f"{key} = {value}\n")

    def running_port(self) -> int | None:
        """The port of the server running on this folder, or None."""
        pidfile = self.datadir / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return port

    def start(self, port: int | None = None) -> None:
        running = self.running_port()
        if running is not None:
            self.port = running
            return
        self.port = port or self.port or free_port()
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.datadir / "server.log"),
                  "-o", f"-p {self.port}", "-w", "-t", "60", "start", timeout=90)
        self._wait_accepting()

    def _wait_accepting(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port or 0), timeout=1
            ):
                return
            time.sleep(0.05)
        raise ClusterError(f"PostgreSQL did not accept connections on port {self.port}")

    def stop(self, mode: str = "fast") -> None:
        if self.running_port() is None:
            return
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop",
                  timeout=90)

    def restart(self) -> None:
        """Stop and start again on the same port: clients see a real server restart."""
        port = self.port
        self.stop()
        self.start(port)

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would; its backends exit on their own."""
        pidfile = self.datadir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)

    def destroy(self) -> None:
        with contextlib.suppress(ClusterError):
            self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        if self.port is None:
            raise ClusterError("the cluster is not running")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def version(self) -> str:
        return (self.datadir / "PG_VERSION").read_text().strip()
