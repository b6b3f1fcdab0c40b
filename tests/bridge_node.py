"""``python -m tests.bridge_node``: one bridge in its own process, for the multi-process tests.

Subscribes to the given topics (from seq 0), joins the given presence connections, prints
``{"ready": node_id}`` and then one JSON line per item received:
``{"t": topic, "s": seq|null, "e": type, "d": payload}``. SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import signal
import sys

import anyio
import orjson
from anyio.abc import TaskStatus

from bridge import Bridge, BridgeConfig, CutOff, Event, Reset


def emit(obj: object) -> None:
    sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")
    sys.stdout.buffer.flush()


async def follow(bridge: Bridge, topic: str, *,
                 task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    async with bridge.subscribe(topic, since=0) as sub:
        task_status.started()
        async for item in sub:
            if isinstance(item, Event):
                emit({"t": item.topic, "s": item.seq, "e": item.type, "d": item.payload})
            elif isinstance(item, Reset):
                emit({"t": item.topic, "reset": item.seq})
            elif isinstance(item, CutOff):
                emit({"t": item.topic, "cutoff": item.reason, "last": item.last_seq})


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--topic", action="append", default=[])
    parser.add_argument("--join", action="append", default=[], help="topic,user_id,conn_id")
    args = parser.parse_args(argv)
    config = BridgeConfig(heartbeat_interval=0.3, node_ttl=1.5, reap_interval=0.3,
                          health_interval=1.0, health_timeout=1.0)
    bridge = Bridge(args.dsn, node_id=args.node_id, config=config)
    async with anyio.create_task_group() as tg:
        await tg.start(bridge.run)
        for topic in args.topic:
            await tg.start(follow, bridge, topic)
        for join in args.join:
            topic, user_id, conn_id = join.split(",")
            await bridge.presence.join(topic, user_id, conn_id)
        emit({"ready": args.node_id})
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                tg.cancel_scope.cancel()
                break


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
