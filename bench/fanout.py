#!/usr/bin/env python3
"""Benchmark one suspend fanned out to a fleet of stand-in kumods that each answer after a delay.

    .venv/bin/python bench/fanout.py                  # 100 nodes, 50 ms per answer, 10 runs
    .venv/bin/python bench/fanout.py --nodes 500

The stand-in is one real HTTP server (uvicorn, in a child process: the nodes are other machines) serving
every node under its own path prefix
(http://127.0.0.1:PORT/n17/...), answering GET /metrics and POST /api/admin/suspend/v1 after --delay-ms. Each
node costs two sequential round trips (its queue counts, then the suspend), so the floor is 2 x delay.
The operation runs through OperationService, as POST /api/v1/operations does, on a throwaway SQLite file.
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
        path = scope["path"].split("/", 2)[-1]
        if path == "metrics":
            status, body, kind = 200, METRICS, b"text/plain"
        elif path == "api/admin/suspend/v1":
            status, body, kind = 200, json.dumps({"id": str(uuid.uuid4())}).encode(), b"application/json"
        else:
            status, body, kind = 404, b"not found", b"text/plain"
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", kind)]})
        await send({"type": "http.response.body", "body": body})

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_stand_in(port: int, delay: float) -> None:
    uvicorn.run(stand_in(delay), host="127.0.0.1", port=port, log_level="warning", backlog=4096)


async def run(args: argparse.Namespace) -> None:
    port = free_port()
    server = multiprocessing.Process(target=serve_stand_in, args=(port, args.delay_ms / 1000), daemon=True)
    server.start()
    for _ in range(200):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        await asyncio.sleep(0.05)
    workdir = Path(tempfile.mkdtemp(prefix="mtactl-fanout-"))
    services = await Services.start(Settings(database_url=f"sqlite+aiosqlite:///{workdir}/fanout.db"))
    try:
        for n in range(args.nodes):
            await services.fleet.create(
                NodeCreate(name=f"kumo-{n}", kind="kumomta", base_url=f"http://127.0.0.1:{port}/n{n}"), actor="bench"
            )
        request = OperationRequest(
            operation=QueueOperationType.suspend, reason="bench", domain="gmail.com", duration="1m"
        )
        timings, cpu = [], []
        for _ in range(args.runs + 1):
            started, started_cpu = time.perf_counter(), time.process_time()
            record = await services.operations.submit(request, actor="bench")
            timings.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
            if record.status != "done":
                raise RuntimeError(f"operation {record.status}: {record.total}")
        timings, cpu = timings[1:], cpu[1:]  # the first run warms imports and connection setup
        print(f"{args.nodes} nodes, {args.delay_ms} ms per answer (2 round trips per node), {args.runs} runs")
        print(
            f"suspend across the fleet: median {1000 * statistics.median(timings):.0f} ms, "
            f"max {1000 * max(timings):.0f} ms (floor {2 * args.delay_ms} ms; target < 250 ms)"
        )
        print(f"mtactl's own CPU per fan-out: median {1000 * statistics.median(cpu):.0f} ms (the stand-in's is apart)")
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
