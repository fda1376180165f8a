"""A user's own table (CSV, or Parquet when pyarrow is installed) as a Dataset.

Rules, each enforced with a one-line DataError naming the column or rows:
- the target column(s) must exist and have no missing values;
- classification targets need at least two classes, each with MIN_PER_CLASS rows;
  class names are the target's distinct values, sorted, as text;
- multilabel targets (`targets=[...]`) are 0/1 columns, one per label;
- feature columns are every other column (minus `drop`), none empty or constant; a column of
  numbers is numeric, any other (text, True/False) categorical, with at most MAX_CATEGORIES
  distinct values and, past MIN_ID_DISTINCT of them, no more than half its cells (else it names
  rows, like an id, and one-hot encoding it learns nothing that carries to a new row);
  missing values are allowed: the split fills them from the training rows
  (training/columns.py), and so does the exported graph at serving time;
- only an empty cell is missing, plus the `na_values` the user names: pandas' own list would turn
  a class called "None" or "NA" into missing data;
- a column that looks like a row index (no header, or the integers 0..n-1 or 1..n in order, as
  `DataFrame.to_csv()` writes by default) is left out with a warning unless it is in `keep`: in a
  table sorted by the target it would leak the answer.
Every fix an error suggests is quoted for a shell, so that it can be pasted as printed.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from service.card import Task, listed
from training.columns import MISSING
from training.datasets import DataError, Dataset

MIN_ROWS = 20
MIN_PER_CLASS = 5
MAX_CLASSES_GUESSED = 20  # an integer target with more distinct values is taken as regression
MAX_CATEGORIES = 100
MIN_ID_DISTINCT = 10  # fewer distinct values never make a column look like an id
# A column of numbers with at most this many other words, in at most this share of its cells, is
# taken for numbers with a marker or a typo, and said so.
MAX_ODD_WORDS, ODD_SHARE = 3, 0.1
# The strings pandas reads as missing by default (its read_csv documentation lists them); named
# when a column is text only because of them. Written out: pandas has no public name for the list.
PANDAS_NA = frozenset({"#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                       "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"})


def _stderr(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _unique_header(path: Path, header: list) -> None:
    """Columns are named once, as the file names them: pandas renames a CSV's repeated name ("a",
    "a.1"), which would then be a feature name the file does not hold."""
    names = [str(c).strip() for c in header]
    repeated = sorted({n for n in names if n and names.count(n) > 1})  # empty ones: pandas' "Unnamed: i"
    if repeated:
        raise DataError(f"{path} names column(s) {repeated} more than once; give each column its own name")


def read_table(path: Path, na_values: list[str] = ()) -> pd.DataFrame:
    """Read the file, turning every way it can be unreadable into one DataError line."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory; name the CSV or Parquet file")
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            frame = frame.replace(list(na_values), np.nan) if na_values else frame
            header = list(frame.columns)
        else:
            frame = pd.read_csv(path, skipinitialspace=True, keep_default_na=False,
                                na_values=["", *na_values])
            header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
    except ImportError:
        raise DataError("reading Parquet needs pyarrow: pip install pyarrow, or use a CSV file")
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path} is not a readable CSV file: {first}")
    frame.columns = [str(c).strip() for c in frame.columns]
    _unique_header(path, header)
    if frame.shape[1] < 2:
        raise DataError(f"{path} has {frame.shape[1]} column; it needs a target and at least one "
                        "feature (is it comma-separated?)")
    if len(frame) < MIN_ROWS:
        raise DataError(f"{path} has {len(frame)} data rows; at least {MIN_ROWS} are needed")
    return frame


def _rows(mask: pd.Series) -> str:
    """CSV line numbers (the header is line 1) of the first few flagged rows."""
    lines = (np.flatnonzero(mask.to_numpy()) + 2).tolist()
    more = f" and {len(lines) - 5} more" if len(lines) > 5 else ""
    return ", ".join(map(str, lines[:5])) + more


def _require_columns(frame: pd.DataFrame, names: list[str], what: str) -> None:
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise DataError(f"{what} column(s) {listed(missing, repr)} not in the file; "
                        f"columns are: {listed(list(frame.columns), limit=50)}")


def _no_missing(column: pd.Series) -> None:
    if column.isna().any():
        raise DataError(f"target column {column.name!r} has {int(column.isna().sum())} missing "
                        f"value(s), at line(s) {_rows(column.isna())}")


def _label_text(value) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _guess_task(column: pd.Series) -> Task:
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        return Task.binary if column.nunique() <= 2 else Task.multiclass
    values = column.to_numpy(dtype=np.float64)
    if np.all(np.mod(values, 1) == 0) and column.nunique() <= MAX_CLASSES_GUESSED:
        return Task.binary if column.nunique() <= 2 else Task.multiclass
    return Task.regression


def _classes(column: pd.Series, task: Task, positive: str | None, guessed: bool = False):
    """Class ids and names; for binary, the positive class is `positive` or the last sorted name.
    `guessed`: the task was guessed from the target, which a failure then says."""
    names = sorted({_label_text(v) for v in column}, key=_sort_key)
    if len(names) < 2:
        raise DataError(f"target column {column.name!r} has a single class ({names[0]!r}); "
                        "a classifier needs at least two")
    if task is Task.binary and len(names) != 2:
        raise DataError(f"binary target {column.name!r} has {len(names)} classes "
                        f"({listed(names)}); use --task multiclass")
    if positive is not None:
        if task is not Task.binary or positive not in names:
            raise DataError(f"--positive {positive!r} must be one of the two classes of a binary "
                            f"target; classes are [{listed(names, repr)}]")
        names = [n for n in names if n != positive] + [positive]
    text = column.map(_label_text)
    counts = text.value_counts()
    rare = [f"{k!r} ({v})" for k, v in counts.items() if v < MIN_PER_CLASS]
    if rare:
        hint = (f"; the task was guessed {task.value} from the target's whole numbers: if it is a quantity, "
                "say --task regression") if guessed and pd.api.types.is_numeric_dtype(column) else ""
        raise DataError(f"class(es) {listed(rare)} of {column.name!r} have fewer than "
                        f"{MIN_PER_CLASS} rows; the stratified split needs at least {MIN_PER_CLASS}{hint}")
    ids = text.map({n: i for i, n in enumerate(names)}).to_numpy(dtype=np.int64)
    return ids, names


def _sort_key(name: str):
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def _multilabel(frame: pd.DataFrame, targets: list[str]) -> np.ndarray:
    for name in targets:
        column = frame[name]
        _no_missing(column)
        bad = ~column.isin([0, 1, True, False])
        if bad.any():
            raise DataError(f"label column {name!r} must hold 0/1, found {column[bad].iloc[0]} "
                            f"at line(s) {_rows(bad)}")
    y = frame[targets].astype(np.float32).to_numpy()
    for name, count in zip(targets, y.sum(axis=0)):
        if count < MIN_PER_CLASS or len(y) - count < MIN_PER_CLASS:
            raise DataError(f"label {name!r} is set on {int(count)} of {len(y)} rows; each label "
                            f"needs at least {MIN_PER_CLASS} rows with and without it")
    return y


def _features(frame: pd.DataFrame, warn: Callable[[str], None]) -> \
        tuple[np.ndarray, np.ndarray | None, list[str], tuple[str, ...]]:
    """Numeric features (NaN missing), categorical ones as text ("" missing), all names, and the
    names of the categorical ones."""
    if frame.shape[1] == 0:
        raise DataError("no feature columns are left once the target(s) and --drop are removed")
    _refuse([c for c in frame.columns if frame[c].isna().all()], "hold no value (every cell is empty)")
    _refuse([c for c in frame.columns if frame[c].nunique(dropna=True) <= 1],
            "are constant and carry no information")
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])
            or pd.api.types.is_bool_dtype(frame[c])]
    _numbers_with_words(frame, text, warn)
    many = [c for c in text if _too_many_categories(frame[c])]
    _refuse(many, f"have too many categories to learn from (more than {MAX_CATEGORIES}, or more "
            f"than {MIN_ID_DISTINCT} and more than half their cells, like a name or an id)",
            [f"{c!r} ({frame[c].nunique()} distinct values in {frame[c].notna().sum()} cells)"
             for c in many])
    numeric = frame.drop(columns=text)
    x = numeric.astype(np.float64).to_numpy()
    infinite = np.isinf(x).any(axis=0)
    if infinite.any():
        names = [c for c, bad in zip(numeric.columns, infinite) if bad]
        raise DataError(f"feature column(s) {', '.join(map(repr, names))} hold infinite values")
    categories = frame[text].map(lambda v: MISSING if pd.isna(v) else str(v)).to_numpy(object) \
        if text else None
    return x.astype(np.float32), categories, list(frame.columns), tuple(text)


def _as_written(path: Path, frame: pd.DataFrame, na_values: list[str]) -> pd.DataFrame:
    """The feature columns pandas read as booleans (true/True/TRUE, false/...), as the CSV spells
    them: they are categories, and a client sends the file's own text, which must be one of them."""
    flags = [c for c in frame.columns if pd.api.types.is_bool_dtype(frame[c]) or _booleans_with_blanks(frame[c])]
    if not flags or Path(path).suffix.lower() in (".parquet", ".pq"):
        return frame
    raw = pd.read_csv(path, skipinitialspace=True, keep_default_na=False, na_values=["", *na_values], dtype=str,
                      usecols=lambda c: str(c).strip() in flags)  # only those columns, read again as text
    raw.columns = [str(c).strip() for c in raw.columns]
    return frame.assign(**{c: raw[c] for c in flags})


def _booleans_with_blanks(column: pd.Series) -> bool:
    present = column.dropna()
    return column.dtype == object and len(present) > 0 and present.map(type).eq(bool).all()


def _refuse(bad: list[str], why: str, described: list[str] | None = None) -> None:
    if bad:
        raise DataError(f"feature column(s) {', '.join(described or map(repr, bad))} {why}; "
                        f"leave them out with --drop {shlex.quote(','.join(bad))}")


def _too_many_categories(column: pd.Series) -> bool:
    distinct = column.nunique(dropna=True)
    # The floor keeps a mostly blank yes/no column from being called an id.
    return distinct > MAX_CATEGORIES or distinct > max(column.notna().sum() / 2, MIN_ID_DISTINCT)


def _numbers_with_words(frame: pd.DataFrame, text: list[str], warn: Callable[[str], None]) -> None:
    """Text columns that are numbers but for some words. Pandas' NA strings ("NA", "None") among
    them are missing values: the fix is to name them so, not to make the columns categories (every
    such column is said at once). Up to MAX_ODD_WORDS other words in at most ODD_SHARE of the cells
    ("?", a typo) are said with their lines: an error where the column has more than
    MIN_ID_DISTINCT distinct values (a measurement: as categories, learnt from the training rows,
    most values a client sends would be unseen, and "too many categories" would mislead), a warning
    where it becomes a few categories (clients would then send its numbers as text)."""
    na_words, na_columns, few = set(), [], []
    for c in text:
        column = frame[c]
        parsed = pd.to_numeric(column, errors="coerce")
        odd = column.notna() & parsed.isna()
        words = sorted(set(column[odd].astype(str)))
        if not words or not parsed.notna().any():
            continue
        if set(words) <= PANDAS_NA:
            na_words, na_columns = na_words | set(words), [*na_columns, c]
        elif len(words) <= MAX_ODD_WORDS and odd.sum() <= ODD_SHARE * column.notna().sum():
            few.append((column, words, odd))
    problems, warnings = [], []  # every column's at once: fixed one by one, each run would find the next
    if na_columns:
        problems.append(f"feature column(s) {', '.join(map(repr, na_columns))} hold numbers and "
                        f"{', '.join(map(repr, sorted(na_words)))}: if that means missing, say so with "
                        f"--na-values {shlex.quote(','.join(sorted(na_words)))}, or leave them out with "
                        f"--drop {shlex.quote(','.join(na_columns))}")
    for column, words, odd in few:
        said = (f"feature column {column.name!r} holds numbers and {listed(words, repr)} at line(s) {_rows(odd)}: "
                f"if that means missing, say --na-values {shlex.quote(','.join(words))}; if not, fix those cells")
        if column.nunique(dropna=True) > MIN_ID_DISTINCT:
            problems.append(f"{said}, or leave the column out with --drop {shlex.quote(str(column.name))}")
        else:
            warnings.append(f"{said}; meanwhile it is a column of categories, and clients send its values as text")
    if problems:
        raise DataError("; ".join(problems))
    for line in warnings:
        warn(line)


def _looks_like_index(column: pd.Series) -> bool:
    if str(column.name).startswith("Unnamed: ") or not str(column.name):
        return True  # a header cell left empty, as to_csv() writes above the index
    if not pd.api.types.is_integer_dtype(column) or pd.api.types.is_bool_dtype(column):
        return False
    values = column.to_numpy()
    return bool(np.array_equal(values, np.arange(len(values)))
                or np.array_equal(values, np.arange(1, len(values) + 1)))


def _index_columns(frame: pd.DataFrame, keep: list[str], warn: Callable[[str], None]) -> list[str]:
    """Columns that look like a row index and are not kept; the user is told which."""
    found = [c for c in frame.columns if c not in keep and _looks_like_index(frame[c])]
    if found:
        warn(f"column(s) {', '.join(map(repr, found))} look like a row index (no header, or "
             f"0..n-1 / 1..n in order) and are left out; keep them with "
             f"--keep {shlex.quote(','.join(found))}")
    return found


def load_table(path: Path, target: str | None = None, targets: list[str] | None = None,
               task: Task | None = None, drop: list[str] = (), positive: str | None = None,
               name: str | None = None, keep: list[str] = (), na_values: list[str] = (),
               warn: Callable[[str], None] = _stderr) -> Dataset:
    """Read a table and make it a Dataset for `target` (one column) or `targets` (labels)."""
    if (target is None) == (not targets):
        raise DataError("give either --target COLUMN or --targets A,B,C")
    frame = read_table(path, na_values)
    goal = [target] if target is not None else list(targets)
    if len(set(goal)) != len(goal):
        raise DataError(f"--targets names a column twice: {goal}")
    _require_columns(frame, goal, "target")
    _require_columns(frame, list(drop), "--drop")
    if set(drop) & set(goal):
        raise DataError(f"--drop names the target column(s) {', '.join(map(repr, sorted(set(drop) & set(goal))))}; "
                        "it leaves out feature columns only")
    _require_columns(frame, list(keep), "--keep")
    drop = [*drop, *_index_columns(frame.drop(columns=[*goal, *drop]), keep, warn)]
    strata = None
    if targets and task is not Task.regression:
        task, y, labels = Task.multilabel, _multilabel(frame, goal), goal
    elif targets:
        for name_ in goal:
            _no_missing(frame[name_])
        y, labels = frame[goal].astype(np.float32).to_numpy(), goal
    else:
        column = frame[target]
        _no_missing(column)
        guessed, task = task is None, task or _guess_task(column)
        if task is Task.multilabel:
            raise DataError("a multilabel model takes its 0/1 label columns from --targets A,B,C")
        if task is Task.regression:
            if not pd.api.types.is_numeric_dtype(column):
                raise DataError(f"regression target {target!r} is not numeric")
            y, labels = column.to_numpy(np.float32).reshape(-1, 1), [target]
        else:
            y, labels = _classes(column, task, positive, guessed)
            strata = y
    x, text, features, categorical = _features(_as_written(path, frame.drop(columns=[*goal, *drop]), na_values), warn)
    stem = Path(path).stem
    return Dataset(name or stem, task, x, y, features, labels,
                   f"{task.value} model of {', '.join(goal)} from {Path(path).name} "
                   f"({len(frame)} rows, {len(features)} features)", strata=strata, text=text,
                   categorical=categorical, missing_texts=tuple(na_values))
