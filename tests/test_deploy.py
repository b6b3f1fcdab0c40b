"""The examples in deploy/, run for real: nginx in front of a server (REST, WebSocket, SSE and
Pusher through it, /metrics refused to others), the systemd unit's commands started and
stopped as systemd would, supervisord keeping the service up and stopping it cleanly.

Each example is used as shipped, with only its paths, port and account swapped for this
machine's; a test fails if the text it swaps is no longer there.
"""

from __future__ import annotations

import configparser
import contextlib
import getpass
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psutil
import pytest

from tests import factories
from tests.servers import port_of
from tests.test_pusher_support import authorized, build_pusher_app, pusher_client
from tests.test_realtime_support import (
    ROOT,
    free_port,
    rest,
    running,
    sql_comment,
    sse_client,
    stop,
    wait_ready,
    ws_client,
)

DEPLOY = ROOT / "deploy"
COURTSIDE = Path(sys.executable).parent / "courtside"


def swap(text: str, *pairs: tuple[str, str]) -> str:
    for old, new in pairs:
        assert old in text, f"the example no longer contains {old!r}"
        text = text.replace(old, new)
    return text


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A folder nginx's unprivileged worker can enter (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="courtside-deploy-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def alive(pids: list[int]) -> list[str]:
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{pid}: {' '.join(proc.cmdline())}")
    return found


def still_alive_after(pids: list[int], seconds: float) -> list[str]:
    """Which of `pids` outlive `seconds` (a child may exit a moment after its parent)."""
    deadline = time.monotonic() + seconds
    while (found := alive(pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


# -- nginx ------------------------------------------------------------------------------------

@contextlib.contextmanager
def nginx(upstream_port: int) -> Iterator[str]:
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                       else None)
    if binary is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx)")
    port = free_port()
    with scratch() as d:
        site = swap((DEPLOY / "nginx" / "courtside.conf").read_text(),
                    ("listen 80;", f"listen 127.0.0.1:{port};"),
                    ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};"))
        (d / "courtside.conf").write_text(site)
        temps = " ".join(f"{kind}_temp_path {d}/{kind};"
                         for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (d / "nginx.conf").write_text(
            f"daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n"
            f"events {{ worker_connections 256; }}\n"
            f"http {{ access_log off; {temps} include {d}/courtside.conf; }}\n")
        proc = subprocess.Popen([binary, "-p", str(d), "-e", f"{d}/error.log",
                                 "-c", str(d / "nginx.conf")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            try:
                wait_port(port)
            except RuntimeError:
                raise RuntimeError("nginx did not start: "
                                   + (d / "error.log").read_text()) from None
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(proc, 10)


@pytest.mark.anyio
async def test_nginx_example_carries_every_transport(db: str) -> None:
    world = factories.world(db, participants=2)
    author, reader = world.participants
    reader_token = factories.token(db, reader)
    author_token = factories.token(db, author)
    channel = f"private-sport-session.{world.session_id}"
    with running(build_pusher_app(db)) as direct:
        upstream = port_of(direct)
        with nginx(upstream) as base:
            async with ws_client(base, reader_token) as ws, \
                    sse_client(base, world.session_id, reader_token) as sse, \
                    pusher_client(base, reader_token) as pusher, \
                    rest(base, author_token) as api:
                assert (await ws.subscribe(world.topic))["type"] == "subscribed"
                await authorized(base, reader_token, pusher, channel)
                created = await api.create(world.session_id, "through nginx")
                from_sql = sql_comment(db, world.session_id, author, "psql, through nginx")
                frames = await ws.events(world.topic, 2)
                streamed = await sse.durable(2)
                pushed = [await pusher.event(channel, "comment.created") for _ in range(2)]
            assert [f["data"]["comment"]["id"] for f in frames] == [created["id"], from_sql]
            assert [e.id for e in streamed] == ["1", "2"]
            assert [orjson.loads(f["data"])["comment"]["id"] for f in pushed] == [
                created["id"], from_sql]

            async with httpx.AsyncClient(base_url=base) as local:
                assert (await local.get("/metrics")).status_code == 200
            # Another address than the scraper's: refused by nginx, never reaching courtside.
            other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
            async with httpx.AsyncClient(base_url=base, transport=other) as remote:
                assert (await remote.get("/metrics")).status_code == 403
                assert (await remote.get("/healthz")).status_code == 200


# -- systemd ----------------------------------------------------------------------------------

def unit_for_here(workdir: Path, port: int) -> str:
    return swap((DEPLOY / "systemd" / "courtside.service").read_text(),
                ("/srv/courtside/.venv/bin/courtside", str(COURTSIDE)),
                ("WorkingDirectory=/srv/courtside", f"WorkingDirectory={workdir}"),
                ("ReadWritePaths=/srv/courtside", f"ReadWritePaths={workdir}"),
                ("EnvironmentFile=/etc/courtside/env", f"EnvironmentFile={workdir}/env"),
                ("--port 8000", f"--port {port}"),
                ("User=courtside", f"User={getpass.getuser()}"),
                ("Group=courtside", "Group=root" if os.getuid() == 0 else f"Group={os.getgid()}"))


def test_systemd_unit_verifies_and_its_commands_start_and_stop_cleanly(
        db: str, tmp_path: Path) -> None:
    port = free_port()
    text = unit_for_here(tmp_path, port)
    unit = tmp_path / "courtside.service"
    unit.write_text(text)
    verify = shutil.which("systemd-analyze")
    if verify is not None:  # absent on machines without systemd; the run below still holds
        checked = subprocess.run([verify, "verify", str(unit)], capture_output=True,
                                 text=True, timeout=60, check=False)
        assert checked.returncode == 0, checked.stderr

    parsed = configparser.ConfigParser(interpolation=None, strict=False)
    parsed.optionxform = str  # type: ignore[assignment,method-assign]
    parsed.read_string(text)
    service = parsed["Service"]
    assert service["KillSignal"] == "SIGTERM"
    (tmp_path / "env").write_text(f"DATABASE_URL={db}\nCOURTSIDE_LOG_LEVEL=warning\n")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    for line in (tmp_path / "env").read_text().splitlines():
        key, _, value = line.partition("=")
        env[key] = value

    pre = subprocess.run(shlex.split(service["ExecStartPre"]), cwd=service["WorkingDirectory"],
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    assert pre.returncode == 0, pre.stdout + pre.stderr
    log = (tmp_path / "serve.log").open("wb")
    main = subprocess.Popen(shlex.split(service["ExecStart"]), cwd=service["WorkingDirectory"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=60)
        workers = [c.pid for c in psutil.Process(main.pid).children(recursive=True)]
        assert len(workers) >= 2  # --workers 2
        main.send_signal(signal.SIGTERM)
        stop_timeout = float(service["TimeoutStopSec"])
        # systemd counts anything but exit status 0 as a failure (and would restart it).
        assert main.wait(stop_timeout) == 0, (tmp_path / "serve.log").read_text()
        assert still_alive_after(workers, 5.0) == []
    finally:
        if main.poll() is None:
            main.kill()
            main.wait(10)
        log.close()


# -- supervisord ------------------------------------------------------------------------------

def test_supervisor_keeps_it_up_and_stops_the_whole_group(db: str, tmp_path: Path) -> None:
    supervisord = Path(sys.executable).parent / "supervisord"
    supervisorctl = Path(sys.executable).parent / "supervisorctl"
    port = free_port()
    program = swap((DEPLOY / "supervisor" / "courtside.conf").read_text(),
                   ("/srv/courtside/.venv/bin/courtside", str(COURTSIDE)),
                   ("directory=/srv/courtside", f"directory={tmp_path}"),
                   ("--port 8000", f"--port {port}"),
                   ("user=courtside", f"user={getpass.getuser()}"),
                   ('DATABASE_URL="postgresql://courtside@127.0.0.1:5432/courtside"',
                    f'DATABASE_URL="{db}"'),
                   ('COURTSIDE_LOG_LEVEL="info"', 'COURTSIDE_LOG_LEVEL="warning"'),
                   ("stdout_logfile=/var/log/courtside.log",
                    f"stdout_logfile={tmp_path}/courtside.log"))
    (tmp_path / "program.conf").write_text(program)
    sock = tmp_path / "supervisor.sock"
    conf = tmp_path / "supervisord.conf"
    conf.write_text(
        f"[supervisord]\nnodaemon=true\nlogfile={tmp_path}/supervisord.log\n"
        f"pidfile={tmp_path}/supervisord.pid\n"
        f"[unix_http_server]\nfile={sock}\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        f"[supervisorctl]\nserverurl=unix://{sock}\n"
        f"[include]\nfiles={tmp_path}/program.conf\n")

    def ctl(*args: str) -> str:
        done = subprocess.run([str(supervisorctl), "-c", str(conf), *args],
                              capture_output=True, text=True, timeout=60, check=False)
        return done.stdout + done.stderr

    def main_pid() -> int:
        return int(ctl("pid", "courtside").strip())

    base = f"http://127.0.0.1:{port}"
    seen: list[int] = []  # killed at the end if still there, whatever failed
    daemon = subprocess.Popen([str(supervisord), "-c", str(conf)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(base, timeout=60)
        first = main_pid()
        assert "serve" in psutil.Process(first).cmdline()  # the shell exec'd the server
        first_workers = [c.pid for c in psutil.Process(first).children(recursive=True)]
        seen += [first, *first_workers]
        assert len(first_workers) >= 2  # --workers 2

        # A crash of the master: its workers must not live on (holding the port, serving
        # old code); supervisord starts a new master.
        os.kill(first, signal.SIGKILL)
        assert still_alive_after(first_workers, 20.0) == []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "RUNNING" in ctl("status", "courtside") and main_pid() != first:
                break
            time.sleep(0.2)
        wait_ready(base, timeout=60)
        second = main_pid()
        assert second != first
        assert "serve" in psutil.Process(second).cmdline()
        workers = [c.pid for c in psutil.Process(second).children(recursive=True)]
        seen += [second, *workers]
        assert len(workers) >= 2

        assert "stopped" in ctl("stop", "courtside")
        assert "STOPPED" in ctl("status", "courtside")
        assert still_alive_after([second, *workers], 5.0) == []
        # A clean exit, not one supervisord had to force.
        assert "SIGKILL" not in (tmp_path / "supervisord.log").read_text().split(
            f"pid {second}", 1)[-1]
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            stop(daemon, 40)
        for pid in seen:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
