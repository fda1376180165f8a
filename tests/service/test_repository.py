"""Loading the repository: what serves, what fails and why, which version is the default."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto

from service.card import CARD_FILE, MODEL_FILE, NAME_PATTERN, VERSION_PATTERN
from service.errors import BadRequest, NotFound, NotReady
from service import repository
from service.repository import Repository, scan
from tests.service import helpers
from tests.service.helpers import BINARY, MULTICLASS_V1, MULTICLASS_V2, edit_card, reseal, write_model

BINARY_CARD = helpers.make_card(BINARY, "0" * 64)


def load(root, **kwargs) -> Repository:
    return Repository(root, **kwargs).load()


def status(repo, name, version=1):
    entry = repo.entries[name][version]
    return entry.status, entry.reason


def test_standard_repository_loads_everything(model_root):
    repo = load(model_root)
    assert {(n, v, e.status) for n, vs in repo.entries.items() for v, e in vs.items()} == {
        (s.name, s.version, "ready") for s in helpers.STANDARD}
    assert repo.not_ready_reason() is None


def test_newest_ready_version_is_the_default_and_older_stay_addressable(model_root):
    repo = load(model_root)
    assert repo.get("tiny-multiclass").version == 2
    assert repo.get("tiny-multiclass", 1).version == 1
    assert repo.get("tiny-multiclass", "1").version == 1


def test_broken_newest_version_falls_back_to_the_previous_one(tmp_path):
    write_model(tmp_path, MULTICLASS_V1)
    edit_card(write_model(tmp_path, MULTICLASS_V2), sha256="f" * 64)
    repo = load(tmp_path)
    assert repo.get("tiny-multiclass").version == 1
    with pytest.raises(NotReady, match="version 2 is not serving: model.onnx sha256 is"):
        repo.get("tiny-multiclass", 2)


def test_hash_mismatch_fails_only_that_model(tmp_path):
    write_model(tmp_path, MULTICLASS_V1)
    folder = write_model(tmp_path, BINARY)
    (folder / MODEL_FILE).write_bytes((folder / MODEL_FILE).read_bytes()[:-10])  # truncated
    repo = load(tmp_path)
    state, reason = status(repo, "tiny-binary")
    assert state == "failed" and reason.startswith("model.onnx sha256 is ") and "card says" in reason
    assert repo.get("tiny-multiclass").version == 1
    assert repo.not_ready_reason() is None  # the good model still serves


def test_strict_readiness_wants_every_model_serving(tmp_path):
    # Off, a replica that cannot load a model the others serve is ready all the same (a rollout
    # goes on); strict, as Triton's --strict-readiness, it is not, while a failed second version
    # of a model that serves another keeps it ready.
    write_model(tmp_path, MULTICLASS_V1)
    edit_card(write_model(tmp_path, MULTICLASS_V2), sha256="f" * 64)
    folder = write_model(tmp_path, BINARY)
    assert load(tmp_path, strict=True).not_ready_reason() is None
    (folder / MODEL_FILE).write_bytes(b"broken")
    assert load(tmp_path).not_ready_reason() is None
    assert load(tmp_path, strict=True).not_ready_reason() == \
        "strict readiness: model(s) ['tiny-binary'] have no version serving"


def test_corrupt_model_with_matching_hash_fails_in_onnxruntime(tmp_path):
    folder = write_model(tmp_path, BINARY)
    (folder / MODEL_FILE).write_bytes(b"this is not a protobuf")
    reseal(folder)
    assert status(load(tmp_path), "tiny-binary") == ("failed", (
        "InvalidProtobuf: [ONNXRuntimeError] : 7 : INVALID_PROTOBUF : "
        "Load model from model.onnx failed:Protobuf parsing failed."))


def test_golden_mismatch_fails(tmp_path):
    folder = write_model(tmp_path, BINARY)
    card_golden = BINARY_CARD.golden
    bad = [card_golden[0].model_copy(update={"output": [card_golden[0].output[0] + 1e-3]}), *card_golden[1:]]
    edit_card(folder, golden=bad)
    state, reason = status(load(tmp_path), "tiny-binary")
    assert state == "failed" and reason.startswith("golden example 0 output 0: model gives")


def test_a_graph_that_mixes_the_rows_of_a_batch_fails(tmp_path):
    # A softmax over the batch axis: each row's output depends on the rows run with it, so a
    # client's answer would depend on the other clients' rows in its batch. The card's golden
    # outputs are what the graph gives for them together: only the row alone tells.
    folder = write_model(tmp_path, MULTICLASS_V1)
    model = onnx.load_from_string((folder / MODEL_FILE).read_bytes())
    model.graph.node[-1].output[0] = "linear"
    model.graph.node.append(onnx.helper.make_node("Softmax", ["linear"], ["logits"], axis=0))
    (folder / MODEL_FILE).write_bytes(model.SerializeToString())
    reseal(folder)
    repo = load(tmp_path)  # fails (see below); its golden outputs then come from the graph itself
    golden = [list(g.input) for g in repo.entry("tiny-multiclass", 1).card.golden]
    session = onnxruntime.InferenceSession(str(folder / MODEL_FILE))
    together = session.run(None, {"x": np.array(golden, np.float32)})[0]
    edit_card(folder, golden=[g.model_copy(update={"output": o.tolist()})
                              for g, o in zip(repo.entry("tiny-multiclass", 1).card.golden, together)])
    state, reason = status(load(tmp_path), "tiny-multiclass")
    assert state == "failed" and reason.startswith("golden example 2 gives other outputs alone than with the")
    assert reason.endswith("a row's answer must not depend on the rows batched with it (a softmax over the batch axis?)")


def test_golden_within_tolerance_passes(tmp_path):
    folder = write_model(tmp_path, BINARY)
    golden = BINARY_CARD.golden
    edit_card(folder, golden=[g.model_copy(update={"output": [g.output[0] + 5e-5]}) for g in golden])
    assert status(load(tmp_path), "tiny-binary") == ("ready", None)


@pytest.mark.parametrize("breakage, reason", [
    (lambda f: (f / CARD_FILE).write_text("{not json"), "invalid card.json"),
    (lambda f: (f / CARD_FILE).write_text('{"name": "tiny-binary"}'), "invalid card.json: task: Field required"),
    (lambda f: (f / CARD_FILE).unlink(), "missing card.json"),
    (lambda f: (f / MODEL_FILE).unlink(), "missing model.onnx"),
    (lambda f: edit_card(f, input=BINARY_CARD.input.model_copy(update={"name": "features"})),
     "graph input {'name': 'x', 'shape': [-1, 3], 'dtype': 'float32'} does not match card input"),
    (lambda f: edit_card(f, output=BINARY_CARD.output.model_copy(update={"name": "probs"})),
     "no graph output 'probs'; the graph's outputs are ['logits']"),
])
def test_invalid_versions_report_why(tmp_path, breakage, reason):
    folder = write_model(tmp_path, BINARY)
    breakage(folder)
    state, got = status(load(tmp_path), "tiny-binary")
    assert state == "failed" and got.startswith(reason)



def test_graph_with_two_inputs_is_refused(tmp_path):
    folder = write_model(tmp_path, BINARY)
    model = onnx.load(folder / MODEL_FILE)
    model.graph.input.append(onnx.helper.make_tensor_value_info("unused", TensorProto.FLOAT, [1]))
    onnx.save(model, folder / MODEL_FILE)
    reseal(folder)
    assert status(load(tmp_path), "tiny-binary") == (
        "failed", "the graph has 2 inputs ['x', 'unused']; a served graph has exactly one, [batch, n_features]")


def test_fixed_batch_graph_is_refused(tmp_path):
    spec = dataclasses.replace(BINARY, name="fixed")
    folder = write_model(tmp_path, spec)
    model = onnx.load(folder / MODEL_FILE)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, folder / MODEL_FILE)
    reseal(folder)
    state, reason = status(load(tmp_path), "fixed")
    assert state == "failed" and reason.startswith("graph input 'x' has shape [1, 3]") and "free batch" in reason


@pytest.mark.anyio
async def test_stray_files_and_folders_are_ignored_and_folders_of_other_names_said_once(tmp_path, caplog):
    # A model copied to `a:b`, or a version to `007`, was never served and nothing said why.
    write_model(tmp_path, BINARY)
    (tmp_path / "README.md").write_text("hi")
    (tmp_path / ".cache" / "1").mkdir(parents=True)
    (tmp_path / "a:b" / "1").mkdir(parents=True)
    (tmp_path / "tiny-binary" / "latest").mkdir()
    (tmp_path / "tiny-binary" / "01").mkdir()
    (tmp_path / "tiny-binary" / "notes.txt").write_text("hi")
    (tmp_path / "lost+found").mkdir()  # an ext4 volume's, at the root of a mounted model volume
    repo = load(tmp_path)
    await repo.refresh()
    assert list(repo.entries) == ["tiny-binary"] and list(repo.entries["tiny-binary"]) == [1]
    said = sorted(r.getMessage() for r in caplog.records if r.getMessage().startswith("not serving"))
    assert said == [f"not serving {tmp_path / 'a:b'}, for its name: a model folder's name matches {NAME_PATTERN}",
                    *(f"not serving {tmp_path / 'tiny-binary' / v}, for its name: a version folder's name matches "
                      f"{VERSION_PATTERN}" for v in ("01", "latest"))]


@pytest.mark.parametrize("error", [FileNotFoundError, NotADirectoryError])
def test_a_model_folder_gone_while_the_scan_lists_it_holds_nothing(tmp_path, monkeypatch, error):
    # Removed (or replaced) between the listing of the root and its own: the scan raised, and a
    # reload answered 500.
    write_model(tmp_path, BINARY)
    write_model(tmp_path, MULTICLASS_V1)
    listed = Path.iterdir

    def iterdir(folder):
        if folder.name == "tiny-binary":
            raise error(2, "gone", str(folder))
        return listed(folder)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    listing = scan(tmp_path)
    assert listing.found == [("tiny-multiclass", 1, tmp_path / "tiny-multiclass" / "1")] and listing.unreadable == {}


def _unreadable(monkeypatch, *names, errno=13):
    """Listing a folder of one of these names fails with errno, as it does for a folder the server's
    user may not read (chmod cannot show it: the tests may run as root)."""
    listed = Path.iterdir

    def iterdir(folder):
        if folder.name in names:
            raise OSError(errno, os.strerror(errno), str(folder))
        return listed(folder)

    monkeypatch.setattr(Path, "iterdir", iterdir)


@pytest.mark.anyio
@pytest.mark.parametrize("unreadable", ["root", "tiny-binary"])
@pytest.mark.parametrize("errno", [13, 5, 24])  # permission denied, an I/O error, no file descriptor left
async def test_a_folder_that_cannot_be_read_removes_nothing(tmp_path, monkeypatch, caplog, unreadable, errno):
    write_model(tmp_path / "root", BINARY)
    repo = load(tmp_path / "root")
    write_model(tmp_path / "root", MULTICLASS_V1)
    _unreadable(monkeypatch, unreadable, errno=errno)
    folder = tmp_path / "root" if unreadable == "root" else tmp_path / "root" / unreadable
    changes = [await repo.refresh(), await repo.refresh()]
    assert [change["removed"] for change in changes] == [[], []]
    assert repo.get("tiny-binary").version == 1 and repo.not_ready_reason() is None
    assert repo.unreadable == {folder: os.strerror(errno)}
    # The rest of the tree loads beside a model folder that cannot be read; an unreadable root hides it all.
    assert changes[0]["added"] == ([] if unreadable == "root" else ["tiny-multiclass/1"])
    said = f"cannot read {folder} ({os.strerror(errno)}): the models in it are left as they were"
    assert caplog.text.count(said) == 1  # once, not at every pass
    monkeypatch.undo()
    await repo.refresh()
    assert repo.unreadable == {} and f"{folder} can be read again" in caplog.text
    assert sorted(repo.entries) == ["tiny-binary", "tiny-multiclass"]


@pytest.mark.anyio
async def test_a_model_folder_that_can_be_listed_but_not_entered_removes_nothing(tmp_path, monkeypatch, caplog):
    # `chmod 644 models/tiny-binary`: its entries are listed, but a stat of one is EACCES, which
    # Path.is_dir raises: start-up failed with a traceback, and every later pass with a 500.
    write_model(tmp_path, BINARY)
    repo = load(tmp_path)
    write_model(tmp_path, MULTICLASS_V1)
    is_dir = Path.is_dir

    def searched(folder):
        if folder.parent.name == "tiny-binary":
            raise PermissionError(13, "Permission denied", str(folder))
        return is_dir(folder)

    monkeypatch.setattr(Path, "is_dir", searched)
    change = await repo.refresh()
    assert change["removed"] == [] and change["added"] == ["tiny-multiclass/1"]
    assert repo.get("tiny-binary").version == 1 and repo.unreadable == {tmp_path / "tiny-binary": "Permission denied"}
    fresh = load(tmp_path)  # at start-up: the rest serve
    assert sorted(fresh.entries) == ["tiny-multiclass"] and fresh.not_ready_reason() is None


def test_a_model_folder_that_cannot_be_read_at_start_leaves_the_rest_serving(model_root, monkeypatch, caplog):
    _unreadable(monkeypatch, "tiny-binary")
    repo = load(model_root)
    assert "tiny-binary" not in repo.entries and repo.get("tiny-multiclass").version == 2
    assert repo.not_ready_reason() is None
    assert f"cannot read {model_root / 'tiny-binary'} (Permission denied)" in caplog.text
    reason = load(model_root, default_model="tiny-binary").not_ready_reason()
    assert reason == (f"default model 'tiny-binary' is not serving: cannot read {model_root / 'tiny-binary'} "
                      "(Permission denied)")


def test_a_root_that_cannot_be_read_at_start_is_why_it_is_not_ready(model_root, monkeypatch, caplog):
    _unreadable(monkeypatch, model_root.name)
    repo = load(model_root)
    assert repo.entries == {}
    assert repo.not_ready_reason() == f"no model is serving from {model_root}: cannot read {model_root} (Permission denied)"
    assert "no models found" not in caplog.text


@pytest.mark.anyio
async def test_a_root_gone_during_the_scan_removes_nothing(tmp_path, monkeypatch):
    write_model(tmp_path / "models", BINARY)
    repo = load(tmp_path / "models")

    def gone(root):  # the volume is unmounted after the check that it is there, before the listing
        root.rename(root.with_name("away"))
        return repository.Listing([], {}, {})

    monkeypatch.setattr(repository, "scan", gone)
    assert (await repo.refresh())["removed"] == [] and repo.get("tiny-binary").version == 1


@pytest.mark.parametrize("make_root", [lambda p: p / "missing", lambda p: p])
def test_missing_or_empty_root_loads_nothing_and_is_not_ready(tmp_path, make_root):
    repo = load(make_root(tmp_path))
    assert repo.entries == {}
    assert "no model is serving" in repo.not_ready_reason()


def test_not_ready_when_every_model_failed(tmp_path):
    edit_card(write_model(tmp_path, BINARY), sha256="0" * 64)
    assert "no model is serving" in load(tmp_path).not_ready_reason()


def test_a_default_model_that_does_not_serve_is_said_at_load(model_root, caplog):
    load(model_root, default_model="nope")
    assert "not ready: default model 'nope' is not serving" in caplog.text


def test_not_ready_when_the_default_model_does_not_serve(model_root):
    assert "default model 'nope' is not serving" in load(model_root, default_model="nope").not_ready_reason()
    assert load(model_root, default_model="tiny-binary").not_ready_reason() is None


def test_lookup_errors(model_root):
    repo = load(model_root)
    with pytest.raises(NotFound, match="unknown model 'nope'"):
        repo.get("nope")
    for version in (3, "3", "abc", "01", "-1", True):
        with pytest.raises(NotFound, match="has no version"):
            repo.get("tiny-multiclass", version)


def test_resolve_model_name(tmp_path, model_root):
    assert load(model_root, default_model="tiny-binary").resolve(None) == "tiny-binary"
    assert load(model_root).resolve("tiny-regression") == "tiny-regression"
    with pytest.raises(BadRequest, match="name a model with 'model'"):
        load(model_root).resolve(None)
    write_model(tmp_path, BINARY)
    assert load(tmp_path).resolve(None) == "tiny-binary"


def test_session_threads_follow_settings(tmp_path):
    write_model(tmp_path, BINARY)
    options = load(tmp_path, threads=2).get("tiny-binary").session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 1)
