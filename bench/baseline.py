"""`python -m bench --baseline GITREF`: another commit's service as one more server under test.

The commit is checked out with `git worktree add --detach` into a temporary directory, started
from there (its own `service` package first on the path, its own `models/` as the model root),
measured in the same interleaved rounds as everything else, and removed at the end, also when
the run fails or is interrupted. The report gives the service ÷ baseline throughput of every cell
and, for the four cells issue 13 judges a redesign by, their geometric mean and the lowest.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NAME = "baseline"
# Issue 13: c16, 1 and 256 rows, /predict and V2 JSON; geometric mean >= 0.95, no cell < 0.85.
ISSUE_CELLS = [(1, 16, "predict"), (1, 16, "v2"), (256, 16, "predict"), (256, 16, "v2")]
GEOMEAN_MIN, CELL_MIN = 0.95, 0.85
LABELS = {"predict": "/predict", "v2": "V2 JSON", "v2bin": "V2 binary", "predict-top0": "/predict top_k 0",
          "predict-cols": "/predict columns", "predict-cols0": "/predict top_k 0 columns"}


def git(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=timeout)


def resolve(root: Path, ref: str) -> str:
    """The full hash `ref` names in the repository at `root`; a clear error when it names none."""
    done = git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if done.returncode != 0:
        raise SystemExit(f"bench: --baseline {ref}: not a commit of {root}")
    return done.stdout.strip()


@contextmanager
def checkout(root: Path, commit: str) -> Iterator[Path]:
    """A detached worktree of `commit` in a temporary directory, removed on the way out."""
    path = Path(tempfile.mkdtemp(prefix="tinyserve-baseline-"))
    try:
        done = git(root, "worktree", "add", "--detach", str(path), commit)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise SystemExit(f"bench: git worktree add {commit[:12]} failed: {last}")
        yield path
    finally:
        git(root, "worktree", "remove", "--force", str(path))
        shutil.rmtree(path, ignore_errors=True)
        git(root, "worktree", "prune")


def model_root(path: Path, ref: str, model: str) -> Path:
    """The checkout's own models/, which must hold the model the benchmark posts to."""
    if not (path / "service" / "__main__.py").is_file():
        # Without it `python -m service` would quietly import the installed (current) service.
        raise SystemExit(f"bench: --baseline {ref}: the checkout has no service/__main__.py to run")
    root = path / "models"
    if not (root / model).is_dir():
        raise SystemExit(f"bench: --baseline {ref}: its model root {root.name}/ has no {model}/ "
                         f"(the baseline serves its own bundled models, and the benchmark posts to {model})")
    return root


def digest(folder: Path) -> str:
    """One hash over the file names and bytes under `folder` (reports/ aside: not served)."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and "report" not in p.parts):
        h.update(str(f.relative_to(folder)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def same_model(ours: Path, theirs: Path, model: str) -> bool:
    """Whether both model roots hold byte-identical files for `model`."""
    return (ours / model).is_dir() and digest(ours / model) == digest(theirs / model)


def median_rps(runs: list[dict]) -> float:
    return statistics.median(r["rps"] for r in runs)


def ratios(results: dict, service: str = "tinyserve") -> dict[tuple, dict]:
    """Per cell the service ÷ baseline ratio of median req/s, and of each round's pair."""
    out = {}
    for (name, proto, rows, conc), runs in results.items():
        base = results.get((NAME, proto, rows, conc))
        if name != service or not base:
            continue
        out[rows, conc, proto] = {"ratio": median_rps(runs) / median_rps(base),
                                  "rounds": [a["rps"] / b["rps"] for a, b in zip(runs, base)]}
    return out


def verdict(cells: dict[tuple, dict]) -> dict | None:
    """Geometric mean and lowest of the issue's four cells, or None when one was not measured."""
    if not all(cell in cells for cell in ISSUE_CELLS):
        return None
    values = [cells[cell]["ratio"] for cell in ISSUE_CELLS]
    low = min(ISSUE_CELLS, key=lambda cell: cells[cell]["ratio"])
    geomean = math.exp(sum(math.log(v) for v in values) / len(values))
    return {"geomean": geomean, "min": cells[low]["ratio"], "min_cell": list(low),
            "met": geomean >= GEOMEAN_MIN and cells[low]["ratio"] >= CELL_MIN}


def report(results: dict) -> dict:
    """Print the service ÷ baseline table and the issue-13 summary; return both for --json."""
    cells = ratios(results)
    print("Service ÷ baseline (median req/s over median req/s; per round: the two servers' ratio "
          "within each round):")
    print()
    print("| rows | conc | endpoint | tinyserve ÷ baseline | per round |")
    print("|---:|---:|---|---:|---|")
    for (rows, conc, proto), cell in cells.items():
        print(f"| {rows} | {conc} | {LABELS[proto]} | {cell['ratio']:.2f} | "
              f"{', '.join(f'{r:.2f}' for r in cell['rounds'])} |")
    print()
    summary = verdict(cells)
    if summary is None:
        print("Issue 13 cells (c16 x 1 and 256 rows x /predict and V2 JSON): not all measured "
              "(needs --rows 1,256 --concurrency 16, without --quick)")
    else:
        rows, conc, proto = summary["min_cell"]
        print(f"Issue 13 cells (c16 x 1 and 256 rows x /predict and V2 JSON): geometric mean "
              f"{summary['geomean']:.3f} (needs >= {GEOMEAN_MIN}), lowest {summary['min']:.3f} at "
              f"{rows} rows {LABELS[proto]} (needs >= {CELL_MIN}): {'met' if summary['met'] else 'NOT met'}")
    print()
    return {"cells": [{"rows": r, "concurrency": c, "protocol": p, **v} for (r, c, p), v in cells.items()],
            "issue13": summary}
