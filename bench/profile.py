"""`python -m bench.profile`: where a bulk request's server CPU goes, step by step, next to what
each step costs alone.

For each protocol (256-row `/predict`, V2 JSON, V2 with binary tensors; when named, the
`/predict` body with a bulk client's options: `predict-top0` `"top_k": 0`, `predict-cols`
`"format": "columns"`, `predict-cols0` both) the service runs pinned to one core under the
same wrk load as `python -m bench` (c16):

1. without a profiler, its CPU time per request (from /proc), and the same for the bare ASGI floor
   (the HTTP layer's own cost for that body);
2. with py-spy sampling it, the share of samples in each step (the deepest frame that belongs to a
   step decides), times the CPU per request of 1: each step's µs in the server;
3. each step alone, in this process, with the service's own functions: the body's JSON parse
   (simdjson), the rows to a float32 matrix, the onnxruntime run, the answer (the task's
   postprocessing) and its encoding.

Needs wrk and py-spy (`pip install py-spy`); loopback only.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from functools import partial
from pathlib import Path

import simdjson

from bench.__main__ import (MODEL, PATHS, ROOT, Server, bodies, cores, count, ensure_wrk, head_length, start,
                            stop, wrk)

# (step, markers): a sample belongs to the step of the deepest frame holding one of its markers.
STEPS = [
    ("parse the JSON body (simdjson)", ["_document (service/codecs/json.py"]),
    ("rows -> float32 matrix", ["table (service/codecs/json.py", "rows (service/codecs/json.py", "float32_matrix",
                                "_Reader", "values (service/codecs/v2_bytes.py", "_json_values"]),
    ("model run (onnxruntime)", ["onnxruntime"]),
    ("answer (probabilities, decisions, rows' JSON)", ["service/tasks.py", "service/named.py"]),
    ("encode the response", ["encode (service/codecs", "json_response", "json_bytes"]),
    ("V2 envelope (pydantic)", ["service/codecs/v2.py", "service/types/v2.py", "pydantic"]),
    ("metrics and access log", ["service/metrics.py", "prometheus_client", "service/logs.py", "logging/"]),
    ("data plane, batcher, routing", ["service/dataplane.py", "service/batching.py", "service/observe.py",
                                      "service/http/gateway.py", "service/api/", "starlette", "fastapi"]),
    ("HTTP (uvicorn, httptools, writes)", ["uvicorn", "httptools", "service/http/", "selector_events",
                                            "transports"]),
    ("event loop", ["asyncio/"]),
]
ROWS = 256


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_request(server: Server, proto: str, body: Path, seconds: int, wrk_core: str | None) -> float:
    """Server CPU µs per request under wrk c16 (after a 1 s warm-up)."""
    wrk(server.url(PATHS[proto]), body, 16, 1, wrk_core, proto)
    before, t0 = cpu_seconds(server.proc.pid), time.perf_counter()
    r = wrk(server.url(PATHS[proto]), body, 16, seconds, wrk_core, proto)
    used = cpu_seconds(server.proc.pid) - before
    return used / (r["rps"] * (time.perf_counter() - t0)) * 1e6


def shares(server: Server, proto: str, body: Path, seconds: int, wrk_core: str | None, out: Path) -> dict:
    """Each step's share of py-spy's samples of the server under wrk c16."""
    load = threading.Thread(target=wrk, args=(server.url(PATHS[proto]), body, 16, seconds + 2, wrk_core, proto))
    load.start()
    try:
        time.sleep(1)
        subprocess.run(["py-spy", "record", "--nonblocking", "-r", "250", "-d", str(seconds), "-f", "raw",
                        "-o", str(out), "-p", str(server.proc.pid)], check=True, capture_output=True)
    finally:
        load.join()
    counts: collections.Counter = collections.Counter()
    for line in out.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        step = next((name for frame in reversed(stack.split(";")) for name, marks in STEPS
                     if any(m in frame for m in marks)), "other")
        counts[step] += int(n)
    total = sum(counts.values())
    return {step: n / total for step, n in counts.items()}


def alone(proto: str, body: bytes) -> dict[str, float]:
    """Each step's µs measured alone, with the service's own functions (best of 5)."""
    from service.codecs import predict, v2
    from service.repository import load_version

    model = load_version(MODEL, 1, ROOT / "models" / MODEL / "1", 1).model
    head = head_length(proto, body)
    scope = {"headers": [] if head is None else [(b"inference-header-content-length", str(head).encode())]}
    codec = v2.CODEC if proto.startswith("v2") else predict.codec(predict.ANY_MODEL)
    parse = partial(codec.parse, body, scope, len(body))
    req = parse()
    x = codec.matrix(req, model, ROWS)
    raw = model.run(x)
    post = codec.post(req, model)
    answer = post(raw)
    steps = {"the body's JSON alone (simdjson.Parser().parse)": partial(simdjson.Parser().parse, body),
             "request decoded (parse, envelope, rows -> float32)": lambda: codec.matrix(parse(), model, ROWS),
             "model run (onnxruntime)": partial(model.run, x),
             "answer (probabilities, decisions, rows' JSON)": partial(post, raw),
             "encode the response": partial(codec.encode, req, model, answer, x)}
    if proto == "v2bin":
        del steps["the body's JSON alone (simdjson.Parser().parse)"]
    return {name: _best(f) for name, f in steps.items()}


def _best(f) -> float:
    n = 200
    return min(timeit.repeat(f, number=n, repeat=5)) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=count, default=8, help="seconds of load per measurement (default 8)")
    p.add_argument("--protocols", default="predict,v2,v2bin",
                   help="comma-separated, of predict, v2, v2bin, predict-top0, predict-cols, predict-cols0 "
                   "(default the first three)")
    args = p.parse_args(argv)
    if not set(args.protocols.split(",")) <= set(PATHS):
        p.error(f"--protocols: expected some of {sorted(PATHS)}, got {args.protocols}")
    ensure_wrk()
    if shutil.which("py-spy") is None:
        raise SystemExit("bench.profile: py-spy is required (pip install py-spy)")
    server_cores, wrk_core = cores(1)
    work = Path(tempfile.mkdtemp(prefix="tinyserve-profile-"))
    for proto in args.protocols.split(","):
        body = work / f"{proto}.body"
        body.write_bytes(bodies(ROWS)[proto])
        report(proto, body, args.seconds, work, server_cores, wrk_core)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def report(proto: str, body: Path, seconds: int, work: Path, server_cores: str, wrk_core: str | None) -> None:
    raw_floor = Server("raw-asgi", [sys.executable, "-m", "bench.floors", "raw", "{port}", "1"])
    service = Server("tinyserve", [sys.executable, "-m", "service"], {"TINYSERVE_WORKERS": "1"})
    probe = bodies(1)["predict"]
    try:
        for server in (raw_floor, service):
            start(server, server_cores, probe, work / f"{server.name}.log")
        floor = cpu_per_request(raw_floor, proto, body, seconds, wrk_core)
        total = cpu_per_request(service, proto, body, seconds, wrk_core)
        share = shares(service, proto, body, seconds, wrk_core, work / f"{proto}.spy")
    finally:
        for server in (raw_floor, service):
            stop(server)
    print(f"## {ROWS} rows, {proto}: {total:,.0f} µs of server CPU per request at c16 "
          f"(the bare ASGI floor: {floor:,.0f} µs for the same body)\n")
    print("| step | in the server, µs | share |")
    print("|---|---:|---:|")
    for step, _ in [*STEPS, ("other", None)]:
        if share.get(step):
            print(f"| {step} | {share[step] * total:,.0f} | {share[step]:.0%} |")
    print("\nThe same steps alone, in one process (best of 5):\n")
    print("| step alone | µs |")
    print("|---|---:|")
    for step, us in alone(proto, body.read_bytes()).items():
        print(f"| {step} | {us:,.0f} |")
    print()


if __name__ == "__main__":
    sys.exit(main())
