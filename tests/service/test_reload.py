"""Model updates without downtime: change detection, rejection of bad updates, admin reload, load test."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import shutil
import time
import weakref
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.config import Settings
from service.main import create_app
from service import repository
from service.repository import Repository
from tests.service import helpers
from tests.service.helpers import MULTICLASS_V1, MULTICLASS_V2, REGRESSION, write_model

pytestmark = pytest.mark.anyio
ROW = {"instances": [[0, 0, 0, 0]]}
V3 = dataclasses.replace(MULTICLASS_V2, version=3, bias=[0.0, 2.0, 0.0])


@pytest.fixture
def root(tmp_path):
    for spec in (MULTICLASS_V1, MULTICLASS_V2, REGRESSION):
        write_model(tmp_path, spec)
    return tmp_path


def empty_change(**kw) -> dict:
    return {"added": [], "replaced": [], "removed": [], "failed": []} | kw


async def test_refresh_adds_replaces_removes_and_skips_unchanged(root):
    repo = Repository(root).load()
    assert repo.last_change["added"] == ["tiny-multiclass/1", "tiny-multiclass/2", "tiny-regression/1"]
    assert await repo.refresh() == empty_change()
    old = repo.get("tiny-multiclass")
    write_model(root, V3)
    assert await repo.refresh() == empty_change(added=["tiny-multiclass/3"])
    assert repo.get("tiny-multiclass").version == 3
    assert old.version == 2 and old.run  # a request holding the old model can still finish on it
    write_model(root, dataclasses.replace(MULTICLASS_V1, bias=[5.0, 0.0, 0.0]))
    assert await repo.refresh() == empty_change(replaced=["tiny-multiclass/1"])
    assert repo.get("tiny-multiclass", 1).run(np.zeros((1, 4), np.float32)).tolist() == [[5.0, 0.0, 0.0]]
    shutil.rmtree(root / "tiny-multiclass" / "3")
    assert await repo.refresh() == empty_change(removed=["tiny-multiclass/3"])
    assert repo.get("tiny-multiclass").version == 2 and repo.ready_versions("tiny-multiclass") == [1, 2]
    shutil.rmtree(root / "tiny-regression")
    assert await repo.refresh() == empty_change(removed=["tiny-regression/1"])
    assert "tiny-regression" not in repo.entries


async def test_a_removed_version_is_freed_by_its_last_reference(root):
    # Batching on (the default): a model its batcher pointed back at was a cycle, which only the
    # collector frees, and never for what start-up loaded (frozen out of the collector's reach).
    app = create_app(Settings(model_root=root, poll_seconds=0, admin_enabled=True))
    async with helpers.serve(app) as client:
        repo = app.state.repository
        assert repo.get("tiny-multiclass", 1).batcher is not None
        at_start = weakref.ref(repo.get("tiny-multiclass", 1).session)
        write_model(root, V3)
        assert (await client.post("/admin/reload")).status_code == 200
        assert (await client.post("/predict", json={"model": "tiny-multiclass", **ROW})).status_code == 200
        later = weakref.ref(repo.get("tiny-multiclass", 3).session)
        shutil.rmtree(root / "tiny-multiclass")
        gc.disable()
        try:
            assert (await client.post("/admin/reload")).status_code == 200
            assert at_start() is None and later() is None
        finally:
            gc.enable()


async def test_a_bad_update_is_rejected_and_the_running_version_keeps_serving(root):
    repo = Repository(root).load()
    running = repo.get("tiny-multiclass", 2)
    folder = root / "tiny-multiclass" / "2"
    (folder / "model.onnx").write_bytes(b"not onnx")
    change = await repo.refresh()
    assert change["failed"][0]["model"] == "tiny-multiclass" and change["failed"][0]["version"] == 2
    assert repo.get("tiny-multiclass", 2) is running
    assert repo.entry("tiny-multiclass", 2).summary()["reason"].startswith("update rejected")
    assert await repo.refresh() == empty_change()  # the same bad files are not retried every poll
    write_model(root, MULTICLASS_V2)  # fixed: loads again
    assert await repo.refresh() == empty_change(replaced=["tiny-multiclass/2"])
    assert "reason" not in repo.entry("tiny-multiclass", 2).summary()


async def test_a_bad_new_version_leaves_the_default_alone(root):
    repo = Repository(root).load()
    folder = write_model(root, V3)
    helpers.edit_card(folder, sha256="0" * 64)
    change = await repo.refresh()
    assert [f["version"] for f in change["failed"]] == [3]
    assert repo.get("tiny-multiclass").version == 2
    assert repo.entry("tiny-multiclass", 3).status == "failed"


async def test_admin_reload_answers_the_summary(root):
    app = create_app(Settings(model_root=root, admin_enabled=True, poll_seconds=0))
    async with helpers.serve(app) as client:
        write_model(root, V3)
        response = await client.post("/admin/reload")
        assert response.status_code == 200
        assert response.json() == empty_change(added=["tiny-multiclass/3"], unreadable={})
        assert (await client.post("/models/tiny-multiclass/predict", json=ROW)).json()["version"] == 3
        text = (await client.get("/metrics")).text
        assert helpers.metric(text, "tinyserve_model_version_status", model="tiny-multiclass", version="3",
                              status="ready") == 1


async def test_a_model_folder_that_cannot_be_read_is_said_and_the_rest_serve(root, monkeypatch):
    # At start-up it stopped the server with a traceback (uvicorn's lifespan failed).
    listed = Path.iterdir

    def iterdir(folder):  # as for a folder the server's user may not read (the tests may run as root)
        if folder.name == "tiny-regression":
            raise PermissionError(13, "Permission denied", str(folder))
        return listed(folder)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    app = create_app(Settings(model_root=root, admin_enabled=True, poll_seconds=0))
    async with helpers.serve(app) as client:
        assert (await client.post("/models/tiny-multiclass/predict", json=ROW)).status_code == 200
        assert (await client.get("/health/ready")).status_code == 200
        response = await client.post("/admin/reload")
    assert response.json() == empty_change(unreadable={str(root / "tiny-regression"): "Permission denied"})


async def test_a_reload_past_the_request_deadline_goes_on_and_the_next_one_waits_for_it(root, monkeypatch):
    # It was cancelled with its request: what it loaded was thrown away, and a second reload
    # loaded the same folders at the same time, thrown away in turn.
    real, running, most = repository.load_version, [0], [0]

    def slow_load(*args, **kwargs):  # a model that takes longer to load than a request may last
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            time.sleep(0.6)
            return real(*args, **kwargs)
        finally:
            running[0] -= 1

    app = create_app(Settings(model_root=root, admin_enabled=True, poll_seconds=0, request_timeout_seconds=0.2))
    async with helpers.serve(app) as client:
        monkeypatch.setattr(repository, "load_version", slow_load)
        write_model(root, V3)
        assert (await client.post("/admin/reload")).status_code == 504
        assert (await client.post("/admin/reload")).status_code == 504  # waits for the first
        for _ in range(100):
            if 3 in app.state.repository.entries["tiny-multiclass"]:
                break
            await asyncio.sleep(0.05)
        assert app.state.repository.get("tiny-multiclass").version == 3 and most[0] == 1
        await asyncio.sleep(0.7)  # the second reload, after it, finds nothing new
        assert most[0] == 1
        text = (await client.get("/metrics")).text
        assert helpers.metric(text, "tinyserve_model_version_status", model="tiny-multiclass", version="3",
                              status="ready") == 1  # published


async def test_admin_is_off_by_default_without_tokens(root):
    async with helpers.serve(create_app(Settings(model_root=root))) as client:
        assert (await client.post("/admin/reload")).status_code == 404


async def test_the_poller_picks_up_a_new_version(root):
    async with helpers.serve(create_app(Settings(model_root=root, poll_seconds=0.05))) as client:
        write_model(root, V3)
        for _ in range(100):
            if (await client.post("/models/tiny-multiclass/predict", json=ROW)).json()["version"] == 3:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("version 3 never served")


def test_add_replace_remove_under_load_fails_no_request(root, tmp_path_factory):
    """Real server, 6 clients hammering /predict while versions come and go: zero failed requests."""
    env = {"TINYSERVE_MODEL_ROOT": str(root), "TINYSERVE_POLL_SECONDS": "0.1", "TINYSERVE_LOG_LEVEL": "warning"}
    with helpers.running_server(env, tmp_path_factory.mktemp("reload") / "server.log") as url:
        stop, results = False, []

        async def hammer(body: dict) -> None:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                while not stop:
                    r = await client.post("/predict", json=body)
                    results.append((r.status_code, r.json().get("version")))

        def default_version() -> int | None:
            return httpx.get(f"{url}/models/tiny-multiclass").json()["default_version"]

        def wait_for(check) -> None:
            deadline = time.monotonic() + 15
            while not check():
                assert time.monotonic() < deadline, "the poller did not apply the change"
                time.sleep(0.05)

        async def main() -> None:
            nonlocal stop
            bodies = [{"model": "tiny-multiclass", **ROW}, {"model": "tiny-regression", "instances": [[1, 2]]}]
            clients = [asyncio.create_task(hammer(bodies[i % 2])) for i in range(6)]
            await asyncio.sleep(0.5)
            steps = [
                (lambda: write_model(root, V3), lambda: default_version() == 3),
                (lambda: write_model(root, dataclasses.replace(MULTICLASS_V2, bias=[1.0, 0.0, 0.0])),
                 lambda: httpx.get(f"{url}/models").status_code == 200),
                (lambda: (root / "tiny-multiclass" / "9").mkdir() or (root / "tiny-multiclass" / "9" /
                          "model.onnx").write_bytes(b"junk"), lambda: _status(url, 9) == "failed"),
                (lambda: shutil.rmtree(root / "tiny-multiclass" / "3"), lambda: default_version() == 2),
                (lambda: shutil.rmtree(root / "tiny-multiclass" / "1"), lambda: _status(url, 1) is None),
            ]
            for change, done in steps:
                change()
                await asyncio.to_thread(wait_for, done)
                await asyncio.sleep(0.3)
            stop = True
            await asyncio.gather(*clients)

        asyncio.run(main())
    failed = [r for r in results if r[0] != 200]
    assert len(results) > 200 and failed == []
    assert {v for _, v in results} >= {1, 2, 3}  # tiny-regression is 1; multiclass served 2 and 3


def _status(url: str, version: int) -> str | None:
    versions = httpx.get(f"{url}/models/tiny-multiclass").json()["versions"]
    return next((v["status"] for v in versions if v["version"] == version), None)


async def test_a_removed_version_leaves_only_its_status_in_the_metrics(root):
    # Batches wait 2 s: a request to version 3 is still running when the version goes.
    app = create_app(Settings(model_root=root, admin_enabled=True, poll_seconds=0, batch_max_delay_ms=2000))
    async with helpers.serve(app) as client:
        write_model(root, V3)
        await client.post("/admin/reload")
        assert (await client.post("/models/tiny-multiclass/versions/3/predict", json=ROW)).status_code == 200
        assert 'version="3"' in (await client.get("/metrics")).text.split("tinyserve_model_version_status")[0]
        running = asyncio.create_task(client.post("/models/tiny-multiclass/versions/3/predict", json=ROW))
        await asyncio.sleep(0.05)
        shutil.rmtree(root / "tiny-multiclass" / "3")
        await client.post("/admin/reload")
        assert not running.done()  # removed while it runs
        assert (await running).status_code == 200  # it finishes on the version it started with
        text = (await client.get("/metrics")).text
    series = [line for line in text.splitlines() if 'version="3"' in line and not line.startswith("#")]
    assert series and all(line.startswith("tinyserve_model_version_status{") and line.endswith(" 0.0")
                          for line in series), series


async def test_a_version_removed_then_back_gets_its_series_again(root):
    app = create_app(Settings(model_root=root, admin_enabled=True, poll_seconds=0))
    async with helpers.serve(app) as client:
        for _ in range(2):
            write_model(root, V3)
            await client.post("/admin/reload")
            assert (await client.post("/models/tiny-multiclass/versions/3/predict", json=ROW)).status_code == 200
            text = (await client.get("/metrics")).text
            assert helpers.metric(text, "tinyserve_inference_duration_seconds_count", model="tiny-multiclass",
                                  version="3") == 1
            shutil.rmtree(root / "tiny-multiclass" / "3")
            await client.post("/admin/reload")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def test_memory_returns_after_200_versions_come_and_go_under_load(tmp_path):
    # Each cycle publishes a version, predicts with it, removes it; 4 clients predict meanwhile.
    shutil.copytree(helpers.REPO_ROOT / "models" / "digits", tmp_path / "digits")
    env = {"TINYSERVE_MODEL_ROOT": str(tmp_path), "TINYSERVE_ADMIN_ENABLED": "true", "TINYSERVE_POLL_SECONDS": "0",
           "TINYSERVE_LOG_LEVEL": "warning", "TINYSERVE_ACCESS_LOG": "false"}
    procs: list = []
    rows = {"instances": [[0.0] * 64] * 8}
    with helpers.running_server(env, tmp_path / "server.log", procs=procs) as url:
        async def cycles(count: int, start: int) -> None:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                for version in range(start, start + count):
                    folder = tmp_path / "digits" / str(version)
                    shutil.copytree(tmp_path / "digits" / "1", folder)
                    helpers.edit_card(folder, version=version)
                    assert not (await client.post("/admin/reload")).json()["failed"]
                    assert (await client.post(f"/models/digits/versions/{version}/predict", json=rows)).status_code == 200
                    shutil.rmtree(folder)
                    await client.post("/admin/reload")

        async def load(stop: asyncio.Event) -> None:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                while not stop.is_set():
                    assert (await client.post("/models/digits/predict", json=rows)).status_code == 200

        async def main() -> tuple[float, float]:
            stop = asyncio.Event()
            clients = [asyncio.create_task(load(stop)) for _ in range(4)]
            await cycles(10, 2)  # warm: first sessions, first metric series, the allocator's pools
            before = _rss_mb(procs[0].pid)
            await cycles(200, 12)
            stop.set()
            await asyncio.gather(*clients)
            return before, _rss_mb(procs[0].pid)

        before, after = asyncio.run(main())
    print(f"RSS {before:.1f} MB before, {after:.1f} MB after 200 versions")
    assert after <= before * 1.10


async def test_a_changed_serving_json_reloads_the_model_and_a_bad_one_is_rejected(root):
    repo = Repository(root, batching=(64, 0.0)).load()
    assert repo.get("tiny-multiclass").batcher.max_size == 64
    options = root / "tiny-multiclass" / "serving.json"
    options.write_text('{"batch_max_size": 8}')
    change = await repo.refresh()
    assert change == empty_change(replaced=["tiny-multiclass/1", "tiny-multiclass/2"])
    running = repo.get("tiny-multiclass")
    assert running.batcher.max_size == 8
    options.write_text('{"batch_max_delay_ms": Infinity}')
    change = await repo.refresh()
    assert "finite number" in change["failed"][0]["reason"]
    assert repo.get("tiny-multiclass") is running  # the bad options are rejected, the model serves
    options.unlink()
    assert (await repo.refresh())["replaced"] == ["tiny-multiclass/1", "tiny-multiclass/2"]
    assert repo.get("tiny-multiclass").batcher.max_size == 64


async def test_a_vanished_model_root_removes_nothing_until_it_is_back(root, caplog):
    repo = Repository(root).load()
    away = root.rename(root.with_name(root.name + "-away"))
    assert await repo.refresh() == empty_change()
    assert await repo.refresh() == empty_change()
    assert repo.get("tiny-multiclass").version == 2 and repo.not_ready_reason() is None
    assert caplog.text.count("is missing; serving the models loaded before") == 1  # once, not every poll
    away.rename(root)
    shutil.rmtree(root / "tiny-regression")
    assert await repo.refresh() == empty_change(removed=["tiny-regression/1"])


async def test_a_rejected_update_is_logged_as_such(root, caplog):
    repo = Repository(root).load()
    (root / "tiny-multiclass" / "2" / "model.onnx").write_bytes(b"not onnx")
    await repo.refresh()
    assert "tiny-multiclass/2: update rejected, serving the previous files" in caplog.text
    assert "not serving tiny-multiclass/2" not in caplog.text
