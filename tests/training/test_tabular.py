"""Training from a user's table: task guessing, class names, missing values, and bad files."""

import numpy as np
import pandas as pd
import pytest

from service.card import Task
from training.datasets import DataError, split
from training.example_csv import write_cancer_csv
from training.tabular import load_table

RNG = np.random.default_rng(0)


def table(tmp_path, n=60, **columns) -> str:
    """Write a CSV with two numeric features plus the given columns; returns its path."""
    frame = pd.DataFrame({"a": RNG.normal(size=n), "b": RNG.uniform(0, 10, size=n), **columns})
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path


def _renamed(path, header: str, new: str):
    """The CSV at `path` with its header line `header` replaced by `new` (pandas writes no repeated name)."""
    text = path.read_text()
    assert text.startswith(header + "\n")
    path.write_text(new + text[len(header):])
    return path


def test_cancer_example_is_binary_with_text_classes(tmp_path):
    data = load_table(write_cancer_csv(tmp_path / "cancer.csv"), target="diagnosis",
                      positive="malignant")
    assert data.task is Task.binary and data.labels == ["benign", "malignant"]
    assert data.x.shape == (569, 30) and "mean_radius" in data.feature_names
    assert data.y.sum() == 212  # malignant rows are the positive class


def test_guessed_tasks(tmp_path):
    n = 60
    assert load_table(table(tmp_path, y=np.tile([0, 1], n // 2)), target="y").task is Task.binary
    multi = load_table(table(tmp_path, y=np.tile(["red", "green", "blue"], n // 3)), target="y")
    assert multi.task is Task.multiclass and multi.labels == ["blue", "green", "red"]
    assert load_table(table(tmp_path, y=RNG.normal(size=n)), target="y").task is Task.regression
    forced = load_table(table(tmp_path, y=np.tile([0, 1, 2], n // 3)), target="y",
                        task=Task.regression)
    assert forced.task is Task.regression and forced.y.shape == (n, 1)


def test_numeric_class_names_sort_as_numbers(tmp_path):
    data = load_table(table(tmp_path, y=np.tile([2, 10, 1], 20)), target="y")
    assert data.labels == ["1", "2", "10"]


def test_multilabel_from_targets(tmp_path):
    data = load_table(table(tmp_path, p=np.tile([0, 1], 30), q=np.tile([1, 1, 0], 20)),
                      targets=["p", "q"])
    assert data.task is Task.multilabel and data.labels == ["p", "q"]
    assert data.y.shape == (60, 2) and data.feature_names == ["a", "b"]


def test_drop_and_booleans(tmp_path):
    data = load_table(table(tmp_path, id=np.arange(60), flag=np.tile([True, False], 30),
                            y=np.tile([0, 1], 30)), target="y", drop=["id"])
    assert data.feature_names == ["a", "b", "flag"] and data.categorical == ("flag",)
    assert set(data.text[:, 0]) == {"True", "False"}


def test_missing_features_are_filled_with_the_training_median(tmp_path):
    a = RNG.normal(size=60)
    a[[3, 10]] = np.nan
    frame = pd.DataFrame({"a": a, "b": np.arange(60.0), "y": np.tile([0, 1], 30)})
    frame.to_csv(tmp_path / "m.csv", index=False)
    data = load_table(tmp_path / "m.csv", target="y")
    assert np.isnan(data.x).sum() == 2
    s = split(data, seed=1)
    assert not np.isnan(s.x_train).any() and not np.isnan(s.x_test).any()


@pytest.mark.parametrize("make,kwargs,message", [
    (lambda p: table(p, y=np.tile([0, 1], 30)), {"target": "nope"},
     "target column(s) 'nope' not in the file"),
    (lambda p: table(p, y=np.tile([0, 1], 30), c=[np.nan] * 60), {"target": "y"},
     "feature column(s) 'c' hold no value (every cell is empty); leave them out with --drop c"),
    (lambda p: table(p, y=np.tile([0, 1], 30), c=[f"n{i % 40}" for i in range(60)]), {"target": "y"},
     "'c' (40 distinct values in 60 cells) have too many categories"),
    (lambda p: table(p, y=np.tile([0, 1], 30), c=np.ones(60)), {"target": "y"},
     "feature column(s) 'c' are constant"),
    (lambda p: table(p, y=np.zeros(60, int)), {"target": "y"}, "has a single class ('0')"),
    (lambda p: table(p, y=np.r_[np.nan, RNG.normal(size=59)]), {"target": "y"},
     "target column 'y' has 1 missing value(s), at line(s) 2"),
    (lambda p: table(p, y=np.r_[[0, 1, 2], np.tile([0, 1], 28), [0]]), {"target": "y"},
     "fewer than 5 rows"),
    (lambda p: table(p, y=np.tile([0, 1, 2], 20)), {"target": "y", "task": Task.binary},
     "has 3 classes"),
    (lambda p: table(p, p_=np.tile([0, 2], 30)), {"targets": ["p_"]}, "must hold 0/1"),
    (lambda p: table(p, p_=np.tile([0, 1], 30)), {"targets": ["p_", "p_"]},
     "--targets names a column twice: ['p_', 'p_']"),
    (lambda p: table(p, y=np.tile([0, 1], 30)), {"target": "y", "drop": ["a", "b"]},
     "no feature columns are left"),
    (lambda p: table(p, y=np.tile([0, 1], 30)), {"target": "y", "positive": "7"},
     "--positive '7' must be one of"),
    (lambda p: table(p, y=np.tile([0, 1], 30)), {}, "either --target COLUMN or --targets"),
    (lambda p: _renamed(table(p, y=np.tile([0, 1], 30)), "a,b,y", "a,a,y"), {"target": "y"},
     "names column(s) ['a'] more than once; give each column its own name"),
    (lambda p: _renamed(table(p, y=np.tile([0, 1], 30)), "a,b,y", "a, a ,y"), {"target": "y"},
     "names column(s) ['a'] more than once"),
])
def test_bad_tables_name_the_problem(tmp_path, make, kwargs, message):
    with pytest.raises(DataError) as info:
        load_table(make(tmp_path), **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_empty_header_cells_are_not_a_repeated_name(tmp_path):
    # A spreadsheet's export with trailing empty columns: pandas names them "Unnamed: i".
    path = _renamed(table(tmp_path, y=np.tile([0, 1], 30)), "a,b,y", "a,b,y,,")
    path.write_text(path.read_text().replace("\n", ",,\n").replace("a,b,y,,,,\n", "a,b,y,,\n", 1))
    data = load_table(path, target="y")
    assert data.feature_names == ["a", "b"]


def test_a_directory_is_not_a_table(tmp_path):
    with pytest.raises(DataError, match=f"^{tmp_path} is a directory; name the CSV or Parquet file$"):
        load_table(tmp_path, target="y")


@pytest.mark.parametrize("content,message", [
    (b"", "is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\xff\xfe\x00\x00", "not a readable CSV"),
    (b"a,b\n1,2\n3,4,5,6\n", "not a readable CSV"),
    (b"just one column\n" + b"1\n" * 30, "it needs a target and at least one feature"),
    (b"a,y\n1,0\n2,1\n", "at least 20 are needed"),
])
def test_unreadable_files(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_table(path, target="y")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_table(tmp_path / "absent.csv", target="y")


def test_parquet_reads_with_pyarrow_or_says_what_is_missing(tmp_path):
    frame = pd.DataFrame({"a": RNG.normal(size=40), "b": RNG.normal(size=40),
                          "y": np.tile([0, 1], 20)})
    path = tmp_path / "data.parquet"
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        path.write_bytes(b"PAR1 not really")
        with pytest.raises(DataError, match="reading Parquet needs pyarrow"):
            load_table(path, target="y")
    else:
        frame.to_parquet(path)
        assert load_table(path, target="y").x.shape == (40, 2)


def test_only_empty_cells_are_missing_unless_na_values_says_more(tmp_path):
    plan = np.tile(["Basic", "Pro", "None", "NA"], 15)
    path = table(tmp_path, plan=plan)
    data = load_table(path, target="plan")
    assert data.task is Task.multiclass and data.labels == ["Basic", "NA", "None", "Pro"]
    with pytest.raises(DataError, match="has 30 missing value"):
        load_table(path, target="plan", na_values=["None", "NA"])


def test_na_values_fill_feature_cells(tmp_path):
    frame = pd.DataFrame({"a": RNG.normal(size=60), "b": ["?"] * 3 + [str(v) for v in range(57)],
                          "y": np.tile([0, 1], 30)})
    frame.to_csv(tmp_path / "q.csv", index=False)
    data = load_table(tmp_path / "q.csv", target="y", na_values=["?"])
    assert np.isnan(data.x[:, 1]).sum() == 3


def test_a_feature_that_is_text_only_by_pandas_na_strings_suggests_na_values(tmp_path):
    path = table(tmp_path, y=np.tile([0, 1], 30), c=["NA", "None"] + list(range(58)))
    with pytest.raises(DataError, match=r"say so with --na-values NA,None, or leave them out"):
        load_table(path, target="y")


def test_numbers_with_a_few_other_words_are_said_with_their_lines(tmp_path):
    # Many distinct numbers and three '?': refused as "too many categories ... like a name or an
    # id", which misled; few distinct numbers and one typo: silently a column of categories.
    many = [str(v / 7) for v in range(60)]
    many[3] = many[50] = many[51] = "?"
    few = [str(v % 7 + 1) for v in range(60)]
    few[10] = "abc"
    path = table(tmp_path, y=np.tile([0, 1], 30), f2=many, rooms=few)
    with pytest.raises(DataError, match=r"feature column 'f2' holds numbers and '\?' at line\(s\) 5, 52, 53: if "
                                        r"that means missing, say --na-values '\?'; if not, fix those cells, or "
                                        r"leave the column out with --drop f2"):
        load_table(path, target="y")
    said = []
    data = load_table(path, target="y", na_values=["?"], warn=said.append)
    assert np.isnan(data.x[:, 2]).sum() == 3 and data.categorical == ("rooms",)  # a, b, f2: numbers
    assert said == ["feature column 'rooms' holds numbers and 'abc' at line(s) 12: if that means missing, say "
                    "--na-values abc; if not, fix those cells; meanwhile it is a column of categories, and clients "
                    "send its values as text"]
    # 25 distinct numbers in 60 cells and one '?': not too many categories for the whole file, but
    # a measurement all the same; as categories it was published, and clients' values unseen.
    some = [str(v % 25 / 4) for v in range(60)]
    some[7] = "?"
    with pytest.raises(DataError, match=r"feature column 'ash' holds numbers and '\?' at line\(s\) 9: "):
        load_table(table(tmp_path, y=np.tile([0, 1], 30), ash=some, rooms=few), target="y")
    # with a column of pandas' NA words too, both are said at once (the second was found on the next run)
    na = [str(v / 3) for v in range(60)]
    na[20] = "n/a"
    with pytest.raises(DataError) as refused:
        load_table(table(tmp_path, y=np.tile([0, 1], 30), ash=some, smooth=na), target="y")
    assert str(refused.value).startswith("feature column(s) 'smooth' hold numbers and 'n/a': if that means missing")
    assert "; feature column 'ash' holds numbers and '?' at line(s) 9: " in str(refused.value)


def test_row_index_columns_are_left_out_with_a_warning_unless_kept(tmp_path):
    frame = pd.DataFrame({"a": RNG.normal(size=60), "row": np.arange(1, 61),
                          "y": np.repeat([0, 1], 30)})  # sorted by the target: the index leaks it
    path = tmp_path / "indexed.csv"
    frame.to_csv(path)  # pandas' default writes the index as an unnamed first column
    said = []
    data = load_table(path, target="y", warn=said.append)
    assert data.feature_names == ["a"]
    assert len(said) == 1 and "'Unnamed: 0', 'row'" in said[0]
    assert "--keep 'Unnamed: 0,row'" in said[0]
    kept = load_table(path, target="y", keep=["row"], warn=said.append)
    assert kept.feature_names == ["a", "row"]


def test_suggested_fixes_are_quoted_for_the_shell(tmp_path):
    path = table(tmp_path, y=np.tile([0, 1], 30), **{"home town": [f"town {i}" for i in range(60)]})
    with pytest.raises(DataError, match="--drop 'home town'"):
        load_table(path, target="y")
