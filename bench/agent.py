"""Load-generator processes: separate from the servers they load, driven over a pipe.

The harness starts a few agents once per run (spawned, so nothing of the parent leaks in)
and sends them commands: open connections, reset counters, wait for deliveries, write
comments, report. Each command gets exactly one reply; every wait in the parent is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import resource
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

from bench import writers


class AgentError(RuntimeError):
    """An agent failed a command, died, or did not answer in time."""


def raise_nofile() -> int:
    """Raise this process's open-file limit to its hard limit (thousands of sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _agent_main(pipe: multiprocessing.connection.Connection) -> None:
    raise_nofile()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        asyncio.run(_serve(pipe))
    else:
        uvloop.run(_serve(pipe))


async def _serve(pipe: multiprocessing.connection.Connection) -> None:
    from bench.loadgen import ClientSet

    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def read_commands() -> None:
        # A thread, not loop.add_reader: uvloop makes a watched descriptor non-blocking,
        # and Connection.recv cannot resume a message it read only part of.
        while True:
            try:
                message = pipe.recv()
            except (EOFError, OSError):  # the harness is gone
                message = ("exit", {})
            loop.call_soon_threadsafe(inbox.put_nowait, message)
            if message[0] == "exit":
                return

    threading.Thread(target=read_commands, name="bench-agent-commands", daemon=True).start()
    clients = ClientSet()
    while True:
        command, args = await inbox.get()
        if command == "exit":
            await clients.close_all()
            pipe.send(("ok", None))
            return
        try:
            result: Any
            if command == "connect":
                result = await clients.connect(**args)
            elif command == "close_all":
                result = await clients.close_all()
            elif command == "reset":
                clients.reset(**args)
                result = None
            elif command == "wait_target":
                result = await clients.wait_target(**args)
            elif command == "stats":
                result = clients.stats(**args)
            elif command == "write":
                result = await writers.write(args)
            elif command == "ping":
                result = "pong"
            else:
                raise ValueError(f"unknown command {command!r}")
        except Exception:
            pipe.send(("error", traceback.format_exc()))
        else:
            pipe.send(("ok", result))


class Agent:
    """The parent's handle on one agent process."""

    def __init__(self, name: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.name = name
        self._pipe, child = ctx.Pipe()
        self.process = ctx.Process(target=_agent_main, args=(child,), name=name, daemon=True)
        self.process.start()
        child.close()
        self._pending = False

    def send(self, command: str, **args: Any) -> None:
        if self._pending:
            raise AgentError(f"{self.name}: a command is still running")
        self._pipe.send((command, args))
        self._pending = True

    def recv(self, timeout: float) -> Any:
        if not self._pipe.poll(max(0.0, timeout)):
            raise AgentError(f"{self.name}: no answer within {timeout:.0f}s")
        try:
            status, payload = self._pipe.recv()
        except (EOFError, OSError):
            raise AgentError(f"{self.name} died (exit code {self.process.exitcode})") from None
        self._pending = False
        if status != "ok":
            raise AgentError(f"{self.name} failed:\n{payload}")
        return payload

    def call(self, command: str, timeout: float, **args: Any) -> Any:
        self.send(command, **args)
        return self.recv(timeout)

    def stop(self) -> None:
        if self.process.is_alive() and not self._pending:
            with contextlib.suppress(OSError, AgentError):
                self.call("exit", 10.0)
        self.process.join(0.1 if self._pending else 5.0)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5.0)
        self._pipe.close()


def call_all(agents: Sequence[Agent], command: str, timeout: float,
             args: Sequence[dict[str, Any]] | None = None) -> list[Any]:
    """The same command to several agents at once (each with its own arguments)."""
    per_agent = list(args) if args is not None else [{} for _ in agents]
    for agent, a in zip(agents, per_agent, strict=True):
        agent.send(command, **a)
    deadline = time.monotonic() + timeout
    return [agent.recv(deadline - time.monotonic()) for agent in agents]
