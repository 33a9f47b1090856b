"""Artifacts: atomic writes, checksums, and a one-line error for every kind of damage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nextclick.data.sessions import Sessions
from nextclick.errors import NextclickError
from nextclick.models import artifact, create_model
from nextclick.models.base import Recommender
from tests.conftest import REPO_ROOT


def sessions(n_items: int = 30) -> Sessions:
    rng = np.random.default_rng(0)
    return Sessions.from_lists([list(rng.integers(1, n_items + 1, size=5)) for _ in range(200)], n_items=n_items)


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    return create_model("sr").fit(sessions()).save(tmp_path / "m")


def edit_config(path: Path, **changes) -> None:
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def test_round_trip_records_checksums(saved: Path) -> None:
    cfg = json.loads((saved / "config.json").read_text())
    assert set(cfg["files"]) == {"vocab.json", "weights.safetensors"}
    assert cfg["files"]["weights.safetensors"]["bytes"] == (saved / "weights.safetensors").stat().st_size
    m = Recommender.load(saved)
    assert m.recommend([1, 2], k=5)[0].size == 5
    assert sorted(p.name for p in saved.parent.iterdir()) == ["m"]  # no temporary directory left behind


@pytest.mark.parametrize("damage,needle", [
    ("flip", "does not match the checksum"),
    ("truncate", "truncated"),
    ("no_weights", "weights.safetensors is missing"),
    ("no_vocab", "vocab.json is missing"),
])
def test_damaged_files_are_refused(saved: Path, damage: str, needle: str) -> None:
    w = saved / "weights.safetensors"
    if damage == "flip":  # one byte of the weights, as a bad disk or copy would
        data = bytearray(w.read_bytes())
        data[len(data) // 2] ^= 0x01
        w.write_bytes(bytes(data))
    elif damage == "truncate":
        w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    elif damage == "no_weights":
        w.unlink()
    else:
        (saved / "vocab.json").unlink()
    with pytest.raises(NextclickError, match=needle):
        Recommender.load(saved)


@pytest.mark.parametrize("config,needle", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a nextclick model"),
])
def test_a_config_that_is_not_the_json_expected(saved: Path, config: str, needle: str) -> None:
    (saved / "config.json").write_text(config)
    with pytest.raises(NextclickError, match=needle):
        Recommender.load(saved)


@pytest.mark.parametrize("changes,needle", [
    ({"n_items": "30"}, "'n_items' must be a JSON int"),
    ({"n_items": -1}, "'n_items' must lie in"),
    ({"n_items": 10**400}, "'n_items' must"),
    ({"n_items": 29}, "holds 30 items but"),
    ({"config": {"steps": 10, "bogus": 1}}, "unknown parameters"),
    ({"config": {"steps": "ten"}}, "'steps' = 'ten' is not of type"),
    ({"model": "nosuch"}, "unknown model"),
    ({"files": None}, None),  # an artifact written before checksums: read without them
])
def test_config_fields_are_checked(saved: Path, changes: dict, needle: str | None) -> None:
    if changes.get("n_items") == 10**400:
        text = (saved / "config.json").read_text().replace('"n_items": 30', '"n_items": 1e400')
        (saved / "config.json").write_text(text)
    else:
        edit_config(saved, **changes)
    if changes.get("files", 0) is None:
        cfg = json.loads((saved / "config.json").read_text())
        del cfg["files"]
        (saved / "config.json").write_text(json.dumps(cfg))
        assert Recommender.load(saved).n_items_ == 30
        return
    with pytest.raises(NextclickError, match=needle):
        Recommender.load(saved)


def test_a_header_flipped_safetensors_file_without_checksums(saved: Path) -> None:
    cfg = json.loads((saved / "config.json").read_text())
    del cfg["files"]
    (saved / "config.json").write_text(json.dumps(cfg))
    w = saved / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[0] ^= 0xFF  # the header length
    w.write_bytes(bytes(data))
    with pytest.raises(NextclickError, match="not a valid safetensors file"):
        Recommender.load(saved)


def test_non_finite_weights_are_refused_on_save_and_on_load(tmp_path: Path) -> None:
    m = create_model("gru4rec", layers=(8,), n_epochs=1, batch_size=8, n_sample=0).fit(sessions())
    m.net_.out.data[3, 0] = float("nan")
    with pytest.raises(NextclickError, match="NaN or infinite"):
        m.save(tmp_path / "nan")
    assert not (tmp_path / "nan").exists()
    ok = create_model("pop").fit(sessions()).save(tmp_path / "pop")
    art = artifact.read(ok)
    art.arrays["popularity"][2] = np.inf
    from safetensors.numpy import save_file

    save_file(art.arrays, str(ok / "weights.safetensors"))
    cfg = json.loads((ok / "config.json").read_text())
    del cfg["files"]
    (ok / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(NextclickError, match="NaN or infinite"):
        Recommender.load(ok)


def test_save_refuses_a_file_or_a_directory_of_other_files(tmp_path: Path) -> None:
    m = create_model("pop").fit(sessions())
    (tmp_path / "f").write_text("x")
    with pytest.raises(NextclickError, match="is a file"):
        m.save(tmp_path / "f")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("keep")
    with pytest.raises(NextclickError, match="holds other files"):
        m.save(tmp_path / "d")
    assert (tmp_path / "d" / "notes.txt").read_text() == "keep"
    m.save(tmp_path / "again")
    m.save(tmp_path / "again")  # an artifact is replaced
    assert Recommender.load(tmp_path / "again").n_items_ == 30


SLOW_SAVE = r"""
import sys, time
from pathlib import Path
import safetensors.numpy as st
import nextclick.models.artifact as art
from nextclick.models import create_model
from nextclick.data.sessions import Sessions
real = st.save_file
def slow(arrays, path):  # writes half the file, then hangs: the parent kills us here
    real(arrays, path)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])
    Path(sys.argv[2]).write_text("halfway")
    time.sleep(60)
art.save_file = slow
m = create_model("pop").fit(Sessions.from_lists([[1, 2, 3], [2, 3, 4]], n_items=int(sys.argv[3])))
m.save(sys.argv[1])
"""


@pytest.mark.parametrize("existing", [False, True])
def test_a_save_killed_halfway_leaves_no_artifact_that_loads(tmp_path: Path, existing: bool) -> None:
    target, marker = tmp_path / "m", tmp_path / "marker"
    if existing:  # an old artifact stays whole and loadable
        create_model("pop").fit(sessions()).save(target)
    p = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(target), str(marker), "7"], cwd=REPO_ROOT)
    t0 = time.monotonic()
    while not marker.exists():
        assert p.poll() is None and time.monotonic() - t0 < 60, "the save never reached its middle"
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    if existing:
        assert Recommender.load(target).n_items_ == 30
    else:
        with pytest.raises(NextclickError, match="not a model directory"):
            Recommender.load(target)


# ---------------------------------------------------------------------------- memory-mapped weights
def test_mapped_weights_equal_the_read_ones(tmp_path: Path) -> None:
    import safetensors.numpy as st

    arrays = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.array([1, -2, 3], np.int64),
              "c": np.zeros(0, np.float32), "d": np.array([True, False]), "e": np.ones((2, 2), np.float16)}
    st.save_file(arrays, str(tmp_path / "w.safetensors"))
    mapped = artifact.map_safetensors(tmp_path / "w.safetensors")
    assert set(mapped) == set(arrays)
    for k, v in arrays.items():
        assert mapped[k].dtype == v.dtype and mapped[k].shape == v.shape
        np.testing.assert_array_equal(mapped[k], v)
    mapped["a"][0, 0] = 99.0  # copy-on-write: the file keeps its value
    np.testing.assert_array_equal(st.load_file(str(tmp_path / "w.safetensors"))["a"], arrays["a"])


@pytest.mark.parametrize("damage", ["short", "length", "json", "range"])
def test_mapping_a_damaged_file_is_a_one_line_error(tmp_path: Path, damage: str) -> None:
    import safetensors.numpy as st

    w = tmp_path / "w.safetensors"
    st.save_file({"a": np.zeros((4, 4), np.float32)}, str(w))
    data = bytearray(w.read_bytes())
    n = int.from_bytes(data[:8], "little")
    if damage == "short":
        data = data[:5]
    elif damage == "length":
        data[:8] = (len(data) * 2).to_bytes(8, "little")
    elif damage == "json":
        data[8] = ord("[")
    else:  # the header claims more bytes than the file holds
        data = data[: 8 + n + 10]
    w.write_bytes(bytes(data))
    with pytest.raises(NextclickError, match="not a valid safetensors file"):
        artifact.map_safetensors(w)


def test_a_mapped_gru4rec_scores_the_same_and_serves_its_tables_uncopied(tmp_path: Path) -> None:
    m = create_model("gru4rec", layers=(16,), n_epochs=1, batch_size=16, n_sample=8, embedding=8, n_threads=1)
    path = m.fit(sessions(40)).save(tmp_path / "g")
    read, mapped = Recommender.load(path), Recommender.load(path, mmap=True)
    some = [[1, 2, 3], [4], [5, 6]]
    np.testing.assert_array_equal(read.score_batch(some), mapped.score_batch(some))
    live = mapped.live()
    st = live.advance(live.start(3), np.array([1, 0, 7]))
    np.testing.assert_array_equal(st, read.live().advance(read.live().start(3), np.array([1, 0, 7])))
    W, b = live.output_layer()
    arrays = artifact.read(path, mmap=True).arrays  # another mapping of the same file
    assert W.data_ptr() == mapped.net_.out_w.data_ptr() and b.data_ptr() == mapped.net_.out_b.data_ptr()  # no copy
    np.testing.assert_array_equal(W.numpy(), arrays["state.item_out"])


RSS_CHILD = r"""
import sys
from nextclick.models.base import Recommender
import nextclick.models.gru4rec.model  # torch and the model's code loaded before measuring
def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
before = anon()
m = Recommender.load(sys.argv[1], mmap=sys.argv[2] == "1")
W, b = m.live().output_layer()
float(W.sum())  # every page of the item matrix read
print(anon() - before)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssAnon from /proc")
def test_mapped_weights_are_not_private_memory(tmp_path: Path) -> None:
    """A mapped item matrix read in full adds file pages (shared between the processes mapping the
    file), not private memory; read normally, the same model adds at least the matrix's size."""
    n_items, d = 120_000, 64
    m = create_model("gru4rec", layers=(d,), n_epochs=1, batch_size=32, n_sample=16, n_threads=1)
    rng = np.random.default_rng(0)
    path = m.fit(Sessions.from_lists([list(rng.integers(1, n_items + 1, size=4)) for _ in range(300)], n_items=n_items)).save(
        tmp_path / "big")
    table = (n_items + 1) * d * 4
    grown = {}
    for flag in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", RSS_CHILD, str(path), flag], capture_output=True, text=True, cwd=REPO_ROOT)
        assert out.returncode == 0, out.stderr
        grown[flag] = int(out.stdout.strip().splitlines()[-1])
    # read: the matrix is private memory; mapped: only the small things loading allocates (vocabulary, ...)
    assert grown["0"] - grown["1"] >= 0.8 * table and grown["1"] < table / 2, grown
