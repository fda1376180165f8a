"""Text categories and missing values: learned from the training rows, encoded inside the ONNX
graph, recorded in the card, and the same in onnxruntime on raw rows as in Keras on encoded ones."""

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest

from service.card import CARD_FILE, MODEL_FILE, Column, Task, read_card
from training.__main__ import filled, main
from training.columns import encode, learn, native, raw_inputs
from training.config import Config
from training.datasets import DataError, Dataset, split
from training.example_csv import passengers
from training.export import export_onnx
from training.pipeline import train_one
from training.preprocess import encoding_graph, prepend_encoding
from training.tabular import load_table
from training.train import fit
from tests.service.helpers import REPO_ROOT

PASSENGERS = REPO_ROOT / "tests" / "data" / "training" / "passengers.csv"
QUICK = Config(epochs=5, patience=5, seed=3)
COLUMNS = [Column(name="size", kind="numeric", fill=2.5, missing_in_training=1),
           Column(name="color", kind="categorical", fill="red", categories=["blue", "red"]),
           Column(name="weight", kind="numeric", fill=-1.0),
           Column(name="shape", kind="categorical", fill="box", categories=["ball", "box", "cone"])]


def session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"])


def shop(n: int = 120, seed: int = 0) -> pd.DataFrame:
    """Text columns with blanks, a numeric one with blanks, a yes/no one; `bought` depends on them."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"color": rng.choice(["red", "green", "blue"], n),
                          "size": rng.normal(10, 3, n).round(1),
                          "member": rng.choice(["yes", "no"], n),
                          "shape": rng.choice(["ball", "box", "cone", "disc"], n)})
    score = (frame.color == "red") * 2 + (frame["size"] - 10) / 3 + (frame.member == "yes")
    frame["bought"] = np.where(score + rng.logistic(0, 0.5, n) > 1.2, "yes", "no")
    frame.loc[rng.random(n) < 0.1, "size"] = np.nan
    frame.loc[rng.random(n) < 0.1, "color"] = np.nan
    return frame


def test_encoding_graph_alone_fills_and_leaves_unseen_categories_all_zero():
    raw = {"features": np.array([[np.nan, 3.0], [1.0, np.nan], [4.0, 5.0]], np.float32),
           "categories": np.array([["", "cone"], ["blue", "plate"], ["green", ""]], dtype=object)}
    got = session(encoding_graph(COLUMNS, 18, 8)).run(None, raw)[0]
    expected = np.array([[2.5, 3.0, 0, 1, 0, 0, 1],  # size filled; "" is the fill "red"
                         [1.0, -1.0, 1, 0, 0, 0, 0],  # weight filled; "plate" is unseen: zeros
                         [4.0, 5.0, 0, 0, 0, 1, 0]], np.float32)  # "green" unseen: zeros
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(encode(COLUMNS, raw), expected)


def test_encoding_graph_with_only_categories_or_only_numbers():
    text_only = [c for c in COLUMNS if c.kind == "categorical"]
    raw = {"categories": np.array([["red", "ball"]], dtype=object)}
    graph = encoding_graph(text_only, 18, 8)
    assert [i.name for i in graph.graph.input] == ["categories"]
    np.testing.assert_array_equal(session(graph).run(None, raw)[0], [[0, 1, 1, 0, 0]])
    numbers = [c for c in COLUMNS if c.kind == "numeric"]
    graph = encoding_graph(numbers, 18, 8)
    assert [i.name for i in graph.graph.input] == ["features"]
    missing = {"features": np.full((1, 2), np.nan, np.float32)}
    np.testing.assert_array_equal(session(graph).run(None, missing)[0], [[2.5, -1.0]])


def test_fills_and_categories_come_from_the_training_rows_only():
    n = 80
    a = np.arange(n, dtype=np.float32)
    a[::7] = np.nan
    ids = np.array([[f"row{i}"] for i in range(n)], dtype=object)  # one category per row
    data = Dataset("t", Task.binary, a[:, None], np.tile([0, 1], n // 2), ["a", "id"], ["0", "1"],
                   "", strata=np.tile([0, 1], n // 2), text=ids, categorical=("id",))
    s = split(data, seed=1)
    numeric, text = s.columns
    train_rows = [int(c[3:]) for c in text.categories]  # each training row brought its id
    assert len(train_rows) == len(s.x_train)
    assert set(text.categories).isdisjoint(s.raw_test["categories"][:, 0])
    assert numeric.fill == float(np.nanmedian(a[train_rows]))
    assert numeric.missing_in_training == int(np.isnan(a[train_rows]).sum()) > 0
    assert not np.isnan(s.x_test).any() and s.x_test[:, 1:].sum() == 0  # test ids: unseen
    assert s.scaled == 1


def test_learn_takes_the_most_frequent_category_and_counts_blanks():
    raw = raw_inputs(np.array([[1.0], [np.nan], [3.0], [8.0]], np.float32),
                     np.array([["b"], ["a"], [""], ["b"]], dtype=object))
    numeric, text = learn(["n", "t"], ("t",), raw)
    assert (numeric.fill, numeric.missing_in_training) == (3.0, 1)
    assert (text.fill, text.categories, text.missing_in_training) == ("b", ["a", "b"], 1)


def test_a_numeric_fill_is_the_number_a_person_would_write():
    # The middle two float32 values' mean, taken in float32, was 18.630001 in the card and warnings.
    for sign in (1, -1):  # np.spacing of a negative number is negative
        raw = raw_inputs(np.array([[18.62], [np.nan], [18.64]], np.float32) * sign, None)
        (numeric,) = learn(["n"], (), raw)
        assert numeric.fill == 18.63 * sign


def test_a_table_of_numbers_without_blanks_has_no_columns(tmp_path):
    frame = pd.DataFrame({"a": np.arange(60.0) % 7, "b": np.arange(60.0) % 5, "y": np.tile([0, 1], 30)})
    frame.to_csv(tmp_path / "n.csv", index=False)
    assert split(load_table(tmp_path / "n.csv", target="y"), seed=1).columns is None
    frame.loc[3, "a"] = np.nan
    frame.to_csv(tmp_path / "n.csv", index=False)
    s = split(load_table(tmp_path / "n.csv", target="y"), seed=1)
    assert [c.kind for c in s.columns] == ["numeric", "numeric"] and list(s.raw_test) == ["features"]


@pytest.mark.parametrize("column,message", [
    ([np.nan] * 60, "'c' hold no value (every cell is empty); leave them out with --drop c"),
    ([f"v{i}" for i in range(60)], "'c' (60 distinct values in 60 cells) have too many categories"),
])
def test_bad_columns_are_one_line_errors(tmp_path, column, message):
    frame = pd.DataFrame({"a": np.arange(60.0) % 9, "c": column, "y": np.tile(["p", "q"], 30)})
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError) as info:
        load_table(tmp_path / "bad.csv", target="y")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_mostly_blank_yes_no_column_is_a_category_not_an_id(tmp_path):
    frame = pd.DataFrame({"a": np.arange(60.0) % 9, "c": ["yes", "no", "yes"] + [np.nan] * 57,
                          "y": np.tile(["p", "q"], 30)})
    frame.to_csv(tmp_path / "sparse.csv", index=False)
    assert load_table(tmp_path / "sparse.csv", target="y").categorical == ("c",)


def test_a_category_column_with_thousands_of_values_is_refused(tmp_path):
    n = 3000
    frame = pd.DataFrame({"a": np.arange(n) % 11, "town": [f"t{i % 1500}" for i in range(n)],
                          "y": np.tile([0, 1], n // 2)})
    frame.to_csv(tmp_path / "towns.csv", index=False)
    with pytest.raises(DataError, match=r"'town' \(1500 distinct values in 3000 cells\) have too many"):
        load_table(tmp_path / "towns.csv", target="y")


def test_a_target_with_one_class_is_a_one_line_error(tmp_path):
    frame = shop()
    frame["bought"] = "yes"
    frame.to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(DataError, match="has a single class \\('yes'\\); a classifier needs at least two"):
        load_table(tmp_path / "one.csv", target="bought")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    shop().to_csv(root / "shop.csv", index=False)
    data = load_table(root / "shop.csv", target="bought", positive="yes")
    card, folder = train_one(data, QUICK, root, "test", name="shop")
    return data, card, folder


@pytest.mark.slow
def test_card_records_columns_and_inputs(trained):
    data, card, folder = trained
    assert read_card(folder / CARD_FILE) == card
    assert card.feature_names == ["color", "size", "member", "shape"]
    assert [(c.name, c.kind) for c in card.columns] == [
        ("color", "categorical"), ("size", "numeric"), ("member", "categorical"), ("shape", "categorical")]
    color, size, member, _ = card.columns
    assert color.categories == ["blue", "green", "red"] and color.fill in color.categories
    assert member.categories == ["no", "yes"] and member.missing_in_training == 0
    assert color.missing_in_training > 0 and size.missing_in_training > 0
    assert [(i.name, i.dtype, i.shape) for i in card.inputs] == [("features", "float32", [-1, 1]),
                                                               ("categories", "string", [-1, 3])]
    assert card.input == card.inputs[0]
    graph = onnx.load(str(folder / MODEL_FILE))
    assert [i.name for i in graph.graph.input] == ["features", "categories"]
    assert [o.name for o in graph.graph.output] == ["logits"]
    lines = filled(card)
    assert len(lines) == 2 and lines[0].startswith("'color': ") and "filled with" in lines[1]
    assert card.golden[-2].input == [None] * 4  # the probe rows: every value missing,
    assert card.golden[-1].input.count("(not seen in training)") == 3  # every category unseen
    assert card.parity.passed and card.parity.rows == card.splits.test + 2


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """The shop table's network and its exported graph, built step by step."""
    path = tmp_path_factory.mktemp("shop") / "shop.csv"
    shop().to_csv(path, index=False)
    data = load_table(path, target="bought", positive="yes")
    s = split(data, QUICK.seed)
    fitted = fit(data, s, QUICK)
    graph = path.parent / MODEL_FILE
    export_onnx(fitted.model, data.task, graph)
    prepend_encoding(graph, s.columns)
    return s, fitted.model, graph


@pytest.mark.slow
def test_onnx_on_raw_rows_equals_keras_on_encoded_rows(network):
    s, model, graph = network
    raw = {"features": np.array([[np.nan], [12.0], [9.5], [np.nan]], np.float32),
           "categories": np.array([["", "yes", "box"], ["purple", "no", ""], ["red", "", "star"],
                                   ["", "", ""]], dtype=object)}
    encoded = encode(s.columns, raw)
    assert encoded[1, 1:4].sum() == 0 and encoded[2, 6:].sum() == 0  # unseen: all zeros
    assert encoded[0, 0] == s.columns[1].fill  # NaN: the training median
    got = session(graph).run(None, raw)[0]
    np.testing.assert_allclose(got, model.predict(encoded, verbose=0), atol=1e-5)
    test_rows = session(graph).run(None, s.raw_test)[0]
    np.testing.assert_allclose(test_rows, model.predict(s.x_test, verbose=0), atol=1e-5)
    assert (s.raw_test["categories"] == "").any() and np.isnan(s.raw_test["features"]).any()


@pytest.mark.slow
def test_golden_rows_replay_in_onnxruntime(trained):
    _, card, folder = trained
    cats = [i for i, c in enumerate(card.columns) if c.kind == "categorical"]
    nums = [i for i, c in enumerate(card.columns) if c.kind == "numeric"]
    rows = [g.input for g in card.golden]
    raw = {"features": np.array([[np.nan if r[i] is None else r[i] for i in nums] for r in rows],
                                np.float32),
           "categories": np.array([["" if r[i] is None else r[i] for i in cats] for r in rows],
                                  dtype=object)}
    got = session(folder / MODEL_FILE).run(None, raw)[0]
    np.testing.assert_allclose(got, [g.output for g in card.golden], atol=1e-5)


@pytest.mark.slow
def test_a_table_without_numbers_has_only_the_categories_input(tmp_path):
    frame = shop().drop(columns=["size"])
    frame.to_csv(tmp_path / "words.csv", index=False)
    card, folder = train_one(load_table(tmp_path / "words.csv", target="bought"), QUICK, tmp_path,
                             "test", name="words")
    assert card.input.name == "categories" and [i.name for i in card.inputs] == ["categories"]  # `input`: the first graph input
    assert [i.name for i in onnx.load(str(folder / MODEL_FILE)).graph.input] == ["categories"]
    assert card.parity.passed


@pytest.mark.slow
def test_a_table_of_numbers_keeps_the_single_input_graph(tmp_path):
    frame = shop()[["size", "bought"]].dropna()
    frame["width"] = np.arange(len(frame)) % 13
    frame.to_csv(tmp_path / "plain.csv", index=False)
    card, folder = train_one(load_table(tmp_path / "plain.csv", target="bought"), QUICK, tmp_path,
                             "test", name="plain")
    assert card.columns is None and card.inputs is None
    assert card.input.name == "features" and card.input.shape == [-1, 2]
    graph = onnx.load(str(folder / MODEL_FILE))
    assert [i.name for i in graph.graph.input] == ["features"]
    assert all(isinstance(v, float) for g in card.golden for v in g.input)


def test_the_committed_passenger_table_is_the_generator_output():
    committed = pd.read_csv(PASSENGERS, keep_default_na=False, na_values=[""])
    made = passengers()
    pd.testing.assert_frame_equal(committed, made, check_dtype=False)
    assert committed["age"].isna().any() and committed["embarked"].isna().any()


@pytest.mark.slow
def test_the_passenger_table_trains_from_the_command_line(tmp_path, capsys):
    args = ["--csv", str(PASSENGERS), "--target", "survived", "--positive", "yes",
            "--epochs", "5", "--out", str(tmp_path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "'age': " in out and "(the training median)" in out
    assert "'embarked': " in out and "(the most frequent training category)" in out
    assert main([*args, "--quiet"]) == 0
    assert "filled with" not in capsys.readouterr().out
    card = read_card(tmp_path / "passengers" / "1" / CARD_FILE)
    assert [c.kind for c in card.columns] == ["categorical", "categorical", "numeric", "numeric",
                                              "categorical", "categorical"]


def test_texts_named_missing_in_training_are_missing_in_the_graph_too(tmp_path):
    """--na-values NA makes "NA" a missing value when training reads the table; the card says so
    and the graph fills "NA" as it fills "", so a client sending the table's own text gets the
    answer the training rows were fitted on, not an unseen category's."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"plan": rng.choice(["basic", "pro", "NA"], 90), "z": rng.random(90).round(3)})
    frame["y"] = np.where(frame.plan == "pro", "yes", "no")
    frame.to_csv(tmp_path / "plans.csv", index=False)
    data = load_table(tmp_path / "plans.csv", target="y", na_values=["NA"])
    (plan, _) = split(data, seed=1).columns
    assert plan.categories == ["basic", "pro"] and plan.missing_texts == ["NA"] and plan.missing_in_training > 0
    graph = session(encoding_graph([plan], 18, 8))
    rows = {"categories": np.array([["NA"], [""], ["pro"], ["gold"]], dtype=object)}
    fill = [0, 1] if plan.fill == "pro" else [1, 0]
    np.testing.assert_array_equal(graph.run(None, rows)[0], [fill, fill, [0, 1], [0, 0]])
    assert Column.model_validate_json(plan.model_dump_json()).missing_texts == ["NA"]
    assert "missing_texts" not in Column(name="c", kind="categorical", fill="a", categories=["a"]).model_dump()
    with pytest.raises(ValueError, match="missing text"):
        Column(name="c", kind="categorical", fill="a", categories=["a", "NA"], missing_texts=["NA"])


@pytest.mark.parametrize("spelling", [("true", "false"), ("True", "False"), ("TRUE", "FALSE")])
def test_a_yes_no_column_keeps_the_files_spelling(tmp_path, spelling):
    """pandas reads true/false cells as booleans; as categories they keep the CSV's own text, the
    text a client copies from the file (and blanks stay missing)."""
    yes, no = spelling
    frame = pd.DataFrame({"flag": [yes, no, "", yes, no, no] * 10, "w": np.arange(60) % 7, "y": ["a", "b"] * 30})
    frame.to_csv(tmp_path / "flags.csv", index=False)
    data = load_table(tmp_path / "flags.csv", target="y")
    assert data.categorical == ("flag",)
    assert sorted(set(data.text[:, 0])) == sorted({"", yes, no})


def test_the_trees_baseline_gets_the_raw_columns_natively():
    """Gradient-boosted trees split on categories and missing values themselves: they get numbers
    with NaN and category codes (NaN for missing or unseen), not the network's encoded matrix."""
    raw = {"features": np.array([[np.nan, 3.0], [1.0, 2.0]], np.float32),
           "categories": np.array([["", "cone"], ["blue", "plate"]], dtype=object)}
    x, mask = native(COLUMNS, raw)
    np.testing.assert_array_equal(x, [[np.nan, 3.0, np.nan, 2.0], [1.0, 2.0, 0.0, np.nan]])
    assert mask == [False, False, True, True]
