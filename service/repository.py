"""The model repository: scan `<root>/<name>/<version>/`, validate and load each version, look up.

A version is served only if all of these hold: the folder names are valid (name matches
`card.NAME_RE`, version is a positive integer without leading zeros), `card.json` validates,
`model.onnx` has the card's SHA-256, the graph serves (`runtime.signature`) and its input/output
agree with the card, and the card's golden examples replay within `abs 1e-4 + rel 1e-4` (the last
one alone as well as with the others: a graph that mixes the rows of a batch cannot serve). The
folders decide the name and version, as in TF Serving and Triton: `cp -r digits/1 digits/2`
publishes version 2 and `cp -r digits digits-canary` a second model; the card's own name and
version are provenance, shown in the metadata. Anything else marks that version `failed` with a `reason`;
every other version still serves. The newest ready version of a model is its default; older
ready versions stay addressable by number.

Readiness (`Repository.not_ready_reason`): the server is ready once loading has finished, at
least one version serves, and the configured default model (if any) serves. Failed versions do
not block readiness, because a bad upload must not take the good models out of rotation; they
are listed by `/models` and `/health/ready`. A missing or empty model root therefore starts a
live but never-ready server. With `strict` (TINYSERVE_STRICT_READINESS), every model found must
have a version serving, and every folder must be readable.

Updates without downtime (`Repository.refresh`, called by the poller and POST /admin/reload):
a version folder is (re)loaded only when it is new or its `card.json`/`model.onnx` (or its model's
`serving.json`) changed (inode, size or mtime), in a worker thread, beside the running versions. A folder whose files
changed while it was being loaded (a copy in progress) is loaded again at the next pass, so a
version caught half-copied is not left failed once the copy completes. The result is swapped
in on the event loop by assigning a freshly built `entries` and `_serving` with no await in
between, so a request sees the old repository or the new one, never a mix. A changed version that
fails validation is rejected and the running one keeps serving (its summary gains a `reason`); a
new version that fails is listed as failed and the previous default keeps serving. A removed
folder is dropped from the map: requests that already looked its model up hold a reference and
finish on it, and onnxruntime frees the session when the last one lets go. A root that vanishes
as a whole (an unmounted volume) removes nothing: what serves keeps serving until it is back.
Nor does a folder that cannot be read (permissions, an I/O error): its models stay as they were,
the rest load, the log says so once, and each pass tries again; at start-up an unreadable root
or default model's folder is why the server is not ready.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from service import runtime
from service.card import CARD_FILE, MODEL_FILE, VERSION_RE, ModelCard, read_card, sha256_file
from service.codecs import columns
from service.errors import BadRequest, NotFound, NotReady
from service.runtime import LoadedModel
from service.scan import Listing, scan

log = logging.getLogger(__name__)
LOADING = "models are still loading"  # why the server is not ready before the first load

GOLDEN_ATOL = 1e-4
GOLDEN_RTOL = 1e-4
READY, FAILED = "ready", "failed"


@dataclass(frozen=True)
class Entry:
    """One `<name>/<version>` folder and what became of it."""

    name: str
    version: int
    path: Path
    status: str
    reason: str | None = None
    card: ModelCard | None = None
    model: LoadedModel | None = None

    def summary(self) -> dict:
        """Version number and status, plus the reason when it failed."""
        out = {"version": self.version, "status": self.status}
        if self.reason is not None:
            out["reason"] = self.reason
        return out


Stamp = tuple[tuple[int, int, int] | None, ...]


def stamp(path: Path) -> Stamp:
    """What identifies a version folder's files for change detection: (inode, size, mtime) of each,
    and of its model's `serving.json` (its batching options, read by every version's load)."""
    out = []
    for file in (path / CARD_FILE, path / MODEL_FILE, path.parent / runtime.SERVING_FILE):
        try:
            st = file.stat()
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def load_version(name: str, version: int, path: Path, threads: int,
                 batching: tuple[int, float] = (0, 0.0)) -> Entry:
    """Validate and load one version folder; never raises, a failure is an Entry with a reason."""
    card = None
    try:
        card = _read_card(path / CARD_FILE)
        digest = sha256_file(path / MODEL_FILE)
        if digest != card.sha256:
            raise ValueError(f"{MODEL_FILE} sha256 is {digest}, card says {card.sha256}")
        model = runtime.load(path / MODEL_FILE, card, threads, batching, name, version)
        _smoke_run(model)
        _replay_golden(model)
        _check_columns(model)
    except Exception as exc:  # any failure, from a bad card to an onnxruntime error, only fails this version
        reason = _reason(exc).replace(f"{path}{os.sep}", "")  # keep server paths out of the API
        return Entry(name, version, path, FAILED, reason, card)
    log.info("loaded %s/%s (%s)", name, version, card.task.value)
    return Entry(name, version, path, READY, None, card, model)


def _read_card(path: Path) -> ModelCard:
    try:
        return read_card(path)
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'card'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid {CARD_FILE}: {errors}") from None


def _reason(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"missing {Path(exc.filename).name}" if exc.filename else str(exc)
    text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:497] + "..."


def _smoke_run(model: LoadedModel) -> None:
    # Two rows prove the batch dimension is free and the output has the card's width; a table
    # model's are all missing, so its fills run too.
    value = 0.0 if model.card.columns is None else None
    got = model.run(_decoded(model, [[value] * model.card.n_features] * 2)).shape
    if got != (2, model.card.n_outputs):
        raise ValueError(f"2 rows in gave output shape {list(got)}, expected [2, {model.card.n_outputs}]")


def _replay_golden(model: LoadedModel) -> None:
    golden = model.card.golden
    if not golden:
        log.warning("%s/%s has no golden examples to replay", model.name, model.version)
        return
    want = np.array([g.output for g in golden], np.float64)
    got = model.run(_decoded(model, [list(g.input) for g in golden])).astype(np.float64)
    bad = np.argwhere(~(np.abs(got - want) <= GOLDEN_ATOL + GOLDEN_RTOL * np.abs(want)))
    if bad.size:
        i, j = bad[0]
        raise ValueError(f"golden example {i} output {j}: model gives {got[i, j]:.7g}, card says "
                         f"{want[i, j]:.7g} (tolerance {GOLDEN_ATOL:g} + {GOLDEN_RTOL:g} * |expected|)")
    # Concurrent requests run as one batch: a graph that mixes rows (a softmax over the batch axis)
    # would answer each client according to the others' rows.
    if len(golden) < 2:
        return
    alone = model.run(_decoded(model, [list(golden[-1].input)])).astype(np.float64)[0]
    if not (np.abs(alone - got[-1]) <= GOLDEN_ATOL + GOLDEN_RTOL * np.abs(got[-1])).all():
        raise ValueError(f"golden example {len(golden) - 1} gives other outputs alone than with the other "
                         f"examples ({alone.tolist()} against {got[-1].tolist()}): a row's answer must not "
                         "depend on the rows batched with it (a softmax over the batch axis?)")


def _check_columns(model: LoadedModel) -> None:
    """A table model fills and encodes its columns inside the graph, while the warnings an answer
    carries are the card's: a card whose fill or categories are not the graph's (edited by hand, or
    another version's) would say one thing and answer another. Each column's fill must answer as a
    missing value does, and each category otherwise than a value the graph never saw, on one of
    the golden rows at least (on one row alone, ReLU units all off could hide a category)."""
    described = model.card.columns
    if not described or not model.card.golden:
        return
    bases = [list(g.input) for g in model.card.golden]
    put = lambda row, j, v: [*row[:j], v, *row[j + 1:]]  # noqa: E731
    rows = [put(bases[0], j, v) for j, c in enumerate(described) for v in (None, c.fill)]
    kinds = [(j, c) for j, c in enumerate(described) if c.kind == "categorical"]
    rows += [put(b, j, v) for j, c in kinds for b in bases for v in [*c.categories, columns.unseen(c)]]
    out = model.run(_decoded(model, rows)).astype(np.float64)
    for j, c in enumerate(described):
        missing, filled = out[2 * j], out[2 * j + 1]
        if not (np.abs(filled - missing) <= GOLDEN_ATOL + GOLDEN_RTOL * np.abs(missing)).all():
            raise ValueError(f"column {c.name!r}: the card's fill {c.fill!r} answers otherwise than a missing value, "
                             "which the graph fills itself: the card does not describe this model")
    at = 2 * len(described)
    for j, c in kinds:
        n = len(c.categories) + 1
        block = out[at:at + n * len(bases)].reshape(len(bases), n, -1)  # base row, category (unseen last), output
        at += n * len(bases)
        same = [v for k, v in enumerate(c.categories) if all(np.array_equal(b[k], b[-1]) for b in block)]
        if same:
            raise ValueError(f"column {c.name!r}: category {same[0]!r} of the card answers as a value the graph never "
                             "saw: the card does not describe this model")


def _decoded(model: LoadedModel, rows: list[list]) -> np.ndarray:
    """Rows as /predict decodes them, fed to the graph: the golden rows prove the decode path too."""
    try:
        return model.feed(columns.instances(rows, model.card, len(rows)))
    except BadRequest as exc:
        raise ValueError(f"the card's rows do not decode: {exc.message}") from None


def _newest_ready(versions: dict[int, Entry]) -> Entry | None:
    return max((e for e in versions.values() if e.status == READY), key=lambda e: e.version, default=None)


class Repository:
    """All versions found under a root, with the lookups a request needs."""

    def __init__(self, root: Path, threads: int = 1, default_model: str | None = None,
                 batching: tuple[int, float] = (0, 0.0), strict: bool = False):
        self.root = Path(root)
        self.strict = strict  # ready only while every model found serves
        self.threads = threads
        self.batching = batching  # each model's batcher: batch_max_size, batch_max_delay_ms
        self.default_model = default_model
        self.loaded = False
        self.entries: dict[str, dict[int, Entry]] = {}
        self._serving: dict[str, LoadedModel] = {}
        self._stamps: dict[tuple[str, int], Stamp] = {}
        self._lock = asyncio.Lock()
        self._root_missing = False  # logged once when it goes, once when it is back
        self.unreadable: dict[Path, str] = {}  # folders the last pass could not read, with why
        self._ignored: set[Path] = set()  # folders of other names, said once
        self.last_change: dict = {}

    def load(self) -> Repository:
        """Scan the root and load what is new or changed, synchronously (the lifespan, tests)."""
        self.last_change = self._apply(*self._prepare())
        self.loaded = True
        if self.root in self.unreadable:
            pass  # said by the pass, and by readiness
        elif not self.root.is_dir():
            why = "is a file" if self.root.exists() else "does not exist (yet?)"
            log.warning("no models found: the model root %s is not a folder: it %s", self.root, why)
        elif not self.entries:
            log.warning("no models found under %s", self.root)
        elif self.not_ready_reason():  # a default model that does not serve: never ready, so say so now
            log.warning("not ready: %s", self.not_ready_reason())
        return self

    async def refresh(self) -> dict:
        """Load what changed in a worker thread, then swap it in on the loop; returns the summary."""
        async with self._lock:
            self.last_change = self._apply(*await asyncio.to_thread(self._prepare))
            return self.last_change

    def _prepare(self) -> tuple[list[tuple[Entry, Stamp]], list[tuple[str, int]], dict[Path, str]]:
        listing = scan(self.root)
        found = {(name, version): path for name, version, path in listing.found}
        if self.root in listing.unreadable:  # nothing is known: nothing changes
            return [], [], listing
        if self._stamps and not self.root.is_dir():  # looked at after the scan: gone during it too
            # The whole root gone at once is a volume unmounted or being swapped, not every model
            # withdrawn: what serves keeps serving until the root is back.
            if not self._root_missing:
                log.error("model root %s is missing; serving the models loaded before", self.root)
            self._root_missing = True
            return [], [], listing
        if self._root_missing:
            log.warning("model root %s is back", self.root)
            self._root_missing = False
        loaded = []
        for (name, version), path in found.items():
            now = stamp(path)
            if now != self._stamps.get((name, version)):
                entry = load_version(name, version, path, self.threads, self.batching)
                # Files that changed during the load (a copy in progress): not this stamp, so the
                # next pass loads them again.
                loaded.append((entry, now if stamp(path) == now else None))
        kept = {path.name for path in listing.unreadable}  # not knowing what a folder holds removes nothing
        return loaded, [key for key in self._stamps if key not in found and key[0] not in kept], listing

    def _apply(self, loaded: list[tuple[Entry, Stamp]], removed: list[tuple[str, int]],
               listing: Listing) -> dict:
        self._note(listing)
        entries = {name: dict(versions) for name, versions in self.entries.items()}
        change: dict[str, list] = {"added": [], "replaced": [], "removed": [], "failed": []}
        for name, version in removed:
            self._stamps.pop((name, version), None)
            entries.get(name, {}).pop(version, None)
            if not entries.get(name):
                entries.pop(name, None)
            change["removed"].append(f"{name}/{version}")
        for entry, now in loaded:
            self._stamps[(entry.name, entry.version)] = now
            old = entries.get(entry.name, {}).get(entry.version)
            if entry.status == FAILED:
                change["failed"].append({"model": entry.name, "version": entry.version, "reason": entry.reason})
                if old is not None and old.model is not None:  # keep serving what was validated before
                    entry = dataclasses.replace(old, reason=f"update rejected, serving the previous files: "
                                                            f"{entry.reason}")
                    log.error("%s/%s: %s", entry.name, entry.version, entry.reason)
                else:
                    log.error("not serving %s/%s: %s", entry.name, entry.version, entry.reason)
            elif old is not None:
                change["replaced"].append(f"{entry.name}/{entry.version}")
            else:
                change["added"].append(f"{entry.name}/{entry.version}")
            entries.setdefault(entry.name, {})[entry.version] = entry
        entries = {name: entries[name] for name in sorted(entries)}
        serving = {name: e.model for name in entries if (e := _newest_ready(entries[name])) and e.model}
        self.entries, self._serving = entries, serving  # the swap: no await between these assignments
        return change

    def _note(self, listing: Listing) -> None:
        """Log a folder once when it cannot be read, and once when it can again; and a folder that
        is not served for its name, once."""
        for folder, why in listing.unreadable.items():
            if self.unreadable.get(folder) != why:
                log.error("cannot read %s (%s): the models in it are left as they were, and each pass "
                          "tries again", folder, why)
        for folder in self.unreadable.keys() - listing.unreadable.keys():
            log.warning("%s can be read again", folder)
        for folder in listing.ignored.keys() - self._ignored:
            log.warning("not serving %s, for its name: %s", folder, listing.ignored[folder])
        self.unreadable, self._ignored = listing.unreadable, set(listing.ignored)

    def default_entry(self, name: str) -> Entry | None:
        """The newest ready version of a model, or None when none is ready."""
        return _newest_ready(self.entries.get(name, {}))

    def ready_versions(self, name: str) -> list[int]:
        """The version numbers of a model that serve, oldest first; 404 when there is no such model."""
        return sorted(v for v, e in self.versions(name).items() if e.status == READY)

    def entry(self, name: str, version: int | str) -> Entry:
        """One version's entry, ready or not; 404 when the model or version does not exist."""
        versions = self.versions(name)
        number = version if isinstance(version, int) and not isinstance(version, bool) else None
        if isinstance(version, str) and VERSION_RE.fullmatch(version):
            number = int(version)
        if number not in versions:
            raise NotFound(f"model {name!r} has no version {version}; versions: {sorted(versions)}")
        return versions[number]

    def get(self, name: str, version: int | str | None = None) -> LoadedModel:
        """The model to run: 404 for an unknown name or version, 503 when it is not serving."""
        if version is None:
            model = self._serving.get(name)
            if model is None:
                newest = self.versions(name)
                newest = newest[max(newest)]
                raise NotReady(f"model {name!r} has no version ready to serve; version {newest.version} "
                               f"failed: {newest.reason}")
            return model
        entry = self.entry(name, version)
        if entry.model is None:
            raise NotReady(f"model {name!r} version {entry.version} is not serving: {entry.reason}")
        return entry.model

    def resolve(self, name: str | None) -> str:
        """The model a request means: its own choice, else the configured default, else the only one."""
        if name is not None:
            return name
        if self.default_model is not None:
            return self.default_model
        if len(self.entries) == 1:
            return next(iter(self.entries))
        if not self.entries:  # nothing to choose from: why, as readiness says it
            raise NotReady(self.not_ready_reason() or "no model is serving")
        raise BadRequest(f"name a model with 'model'; available: {sorted(self.entries)}")

    def not_ready_reason(self) -> str | None:
        """Why the server should not receive traffic yet, or None when it is ready."""
        if not self.loaded:
            return LOADING
        if not self._serving:
            return f"no model is serving from {self.root}{self._why_unread(self.root)}"
        if self.default_model is not None and self.default_model not in self._serving:
            why = self._why_unread(self.root / self.default_model)
            return f"default model {self.default_model!r} is not serving{why}"
        if self.strict:
            down = [name for name in sorted(self.entries) if name not in self._serving]
            unread = sorted(str(folder) for folder in self.unreadable)
            if down or unread:
                return (f"strict readiness: model(s) {down} have no version serving" if down else
                        f"strict readiness: cannot read {', '.join(unread)}")
        return None

    def _why_unread(self, folder: Path) -> str:
        return f": cannot read {folder} ({self.unreadable[folder]})" if folder in self.unreadable else ""

    def versions(self, name: str) -> dict[int, Entry]:
        """Every version entry of a model; 404 when there is no such model."""
        versions = self.entries.get(name)
        if versions is None:
            raise NotFound(f"unknown model {name!r}; available: {sorted(self.entries)}")
        return versions
