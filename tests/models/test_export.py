"""ONNX export (nextclick.models.export): the exported graphs, run in onnxruntime, give the same
states, queries, score rows and top-10 as the model's own serving path (``model.live()``)."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from nextclick.data.batching import pad_arrays
from nextclick.errors import NextclickError
from nextclick.models import create_model
from nextclick.models.base import Recommender
from nextclick.models.export import export_onnx
from nextclick.ranking.exact import top_k
from tests.conftest import REPO_ROOT

ATOL = 1e-5
K = 10


def _require(name: str) -> Any:
    """An optional package of the ``export`` extra: skipped where it is missing, but never in CI."""
    try:
        return importlib.import_module(name)
    except ImportError:
        msg = f"{name} is not installed (pip install 'nextclick[export]')"
        if os.environ.get("CI"):
            pytest.fail(f"{msg}; CI is set, so the ONNX tests must run, not skip")
        pytest.skip(msg)


@pytest.fixture(scope="module")
def ort() -> Any:
    """onnxruntime, with onnx (which the export itself needs) checked first."""
    _require("onnx")
    return _require("onnxruntime")

GRU_VARIANTS = {
    "constrained-2-layers": dict(layers=(16, 8)),
    "embedding": dict(layers=(12,), constrained_embedding=False, embedding=6),
    "onehot": dict(layers=(8,), constrained_embedding=False),
}
SAS_VARIANTS = {
    "start-postln": dict(n_blocks=2, n_heads=2),
    "end-preln": dict(n_blocks=1, n_heads=1, positions="end", pre_ln=True),
}
T = 6


@pytest.fixture(scope="module")
def gru(chain_data) -> dict[str, Recommender]:
    base = dict(n_epochs=1, batch_size=8, n_sample=0, seed=0, n_threads=1)
    return {k: create_model("gru4rec", **base, **kw).fit(chain_data.train) for k, kw in GRU_VARIANTS.items()}


@pytest.fixture(scope="module")
def sas(chain_data) -> dict[str, Recommender]:
    base = dict(n_epochs=1, hidden=16, max_len=T, batch_size=16, seed=0, progress=False, patience=0, n_threads=1)
    return {k: create_model("sasrec", **base, **kw).fit(chain_data.train) for k, kw in SAS_VARIANTS.items()}


def _scores(q: np.ndarray, out_dir: Path) -> np.ndarray:
    """Score rows as export.json tells a user to: q @ W.T + b, column 0 at -inf."""
    wb = load_file(str(out_dir / "output.safetensors"))
    s = q @ wb["W"].T + wb["b"]
    s[:, 0] = -np.inf
    return s


def _assert_same_rows(ours: np.ndarray, theirs: np.ndarray) -> None:
    np.testing.assert_allclose(theirs, ours, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(top_k(theirs, K)[0], top_k(ours, K)[0])


@pytest.mark.parametrize("variant", list(GRU_VARIANTS))
def test_gru4rec_step_matches_live_sessions(variant: str, gru, ort, tmp_path: Path) -> None:
    model = gru[variant]
    meta = export_onnx(model, tmp_path / "x")
    run = ort.InferenceSession(str(tmp_path / "x" / "step.onnx")).run
    live = model.live()
    assert meta["state_size"] == live.state_size and meta["embedding_mode"] == variant.split("-")[0]
    # three sessions, four clicks each; 0 = an unknown item (the state must not move)
    clicks = np.array([[3, 0, 7, 7], [12, 5, 0, 1], [0, 30, 2, 9]], dtype=np.int64)
    ours = live.start(3)
    theirs = np.zeros((3, meta["state_size"]), np.float32)
    for t in range(clicks.shape[1]):
        before = theirs
        theirs, q = run(None, {"state": theirs, "item": clicks[:, t]})
        ours = live.advance(ours, clicks[:, t])
        np.testing.assert_allclose(theirs, ours, atol=ATOL, rtol=0)
        unknown = clicks[:, t] == 0
        np.testing.assert_array_equal(theirs[unknown], before[unknown])
        np.testing.assert_allclose(q, live.queries(ours, list(clicks[:, : t + 1])).numpy(), atol=ATOL, rtol=0)
        _assert_same_rows(live.scores(ours, list(clicks[:, : t + 1])), _scores(q, tmp_path / "x"))
    assert np.abs(theirs).max() > 0  # the sessions did move
    # a lone click (batch 1) runs the same graph
    one, _ = run(None, {"state": theirs[:1], "item": np.array([4], np.int64)})
    np.testing.assert_allclose(one, live.advance(ours[:1], np.array([4])), atol=ATOL, rtol=0)



@pytest.mark.parametrize("variant", list(SAS_VARIANTS))
def test_sasrec_query_matches_live_sessions(variant: str, sas, ort, tmp_path: Path) -> None:
    model = sas[variant]
    meta = export_onnx(model, tmp_path / "x")
    assert meta["max_len"] == T and meta["inputs"][0]["shape"] == ["batch", T]
    run = ort.InferenceSession(str(tmp_path / "x" / "query.onnx")).run
    live = model.live()
    rng = np.random.default_rng(0)
    # shorter than T, exactly T, and longer than T (only the last T count)
    sessions = [rng.integers(1, model.n_items_ + 1, size=n) for n in (1, 3, T, T + 4, 2 * T + 1)]
    (q,) = run(None, {"clicks": pad_arrays(sessions, T)[0]})
    ours = live.queries(None, sessions).numpy()
    np.testing.assert_allclose(q, ours, atol=ATOL, rtol=0)
    _assert_same_rows(live.scores(None, sessions), _scores(q, tmp_path / "x"))
    (q1,) = run(None, {"clicks": pad_arrays(sessions[3:4], T)[0]})  # batch 1
    np.testing.assert_allclose(q1[0], ours[3], atol=ATOL, rtol=0)


def test_export_directory_describes_itself(gru, ort, tmp_path: Path) -> None:
    model = gru["constrained-2-layers"]
    src = model.save(tmp_path / "model")
    out = tmp_path / "onnx"
    meta = export_onnx(src, out)
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "output.safetensors", "step.onnx", "vocab.json"]
    assert json.loads((out / "export.json").read_text()) == json.loads(json.dumps(meta, default=str))
    assert meta["model"] == "gru4rec" and meta["n_items"] == model.n_items_ and meta["source_artifact"] == str(src)
    assert [x["name"] for x in meta["inputs"]] == ["state", "item"] and [x["name"] for x in meta["outputs"]] == ["new_state", "query"]
    for name, want in meta["files"].items():
        data = (out / name).read_bytes()
        assert want == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert (out / "vocab.json").read_text() == (src / "vocab.json").read_text()
    wb = load_file(str(out / "output.safetensors"))
    W, b = model.live().output_layer()
    np.testing.assert_array_equal(wb["W"], W.numpy())
    np.testing.assert_array_equal(wb["b"], b.numpy())
    assert wb["W"].shape == (model.n_items_ + 1, 8) and wb["b"].shape == (model.n_items_ + 1,)
    export_onnx(src, out)  # exporting again replaces the earlier export
    assert sorted(p.name for p in out.iterdir()) == sorted([*meta["files"], "export.json"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary directory left


def test_sasrec_export_writes_zero_bias(sas, ort, tmp_path: Path) -> None:
    model = sas["start-postln"]
    was = model.net_.training
    meta = export_onnx(model, tmp_path / "x")
    assert model.net_.training == was  # the export traces a copy in eval mode, the model is left alone
    wb = load_file(str(tmp_path / "x" / "output.safetensors"))
    np.testing.assert_array_equal(wb["W"], model.live().output_layer()[0].numpy())
    assert not wb["b"].any() and meta["graph"] == "query.onnx" and "zeros" in meta["output_layer"]["bias"]


def test_refusals(chain_data, gru, ort, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pop = create_model("pop").fit(chain_data.train)
    with pytest.raises(NextclickError, match="pop has no neural serving graph; only gru4rec and sasrec"):
        export_onnx(pop, tmp_path / "p")
    assert not (tmp_path / "p").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(NextclickError, match="is a file"):
        export_onnx(gru["onehot"], tmp_path / "file")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(NextclickError, match=r"holds other files \(notes.txt\)"):
        export_onnx(gru["onehot"], tmp_path / "busy")
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the extra were not installed
    with pytest.raises(NextclickError, match=r"pip install 'nextclick\[export\]'"):
        export_onnx(gru["onehot"], tmp_path / "o")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nextclick", *args], capture_output=True, text=True, cwd=REPO_ROOT,
                          env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"})


def test_cli_exports_and_refuses_knn(chain_data, sas, ort, tmp_path: Path) -> None:
    src = sas["end-preln"].save(tmp_path / "sasrec")
    p = _cli("export", str(src), "--out", str(tmp_path / "onnx"), "--format", "onnx")
    assert p.returncode == 0, p.stderr
    assert "exported sasrec as onnx" in p.stdout and (tmp_path / "onnx" / "query.onnx").is_file()
    sess = ort.InferenceSession(str(tmp_path / "onnx" / "query.onnx"))
    x = pad_arrays([np.array([1, 2, 3])], T)[0]
    np.testing.assert_allclose(sess.run(None, {"clicks": x})[0], sas["end-preln"].live().queries(None, [x[0]]).numpy(),
                               atol=ATOL, rtol=0)
    knn = create_model("vsknn").fit(chain_data.train).save(tmp_path / "vsknn")
    p = _cli("export", str(knn), "--out", str(tmp_path / "no"))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip() == "error: export: vsknn has no neural serving graph; only gru4rec and sasrec models can be exported to ONNX"
    p = _cli("export", str(src), "--out", str(tmp_path / "no"), "--format", "tflite")
    assert p.returncode == 2 and "tflite" in p.stderr
