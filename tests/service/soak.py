"""Soak: sustained concurrent load on a real `python -m service`, zero errors, bounded memory.

    python -m tests.service.soak --seconds 60 --connections 64

Starts the server on the default model repository (metrics and access log on, as shipped; the
log goes to a file), runs `connections` concurrent httpx clients cycling through the native, V2
and TF Serving predict routes for `seconds`, and reads the server's RSS from /proc/<pid>/status
after the warm-up (the first tenth, at least 1 s) and at the end. Prints one JSON summary and
exits 1 on any error or when RSS grows more than `--max-growth-mb` after the warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

from service.api.examples import DIGIT_3, PATIENT
from service.config import DEFAULT_MODEL_ROOT
from tests.service import helpers

REQUESTS = [
    ("/predict", {"model": "digits", "instances": [DIGIT_3], "top_k": 3}),
    ("/models/diabetes/predict", {"instances": [PATIENT] * 4}),
    ("/v2/models/digit-traits/infer", {"inputs": [{"name": "features", "shape": [2, 64], "datatype": "FP32",
                                                   "data": DIGIT_3 * 2}]}),
    ("/v1/models/digits-binary:predict", {"instances": [DIGIT_3]}),
]


def rss_kb(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def load(url: str, seconds: float, connections: int, pid: int, warmup: float) -> dict:
    """Run the load; counts, latency percentiles and RSS samples."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    bodies = [(path, json.dumps(body).encode()) for path, body in REQUESTS]

    async def worker(client: httpx.AsyncClient, i: int) -> None:
        while time.monotonic() < deadline:
            path, body = bodies[i % len(bodies)]
            i += 1
            start = time.perf_counter()
            try:
                response = await client.post(path, content=body)
                key = None if response.status_code == 200 else str(response.status_code)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            latencies.append(time.perf_counter() - start)
            if key is not None:
                errors[key] = errors.get(key, 0) + 1

    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        tasks = [asyncio.create_task(worker(client, i)) for i in range(connections)]
        await asyncio.sleep(warmup)
        rss_warm = rss_kb(pid)
        await asyncio.gather(*tasks)
    latencies.sort()
    pct = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2)  # noqa: E731
    return {"requests": len(latencies), "errors": errors, "rps": round(len(latencies) / seconds),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": pct(1.0), "rss_warm_kb": rss_warm}


def soak(seconds: float, connections: int, model_root: Path = DEFAULT_MODEL_ROOT) -> dict:
    """Start a server, load it, stop it; the summary."""
    with tempfile.TemporaryDirectory() as tmp:
        procs: list = []
        env = {"TINYSERVE_MODEL_ROOT": str(model_root), "TINYSERVE_POLL_SECONDS": "2"}
        with helpers.running_server(env, Path(tmp) / "server.log", procs=procs) as url:
            pid = procs[0].pid
            rss_start = rss_kb(pid)
            summary = asyncio.run(load(url, seconds, connections, pid, max(1.0, seconds / 10)))
            summary["rss_end_kb"] = rss_kb(pid)
            metrics = httpx.get(f"{url}/metrics").text
        summary["access_log_lines"] = sum(1 for line in (Path(tmp) / "server.log").read_text().splitlines()
                                          if '"tinyserve.access"' in line)
    summary |= {"seconds": seconds, "connections": connections, "rss_start_kb": rss_start,
                "rss_growth_after_warmup_kb": summary["rss_end_kb"] - summary["rss_warm_kb"],
                "metrics_requests_total": sum(
                    v for line in metrics.splitlines() if line.startswith("tinyserve_requests_total{")
                    and 'status="200"' in line and 'model="none"' not in line
                    for v in [float(line.rsplit(" ", 1)[1])])}
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--max-growth-mb", type=float, default=20.0)
    args = parser.parse_args(argv)
    summary = soak(args.seconds, args.connections)
    print(json.dumps(summary, indent=2))
    ok = not summary["errors"] and summary["rss_growth_after_warmup_kb"] <= args.max_growth_mb * 1024
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
