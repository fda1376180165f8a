"""The model root's listing: which folders are model versions, which cannot be read, and which
have names the repository does not serve (`service.repository` decides what becomes of them).

`<root>/<name>/<version>/`: a model folder's name matches `card.NAME_RE`, a version folder's
`card.VERSION_RE`. A folder that goes while it is listed holds nothing (the next pass sees the tree
as it settled); one that cannot be listed or entered is unreadable, with why.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

from service.card import NAME_RE, VERSION_RE


class Listing(NamedTuple):
    """A scan's `(name, version, folder)`s, sorted; the folders it could not read (permissions, an
    I/O error, no file descriptor left), and those of other names (not hidden), each with why."""

    found: list[tuple[str, int, Path]]
    unreadable: dict[Path, str]
    ignored: dict[Path, str]


def scan(root: Path) -> Listing:
    """The root's model and version folders (`Listing`). A missing root holds nothing, and so does
    a folder that goes while it is read (the next pass sees it settled)."""
    listing = Listing([], {}, {})
    for model_dir in sorted(_listed(root, listing.unreadable)):
        if _named(model_dir, NAME_RE, "a model folder's name", listing):
            for version_dir in _listed(model_dir, listing.unreadable):
                if _named(version_dir, VERSION_RE, "a version folder's name", listing):
                    listing.found.append((model_dir.name, int(version_dir.name), version_dir))
    listing.found.sort()
    return listing


def _named(folder: Path, pattern: re.Pattern, what: str, listing: Listing) -> bool:
    """Whether `folder` is a folder named by `pattern`; another folder (not hidden, nor a volume's
    lost+found) is noted in `listing.ignored`, and one whose parent cannot be entered (listed
    but not searchable) makes that parent unreadable."""
    try:
        if not folder.is_dir():
            return False
    except OSError as exc:
        listing.unreadable[folder.parent] = exc.strerror or str(exc)
        return False
    if pattern.fullmatch(folder.name):
        return True
    if not folder.name.startswith(".") and folder.name != "lost+found":
        listing.ignored[folder] = f"{what} matches {pattern.pattern}"
    return False


def _listed(folder: Path, unreadable: dict[Path, str]) -> list[Path]:
    """The folder's entries; none once it is gone, or when it cannot be read (noted in `unreadable`)."""
    try:
        return list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):  # gone, or replaced, since it was seen
        return []
    except OSError as exc:
        unreadable[folder] = exc.strerror or str(exc)
        return []
