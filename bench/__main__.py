"""`python -m bench`: the service and two floor servers, side by side, under the same wrk load.

Loopback only. Every server runs under uvicorn pinned (taskset) to the first cores, wrk to the
last core; each cell is one wrk run of --duration seconds, repeated --rounds times (median
reported, rounds interleaved so drift hits every server alike, every other round in reverse order
so each server goes first as often as the other of any pair). Prints requests/s, rows/s,
p50/p99 latency and errors per cell, the service's ratio to each floor, its cold start (process
start to first successful prediction) and its resident memory after warm-up. `--baseline GITREF`
adds another commit's service (bench/baseline.py) and its ratios.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from bench import baseline

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL, N_FEATURES = "digits", 64  # the 64-25-15-10 network of the default repository


@dataclass
class Server:
    """One server under test: how to start it and which path each protocol posts to."""

    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    port: int = 0
    cold_start: float | None = None
    cwd: Path = ROOT  # also first on PYTHONPATH: `python -m service` imports the service found here

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def is_service(name: str) -> bool:
    """The service and its variants and baseline, as against the floors."""
    return name.startswith("tinyserve") or name == baseline.NAME


def bodies(rows: int, seed: int = 0) -> dict[str, bytes]:
    """The same rows as a /predict body, a V2 JSON body and a V2 body with binary tensors (the
    binary tensor extension tritonclient uses, every output asked for binary too); pixel values
    as digits has them."""
    rnd = random.Random(seed)
    x = [[float(rnd.randint(0, 16)) for _ in range(N_FEATURES)] for _ in range(rows)]
    predict = {"model": MODEL, "instances": x}
    flat = [v for row in x for v in row]
    v2 = {"inputs": [{"name": "features", "shape": [rows, N_FEATURES], "datatype": "FP32", "data": flat}]}
    tensor = struct.pack(f"<{len(flat)}f", *flat)
    head = {"inputs": [{"name": "features", "shape": [rows, N_FEATURES], "datatype": "FP32",
                        "parameters": {"binary_data_size": len(tensor)}}],
            "parameters": {"binary_data_output": True}}
    return {"predict": json.dumps(predict).encode(), "v2": json.dumps(v2).encode(),
            "v2bin": json.dumps(head).encode() + tensor,
            **{proto: json.dumps({**predict, **options}).encode() for proto, options in PREDICT_OPTIONS.items()}}


def head_length(proto: str, body: bytes) -> int | None:
    """The Inference-Header-Content-Length of a binary V2 body (the length of its JSON head)."""
    if proto != "v2bin":
        return None
    return json.JSONDecoder().raw_decode(body.decode("latin-1"))[1]  # latin-1: one char per byte


# `/predict` bodies with the options bulk clients have: no top_k list, the predictions as columns
# (with the default top_k), both. `python -m bench` measures the first two; pair and profile any.
PREDICT_OPTIONS = {"predict-top0": {"top_k": 0}, "predict-cols": {"format": "columns"},
                   "predict-cols0": {"top_k": 0, "format": "columns"}}
PATHS = {"predict": "/predict", "v2": f"/v2/models/{MODEL}/infer", "v2bin": f"/v2/models/{MODEL}/infer",
         **dict.fromkeys(PREDICT_OPTIONS, "/predict")}
ENDPOINT_NOTE = {"v2bin": " (binary)",  # the options, as `baseline.LABELS` names them after "/predict"
                 **{proto: f" ({baseline.LABELS[proto].removeprefix('/predict ')})" for proto in PREDICT_OPTIONS}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(port: int, path: str, body: bytes, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def start(server: Server, cores: str, probe: bytes, log: Path, timeout: float = 60.0) -> None:
    """Start pinned to `cores`; wait for a 200 to a real prediction and record how long it took."""
    server.port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINYSERVE_")}
    env.update(server.env, TINYSERVE_HOST="127.0.0.1", TINYSERVE_PORT=str(server.port),
               PYTHONPATH=str(server.cwd))
    command = [a.replace("{port}", str(server.port)) for a in server.command]
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        server.proc = subprocess.Popen(["taskset", "-c", cores, *command], cwd=server.cwd, env=env,
                                       stdout=out, stderr=subprocess.STDOUT)
    while time.perf_counter() - t0 < timeout:
        if server.proc.poll() is not None:
            raise SystemExit(f"bench: {server.name} exited with {server.proc.returncode} before answering "
                             f"({last_line(log)}); see {log}")
        try:
            status, answer = post(server.port, "/predict", probe, timeout=1.0)
        except OSError:
            status, answer = 0, b""
        if status == 200:
            server.cold_start = time.perf_counter() - t0
            return
        if status >= 400 and status != 503:  # up but failing the probe (no such model?): waiting won't help
            raise SystemExit(f"bench: {server.name} answered {status} to a {MODEL} prediction on /predict "
                             f"({answer[:200].decode(errors='replace')}); see {log}")
        time.sleep(0.005)
    raise SystemExit(f"bench: {server.name} gave no 200 within {timeout}s ({last_line(log)}); see {log}")


def last_line(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "no output"


def stop(server: Server) -> None:
    if server.proc and server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


def rss_mb(pid: int) -> tuple[float, list[float]]:
    """VmRSS of the process and of each of its child processes (uvicorn workers), in MB."""
    def vmrss(p: int) -> float:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    children = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and f"\nPPid:\t{pid}\n" in (entry / "status").read_text():
                if b"resource_tracker" not in (entry / "cmdline").read_bytes():
                    children.append(vmrss(int(entry.name)))
        except OSError:
            continue
    return vmrss(pid), children


def server_pid(server: Server) -> int:
    """The server's own pid: taskset execs the command, so it is the Popen pid."""
    return server.proc.pid


def wrk(url: str, body: Path, connections: int, duration: int, core: str | None, proto: str = "predict") -> dict:
    """One wrk run; requests/s, p50/p99 in ms, errors (non-2xx + socket errors)."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s",
               "-s", str(HERE / "post.lua"), url]
    if core is not None:
        command = ["taskset", "-c", core, *command]
    env = {**os.environ, "BENCH_BODY": str(body)}
    head = head_length(proto, body.read_bytes())
    if head is not None:
        env["BENCH_HEAD_LENGTH"] = str(head)
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=duration + 30)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if line is None:
        raise SystemExit(f"wrk failed ({out.returncode}): {out.stdout}{out.stderr}")
    r = json.loads(line[6:])
    return {"rps": r["requests"] / (r["duration_us"] / 1e6), "p50": r["p50_us"] / 1000,
            "p99": r["p99_us"] / 1000, "errors": r["non2xx"] + r["socket_errors"]}


def ensure_wrk() -> None:
    """Debian's wrk, installed with apt when missing (root only); no wrk is an error, not a skip."""
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("bench: installing wrk with apt-get", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env, check=False, timeout=600,
                       stdout=subprocess.DEVNULL)
    if not shutil.which("wrk"):
        raise SystemExit("bench: wrk is required (apt-get install wrk)")


def cores(workers: int) -> tuple[str, str | None]:
    """Server cores and the load generator's core: separate while the machine has enough."""
    n = os.cpu_count() or 1
    if n > workers:
        return f"0-{workers - 1}" if workers > 1 else "0", str(n - 1)
    return f"0-{n - 1}", None  # as many workers as cores: nothing left to keep wrk apart


def counts(text: str) -> list[int]:
    """An option's comma-separated whole numbers of 1 or more (argparse `type`)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = [0]
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers of 1 or more, got {text!r}")
    return values


def count(text: str) -> int:
    """An option's one whole number of 1 or more (argparse `type`)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer of 1 or more, got {text!r}")
    return int(text)


def setting(text: str) -> str:
    """A `--env` item, TINYSERVE_X=VALUE (argparse `type`)."""
    key, sep, _ = text.partition("=")
    if not sep or not key.startswith("TINYSERVE_"):
        raise argparse.ArgumentTypeError(f"expected TINYSERVE_X=VALUE, got {text!r}")
    return text


def parse_args(argv: list[str] | None, prog: str = "python -m bench") -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=count, default=5, help="seconds per cell (default 5)")
    p.add_argument("--rounds", type=count, default=1, help="rounds per cell, median reported (default 1)")
    p.add_argument("--workers", type=count, default=1, help="uvicorn workers for every server (default 1)")
    p.add_argument("--rows", type=counts, default="1,256", help="rows per request, comma-separated (default 1,256)")
    p.add_argument("--concurrency", type=counts, default="1,16,64",
                   help="connections, comma-separated (default 1,16,64)")
    p.add_argument("--batch", metavar="SIZE,DELAY_MS",
                   help="also run the service with these batching settings on /predict, as tinyserve+batch "
                   "(the default is 64,0; e.g. 0,0 turns batching off, 64,2 waits up to 2 ms)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:TINYSERVE_X=VALUE[,...]",
                   help="also run the service with these settings on /predict, as tinyserve+NAME "
                   "(repeatable), e.g. http:TINYSERVE_HTTP=httptools")
    p.add_argument("--baseline", metavar="GITREF",
                   help="also run the service of this commit (a temporary git worktree, its own models/) "
                   "with the same settings, as baseline, and print tinyserve ÷ baseline per cell")
    p.add_argument("--env", action="append", type=setting, default=[], metavar="TINYSERVE_X=VALUE",
                   help="extra setting for the service (repeatable), e.g. TINYSERVE_ACCESS_LOG=false")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: one cell (1 row, concurrency 16), no warm-up, --duration 1")
    p.add_argument("--json", type=Path, help="also write every result to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.rows, args.concurrency, args.duration, args.rounds = [1], [16], 1, 1
    args.variants = {}  # name -> the service's extra settings
    if args.batch:
        size, comma, delay = args.batch.partition(",")
        if not comma:
            p.error(f"--batch {args.batch!r}: expected SIZE,DELAY_MS")
        args.variants["batch"] = {"TINYSERVE_BATCH_MAX_SIZE": size, "TINYSERVE_BATCH_MAX_DELAY_MS": delay}
    for text in args.variant:
        name, _, settings = text.partition(":")
        items = [item.partition("=") for item in settings.split(",")]
        if not name or not all(key and sep for key, sep, _ in items):
            p.error(f"--variant {text!r}: expected NAME:TINYSERVE_X=VALUE[,...]")
        args.variants[name] = {key: value for key, _, value in items}
    if args.baseline and any(item.startswith("TINYSERVE_MODEL_ROOT=") for item in args.env):
        p.error("--baseline serves each checkout's own models/; it cannot take --env TINYSERVE_MODEL_ROOT")
    return args


def servers(args: argparse.Namespace, old: Path | None) -> list[Server]:
    """The floors, the service, its baseline checkout `old` (if any), then its variants."""
    py, w = sys.executable, str(args.workers)
    extra = dict(item.split("=", 1) for item in args.env)
    found = [Server("raw-asgi", [py, "-m", "bench.floors", "raw", "{port}", w]),
             Server("fastapi", [py, "-m", "bench.floors", "fastapi", "{port}", w]),
             Server("tinyserve", [py, "-m", "service"], {"TINYSERVE_WORKERS": w, **extra})]
    if old is not None:
        root = baseline.model_root(old, args.baseline, MODEL)
        found.append(Server(baseline.NAME, [py, "-m", "service"],
                            {"TINYSERVE_WORKERS": w, **extra, "TINYSERVE_MODEL_ROOT": str(root)}, cwd=old))
    for name, settings in args.variants.items():
        found.append(Server(f"tinyserve+{name}", [py, "-m", "service"], {"TINYSERVE_WORKERS": w, **extra, **settings}))
    return found


def cells(args: argparse.Namespace, names: list[str]) -> list[tuple[str, str, int, int]]:
    """(server, protocol, rows, concurrency) per measurement; a protocol's servers back to back."""
    out = []
    for rows in args.rows:
        for conc in args.concurrency:
            out += [(name, "predict", rows, conc) for name in names]
            if not args.quick:
                out += [(name, proto, rows, conc) for proto in ("v2", "v2bin")
                        for name in names if name in ("tinyserve", baseline.NAME)]
                out += [(name, proto, rows, conc) for proto in ("predict-top0", "predict-cols")
                        for name in names if name == "tinyserve"]
    return out


def main(argv: list[str] | None = None, prog: str = "python -m bench") -> int:
    args = parse_args(argv, prog)
    # SIGTERM unwinds like Ctrl-C, so servers stop and a baseline worktree is removed either way.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    ensure_wrk()
    commit = baseline.resolve(ROOT, args.baseline) if args.baseline else None
    server_cores, wrk_core = cores(args.workers)
    work = Path(tempfile.mkdtemp(prefix="tinyserve-bench-"))
    files = {}
    for rows in sorted(set(args.rows) | {1}):
        for proto, body in bodies(rows).items():
            files[proto, rows] = work / f"{proto}-{rows}.body"
            files[proto, rows].write_bytes(body)
    with baseline.checkout(ROOT, commit) if commit else nullcontext() as old:
        started = servers(args, old)
        if old is not None:
            args.baseline_info = {"ref": args.baseline, "commit": commit, "worktree": str(old),
                                  "same_model": baseline.same_model(ROOT / "models", old / "models", MODEL)}
        results, memory = measure(args, started, files, work, server_cores, wrk_core)
    report(args, started, results, memory, server_cores, wrk_core)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def measure(args: argparse.Namespace, started: list[Server], files: dict, work: Path, server_cores: str,
            wrk_core: str | None) -> tuple[dict, dict]:
    """Start and warm up every server, then the rounds: every other one in reverse order."""
    results: dict[tuple, list[dict]] = {}
    memory = {}
    try:
        for server in started:
            start(server, server_cores, files["predict", 1].read_bytes(), work / f"{server.name}.log")
        if not args.quick:  # warm-up: every server, every body, before anything is measured
            for server in started:
                for (proto, rows), body in files.items():
                    if proto == "predict" or is_service(server.name):
                        wrk(server.url(PATHS[proto]), body, 16, 1, wrk_core, proto)
        for server in started:
            memory[server.name] = rss_mb(server_pid(server))
        todo = cells(args, [s.name for s in started])
        by_name = {s.name: s for s in started}
        for i in range(args.rounds):
            # Reversed every other round: of any two servers, each goes first in turn.
            for name, proto, rows, conc in todo if i % 2 == 0 else todo[::-1]:
                r = wrk(by_name[name].url(PATHS[proto]), files[proto, rows], conc, args.duration, wrk_core, proto)
                results.setdefault((name, proto, rows, conc), []).append(r)
    finally:
        for server in started:
            stop(server)
    return results, memory


def median(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def report(args, started: list[Server], results: dict, memory: dict, server_cores: str,
           wrk_core: str | None) -> None:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown")
    header(args, cpu, server_cores, wrk_core)
    print("| server | endpoint | rows | conc | req/s | rows/s | p50 ms | p99 ms | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    order = {s.name: i for i, s in enumerate(started)}  # each server's cells together, as started
    med = {key: median(results[key]) for key in sorted(results, key=lambda k: (
        args.rows.index(k[2]), args.concurrency.index(k[3]), order[k[0]], k[1]))}
    for (name, proto, rows, conc), m in med.items():
        endpoint = (PATHS[proto] + ENDPOINT_NOTE.get(proto, "")) if is_service(name) else "(any)"
        print(f"| {name} | {endpoint} | {rows} | {conc} | {m['rps']:,.0f} | {m['rps'] * rows:,.0f} | "
              f"{m['p50']:.2f} | {m['p99']:.2f} | {m['errors']:.0f} |")
    print()
    floor_ratios(args, med)
    against = baseline.report(results) if args.baseline else None
    for server in started:
        if is_service(server.name):
            own, children = memory[server.name]
            per_worker = f"workers {', '.join(f'{c:.0f}' for c in children)} MB" if children else ""
            print(f"{server.name}: cold start {server.cold_start:.2f} s (process start to first 200 "
                  f"from /predict); VmRSS after warm-up {own:.0f} MB {per_worker}".rstrip())
    if args.json:
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d %H:%M"), "nproc": os.cpu_count(), "cpu": cpu,
            "workers": args.workers, "duration": args.duration, "rounds": args.rounds,
            "cells": [{"server": k[0], "protocol": k[1], "rows": k[2], "concurrency": k[3], **v,
                       "rps_rounds": [r["rps"] for r in results[k]]} for k, v in med.items()],
            "cold_start_s": {s.name: s.cold_start for s in started},
            "rss_mb": {k: {"process": v[0], "workers": v[1]} for k, v in memory.items()},
            "baseline": {**args.baseline_info, **against} if against else None}, indent=1))


def header(args, cpu: str, server_cores: str, wrk_core: str | None) -> None:
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  nproc={os.cpu_count()}  cpu={cpu}")
    if args.env:
        print(f"# service settings: {' '.join(args.env)}")
    if args.baseline:
        info = args.baseline_info
        model = "the same" if info["same_model"] else "NOT the same (compare with care)"
        ref = info["commit"] if info["ref"] == info["commit"] else f"{info['ref']} = {info['commit']}"
        print(f"# baseline: {ref}, the service of that commit run from the git "
              f"worktree {info['worktree']} (removed), its own models/: {MODEL} {model} as the service's")
    for name, settings in args.variants.items():
        print(f"# tinyserve+{name}: {' '.join(f'{k}={v}' for k, v in settings.items())}")
    print(f"# servers on cores {server_cores}, wrk on core {wrk_core or 'shared'}; workers={args.workers}; "
          f"{args.duration}s per cell, median of {args.rounds}, every other round in reverse order; "
          f"model {MODEL} (64-25-15-10)")
    print()


def floor_ratios(args, med: dict) -> None:
    print("Ratios (service throughput / floor throughput; rows/s ratios equal req/s ratios):")
    print()
    print("| rows | conc | /predict ÷ raw | /predict ÷ fastapi | /predict top_k 0 ÷ fastapi | "
          "/predict columns ÷ fastapi | V2 ÷ fastapi | V2 binary ÷ raw | V2 ÷ /predict |"
          + "".join(f" {name} ÷ /predict |" for name in args.variants))
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(args.variants))
    for rows in args.rows:
        for conc in args.concurrency:
            get = lambda name, proto="predict": med.get((name, proto, rows, conc), {}).get("rps")  # noqa: E731
            ratio = lambda a, b: f"{a / b:.2f}" if a and b else "-"  # noqa: E731
            svc = get("tinyserve")
            line = (f"| {rows} | {conc} | {ratio(svc, get('raw-asgi'))} | {ratio(svc, get('fastapi'))} | "
                    f"{ratio(get('tinyserve', 'predict-top0'), get('fastapi'))} | "
                    f"{ratio(get('tinyserve', 'predict-cols'), get('fastapi'))} | "
                    f"{ratio(get('tinyserve', 'v2'), get('fastapi'))} | {ratio(get('tinyserve', 'v2bin'), get('raw-asgi'))} | "
                    f"{ratio(get('tinyserve', 'v2'), svc)} |")
            line += "".join(f" {ratio(get(f'tinyserve+{name}'), svc)} |" for name in args.variants)
            print(line)
    print()


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # servers are stopped and a baseline worktree removed on the way out
        print("bench: interrupted", file=sys.stderr)
        sys.exit(130)
