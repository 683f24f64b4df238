#!/usr/bin/env python3
"""Benchmark one suspend fanned out to a fleet of stand-in kumods that each answer after a delay.

    .venv/bin/python bench/fanout.py                  # 100 nodes, 50 ms per answer, 10 runs
    .venv/bin/python bench/fanout.py --nodes 500

The stand-in is one real HTTP server (uvicorn, in a child process: the nodes are other machines) listening on
one port per node, so that every node is its own origin with its own connections, as in a real fleet. It
answers GET /metrics, the suspension and bounce listings and POST /api/admin/suspend/v1 after --delay-ms. The
nodes are synced once first (untimed), as the sync job does; each suspend then costs one round trip per node
(what it affects comes from that sync), so the floor is the delay. The operation runs through
OperationService, as POST /api/v1/operations does, on a throwaway SQLite file.

Two series: "warm", where the connections the sync opened are still open (the sync job reads every node each
15 s, inside the 60 s keep-alive), and "cold", where the connection pool is dropped before every run so that each
node costs a TCP handshake too. It also prints mtactl's own CPU time per fan-out: on a 2-core machine shared with
the stand-in, that is the bound.
Target (issue #4): 100 nodes at 50 ms, < 250 ms for the whole suspend.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import statistics
import sys
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.model import QueueOperationType
from controlplane.fleet.schema import NodeCreate
from controlplane.operations.schema import OperationRequest
from controlplane.services import Services
from controlplane.settings import Settings

METRICS = b'# TYPE scheduled_count gauge\nscheduled_count{queue="acme@gmail.com"} 120\n'


def stand_in(delay: float) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await asyncio.sleep(delay)
        path = scope["path"].lstrip("/")
        if path == "metrics":
            status, body, kind = 200, METRICS, b"text/plain"
        elif path == "api/admin/suspend/v1" and scope["method"] == "POST":
            status, body, kind = 200, json.dumps({"id": str(uuid.uuid4())}).encode(), b"application/json"
        elif path in ("api/admin/suspend/v1", "api/admin/suspend-ready-q/v1", "api/admin/bounce/v1"):
            status, body, kind = 200, b"[]", b"application/json"
        else:
            status, body, kind = 404, b"not found", b"text/plain"
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", kind)]})
        await send({"type": "http.response.body", "body": body})

    return app


def serve_stand_in(nodes: int, delay: float, ports: Connection) -> None:
    sockets = []
    for _ in range(nodes):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        sockets.append(listener)
    ports.send([s.getsockname()[1] for s in sockets])
    config = uvicorn.Config(stand_in(delay), log_level="warning", backlog=4096)
    uvicorn.Server(config).run(sockets=sockets)


async def run(args: argparse.Namespace) -> None:
    receiving, sending = multiprocessing.Pipe(duplex=False)
    server = multiprocessing.Process(
        target=serve_stand_in, args=(args.nodes, args.delay_ms / 1000, sending), daemon=True
    )
    server.start()
    ports: list[int] = receiving.recv()
    for _ in range(200):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", ports[-1])) == 0:
                break
        await asyncio.sleep(0.05)
    workdir = Path(tempfile.mkdtemp(prefix="mtactl-fanout-"))
    services = await Services.start(Settings(database_url=f"sqlite+aiosqlite:///{workdir}/fanout.db"))
    try:
        for n in range(args.nodes):
            await services.fleet.create(
                NodeCreate(name=f"kumo-{n}", kind="kumomta", base_url=f"http://127.0.0.1:{ports[n]}"), actor="bench"
            )
        synced = await services.fleet_state.sync()
        if any(s.error for s in synced):
            raise RuntimeError(f"sync failed: {[s.error for s in synced if s.error][:3]}")
        request = OperationRequest(
            operation=QueueOperationType.suspend, reason="bench", domain="gmail.com", duration="1m"
        )
        print(f"{args.nodes} nodes, {args.delay_ms} ms per answer (1 round trip per node), {args.runs} runs each")
        for series in ("warm", "cold"):
            timings, cpu = [], []
            for _ in range(args.runs + 1):
                if series == "cold":
                    await services.fleet.close()  # a fresh pool: every node is connected anew
                started, started_cpu = time.perf_counter(), time.process_time()
                record = await services.operations.submit(request, actor="bench")
                timings.append(time.perf_counter() - started)
                cpu.append(time.process_time() - started_cpu)
                if record.status != "done":
                    raise RuntimeError(f"operation {record.status}: {record.total}")
            timings, cpu = timings[1:], cpu[1:]  # the first run warms imports (and, warm, the pool)
            print(
                f"{series}: suspend across the fleet: median {1000 * statistics.median(timings):.0f} ms, "
                f"max {1000 * max(timings):.0f} ms (floor {args.delay_ms} ms; target < 250 ms); "
                f"mtactl's own CPU per fan-out: median {1000 * statistics.median(cpu):.0f} ms"
            )
    finally:
        await services.close()
        server.terminate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--delay-ms", type=int, default=50)
    parser.add_argument("--runs", type=int, default=10)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
