"""The Node peer's dependencies: `npm ci` into bench/peers/node_modules when it is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parent / "peers"
_REQUIRED = ("socket.io", "@socket.io/postgres-adapter", "pg", "ws")


class NodeUnavailable(RuntimeError):
    """node or npm is missing, or `npm ci` failed: the Node peer cannot run."""


def node_binary() -> str | None:
    return shutil.which("node")


def installed() -> bool:
    modules = PEERS_DIR / "node_modules"
    return all((modules / name / "package.json").exists() for name in _REQUIRED)


def ensure_node_peers(timeout: float = 300.0) -> Path:
    """Install the locked versions of the Node peer's packages unless they are there."""
    if node_binary() is None:
        raise NodeUnavailable("node is not installed")
    if installed():
        return PEERS_DIR
    npm = shutil.which("npm")
    if npm is None:
        raise NodeUnavailable("npm is not installed")
    try:
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PEERS_DIR,
            capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise NodeUnavailable(f"npm ci timed out after {timeout:.0f}s") from exc
    if result.returncode != 0 or not installed():
        raise NodeUnavailable(f"npm ci failed ({result.returncode}): {result.stderr[-2000:]}")
    return PEERS_DIR
