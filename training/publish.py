"""Publishing a version folder into a model repository (where it is, which version comes next,
whether the service would serve it), and the facts every card records when it is written (the
time, the library versions), shared by training and the import command.

No TensorFlow here: the import of an ONNX file never loads it.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import TypeVar

from service.card import VERSION_MAX, VERSION_RE
from service.config import CHECKOUT

T = TypeVar("T")
# An installed package is no place to write: outside a checkout, models go to ./models.
DEFAULT_ROOT = CHECKOUT / "models" if CHECKOUT else Path("models")
DEFAULT_ROOT_HELP = "the repo's models/ in a checkout, else ./models"
# What a trained model's card lists; the import command lists what its path used.
LIBRARIES = ("tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy", "scikit-learn")


def next_version(root: Path, name: str) -> int:
    """One more than the highest version folder of `name` the server serves (1 when there is none);
    folders it does not serve (`0123`, a tenth digit) do not count."""
    folder = root / name
    versions = [int(p.name) for p in folder.iterdir() if p.is_dir() and VERSION_RE.fullmatch(p.name)] \
        if folder.is_dir() else []
    version = max(versions, default=0) + 1
    if version > VERSION_MAX:
        raise ValueError(f"{folder} has version {VERSION_MAX}, the highest the server serves: no version "
                         "can follow it; publish under another name")
    return version


def serving_problem(name: str, version: int, folder: Path) -> str | None:
    """Why the service would not serve the version in `folder` (its own loader: card, hash,
    signature, golden replay), or None; checked before a version is published."""
    from service.repository import FAILED, load_version, log  # onnxruntime: loaded only when checking

    was, log.disabled = log.disabled, True  # its reason becomes the one line the command prints
    try:
        entry = load_version(name, version, folder, threads=1)
    finally:
        log.disabled = was
    return entry.reason if entry.status == FAILED else None


def now() -> str:
    """The time a card is written, UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """The installed version of each distribution, by name."""
    return {name: dist_version(name) for name in names}


def unwritable(root: Path) -> str | None:
    """Why models cannot be published under `root` (made if missing), or None; asked before the
    work, so that a typo in the output folder does not cost a training run or a conversion. The
    folders it makes to find out are removed again: a refused run leaves nothing behind."""
    made, folder = [], root
    while not folder.exists() and folder != folder.parent:
        made.append(folder)  # deepest first, the order to remove them in
        folder = folder.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        return f"cannot write to output folder {root}: {e.strerror or e}"
    finally:
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
    return None


def publish(root: Path, name: str, version: int, fill: Callable[[Path], T]) -> tuple[T, Path]:
    """`fill` a scratch folder beside `<root>/<name>/<version>`, then rename it there: a watcher
    never sees half a model, and a failure leaves no version behind. Returns what `fill` did."""
    target = root / name / str(version)
    if target.exists():
        raise ValueError(f"{target} exists already; choose another version")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-{version}-", dir=root))
    staging.chmod(0o755)  # mkdtemp makes it private; a server under another user must read it
    try:
        made = fill(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return made, target
