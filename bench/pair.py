"""`python -m bench.pair --baseline GITREF`: this checkout's service and another commit's, loaded
at the same time on one core.

On a noisy VM, servers measured one after the other differ by more than a change under test: the
machine's speed moves within seconds. Here both servers (each `python -m service` as shipped, the
baseline from a temporary worktree with its own models/, as `python -m bench --baseline` starts
it) run pinned to the same core, and two wrk processes on another core load both at once. The
kernel shares the core between the two processes, so whatever the machine does, it does to both
within the same milliseconds: the ratio of their requests/s is their ratio of speed. The CPU each
server used (from /proc) is reported too; the ratio holds only while both got the same share,
that is while both were saturated.

Each cell (protocol x rows) is a warm-up run, then --repeats runs of --seconds; the median ratio
is reported with its range, and for the four cells of issue 13 their geometric mean and lowest.
`--floor fastapi` (or `raw-asgi`) compares with a floor server of `python -m bench` instead,
posted the `/predict` body of the same rows, as there: issue 18's ratios, measured the same way.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from contextlib import nullcontext
from pathlib import Path

from bench import baseline
from bench.__main__ import (PATHS, ROOT, Server, bodies, cores, count, counts, ensure_wrk, parse_args, servers,
                            setting, start, stop, wrk)
from bench.profile import cpu_seconds

SERVER_CORE, WRK_CORE = cores(1)  # one core for both servers, the last one for wrk (when there are two)
FLOORS = ("fastapi", "raw-asgi")  # bench/floors.py


Load = tuple[str, Path, str]  # what wrk posts to a server: path, body file, protocol


def both(pair: list[Server], loads: dict[str, Load], seconds: int, concurrency: int) -> dict[str, dict]:
    """One run of wrk against each server at once: requests/s and CPU seconds per server."""
    out: dict[str, dict] = {}
    failed: dict[str, BaseException] = {}
    before = {s.name: cpu_seconds(s.proc.pid) for s in pair}

    def load(server: Server) -> None:
        try:
            path, body, proto = loads[server.name]
            out[server.name] = wrk(server.url(path), body, concurrency, seconds, WRK_CORE, proto)
        except BaseException as exc:  # noqa: BLE001 - wrk's own SystemExit, reported from the main thread
            failed[server.name] = exc

    threads = [threading.Thread(target=load, args=(s,)) for s in pair]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in pair:
        if s.name in failed:
            raise SystemExit(f"bench.pair: wrk against {s.name} failed: {failed[s.name]}")
        if out[s.name]["errors"]:
            raise SystemExit(f"bench.pair: {s.name} answered {out[s.name]['errors']:.0f} errors on "
                             f"{loads[s.name][0]}")
        out[s.name]["cpu"] = cpu_seconds(s.proc.pid) - before[s.name]
    return out


def cell(pair: list[Server], loads: dict[str, Load], args) -> dict:
    other = pair[1].name
    both(pair, loads, 1, args.concurrency)  # warm-up
    runs = [both(pair, loads, args.seconds, args.concurrency) for _ in range(args.repeats)]
    ratios = [r["tinyserve"]["rps"] / r[other]["rps"] for r in runs]
    shares = [r["tinyserve"]["cpu"] / r[other]["cpu"] for r in runs]
    return {"ratio": statistics.median(ratios), "rounds": ratios, "share": statistics.median(shares),
            "new": statistics.median(r["tinyserve"]["rps"] for r in runs),
            "old": statistics.median(r[other]["rps"] for r in runs)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pair", description=__doc__.split("\n\n")[0])
    against = p.add_mutually_exclusive_group(required=True)
    against.add_argument("--baseline", metavar="GITREF", help="the commit to compare with")
    against.add_argument("--floor", choices=FLOORS, help="a floor server to compare with instead (it is "
                         "posted the /predict body of the same rows, as in python -m bench)")
    p.add_argument("--rows", type=counts, default="1,256", help="rows per request, comma-separated (default 1,256)")
    p.add_argument("--protocols", default="predict,v2",
                   help="of predict, v2, v2bin, predict-top0, predict-cols, predict-cols0 (default predict,v2)")
    p.add_argument("--concurrency", type=count, default=16, help="connections per server (default 16)")
    p.add_argument("--seconds", type=count, default=5, help="seconds per run (default 5)")
    p.add_argument("--repeats", type=count, default=5, help="runs per cell after the warm-up (default 5)")
    p.add_argument("--env", action="append", type=setting, default=[], metavar="TINYSERVE_X=VALUE",
                   help="extra setting for both servers (repeatable)")
    args = p.parse_args(argv)
    protocols = args.protocols.split(",")
    if not set(protocols) <= set(PATHS):
        p.error(f"--protocols: expected some of {sorted(PATHS)}, got {args.protocols}")
    rows = args.rows
    for item in args.env:
        if item.startswith("TINYSERVE_MODEL_ROOT="):
            p.error(f"--env {item!r}: expected TINYSERVE_X=VALUE other than the model root "
                    "(each server serves its own models/)")
    if WRK_CORE is None:
        p.error("needs two cores: the servers share one, wrk takes another")
    ensure_wrk()
    commit = baseline.resolve(ROOT, args.baseline) if args.baseline else None
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))  # unwind: stop, remove
    work = Path(tempfile.mkdtemp(prefix="tinyserve-pair-"))
    try:
        cells = measure(args, commit, protocols, rows, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = baseline.verdict(cells) if commit else None
    if summary is not None:
        n, conc, proto = summary["min_cell"]
        print(f"Issue 13 cells (c16 x 1 and 256 rows x /predict and V2 JSON): geometric mean {summary['geomean']:.3f} "
              f"(needs >= {baseline.GEOMEAN_MIN}), lowest {summary['min']:.3f} at {n} rows {baseline.LABELS[proto]} "
              f"(needs >= {baseline.CELL_MIN}): {'met' if summary['met'] else 'NOT met'}")
    return 0


def measure(args, commit: str | None, protocols: list[str], rows: list[int], work: Path) -> dict:
    """Start both servers, print each cell's line as it is measured; the cells by (rows, c, protocol)."""
    other = baseline.NAME if commit else args.floor
    what = f"{args.baseline} = {commit[:12]} (baseline)" if commit else f"the {other} floor"
    print(f"# {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC  bench.pair: tinyserve (this checkout) and "
          f"{what}, both on core {SERVER_CORE} at once, two wrk on core {WRK_CORE}; c{args.concurrency} each; "
          f"{args.repeats} runs of {args.seconds} s per cell after a 1 s warm-up"
          + (f"; settings {' '.join(args.env)}" if args.env else ""))
    print()
    print(f"| rows | endpoint | tinyserve req/s | {other} req/s | tinyserve ÷ {other} (median of the runs') "
          f"| runs | CPU share tinyserve ÷ {other} |")
    print("|---:|---|---:|---:|---:|---|---:|")
    cells = {}
    with baseline.checkout(ROOT, commit) if commit else nullcontext() as old:
        found = servers(parse_args([*(["--baseline", args.baseline] if commit else []),
                                    *(f"--env={e}" for e in args.env)]), old)
        pair = [next(s for s in found if s.name == name) for name in ("tinyserve", other)]
        try:
            for server in pair:
                start(server, SERVER_CORE, bodies(1)["predict"], work / f"{server.name}.log")
            for n in rows:
                files = {}
                for kind, body in bodies(n).items():
                    files[kind] = work / f"{kind}-{n}.body"
                    files[kind].write_bytes(body)
                for proto in protocols:
                    own = (PATHS[proto], files[proto], proto)
                    floor = (PATHS["predict"], files["predict"], "predict")  # a floor takes the /predict body
                    loads = {"tinyserve": own, other: floor if other in FLOORS else own}
                    c = cells[n, args.concurrency, proto] = cell(pair, loads, args)
                    print(f"| {n} | {baseline.LABELS[proto]} | {c['new']:,.0f} | {c['old']:,.0f} | {c['ratio']:.3f} | "
                          f"{', '.join(f'{r:.3f}' for r in c['rounds'])} | {c['share']:.3f} |", flush=True)
        finally:
            for server in pair:
                stop(server)
    print()
    return cells


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # servers are stopped and the worktree removed on the way out (SIGTERM too)
        print("bench.pair: interrupted", file=sys.stderr)
        sys.exit(130)
