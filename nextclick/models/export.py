"""Portable export: a fitted neural model's serving graph as ONNX, its item matrix beside it.

:func:`export_onnx` writes a directory that any ONNX runtime can serve without nextclick or
torch::

    step.onnx            GRU4Rec: one click of a batch of live sessions,
                         (state (B, S) float32, item (B,) int64) -> (new_state (B, S), query (B, d))
    query.onnx           SASRec: the query of a batch of sessions from their last T clicks,
                         clicks (B, T) int64, left-padded with 0 -> query (B, d)
    output.safetensors   W (n_items + 1, d) and b (n_items + 1,), float32: scores = query @ W.T + b
    vocab.json           the shop's item ids: internal index i + 1 is ids[i]; 0 is padding / unknown
    export.json          what is where: model, shapes, input and output names, opset, the files'
                         SHA-256, and how to score

The graphs are the model's own torch code traced once (TorchScript-based ``torch.onnx.export``):
GRU4Rec's :meth:`Net.forward <nextclick.models.gru4rec.net.Net.forward>` (every layer, every
embedding mode) with the live-session rule that item 0 (unknown) leaves the state unchanged, and
SASRec's blocks in their dense inference form (:meth:`Block.forward_dense
<nextclick.models.sasrec.net.Block.forward_dense>`) on a full T-wide window, with the position
indices and the causal-and-padding mask of :meth:`SASRecNet.forward_last
<nextclick.models.sasrec.net.SASRecNet.forward_last>` built inside the graph. The weights are
constants of the graph; nothing is computed twice in another form.

The directory is built under a temporary name beside the target and renamed into place, as model
artifacts are (:mod:`nextclick.models.artifact`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nextclick.errors import NextclickError
from nextclick.models.artifact import digest, write_dir_atomically

if TYPE_CHECKING:
    import torch

    from nextclick.models.base import Recommender

log = logging.getLogger(__name__)

EXPORT_FORMAT = "nextclick-onnx-export"
OPSET = 17
META_FILE = "export.json"
OUTPUT_FILE = "output.safetensors"
VOCAB_FILE = "vocab.json"
GRAPH_FILES = {"gru4rec": "step.onnx", "sasrec": "query.onnx"}
EXPORTABLE = tuple(GRAPH_FILES)
INSTALL_HINT = "pip install 'nextclick[export]'"


def require_onnx() -> Any:
    """The ``onnx`` module, or a one-line error saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise NextclickError(f"export: the onnx package is not installed; install it with {INSTALL_HINT}") from None
    return onnx


def _load(model: Recommender | str | Path) -> tuple[Recommender, str | None]:
    from nextclick.models.base import Recommender

    if isinstance(model, Recommender):
        model._check_fitted()
        return model, None
    return Recommender.load(model), str(model)


def _target(out: Path) -> None:
    """Refuse an ``out`` that is a file, or a directory holding anything but an export's files."""
    if out.exists() and not out.is_dir():
        raise NextclickError(f"--out {out}: is a file; give a directory for the export")
    if out.is_dir():
        mine = {META_FILE, OUTPUT_FILE, VOCAB_FILE, *GRAPH_FILES.values()}
        other = sorted(p.name for p in out.iterdir() if p.name not in mine)
        if other:
            raise NextclickError(f"--out {out}: holds other files ({', '.join(other[:3])}); choose a new or empty directory")


# ---------------------------------------------------------------------- the graphs
def _gru4rec_module(model: Any) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], dict[str, Any]]:
    """GRU4Rec's step as a module to trace, example inputs, and the graph's description."""
    import torch

    net = model.net_
    sizes = [int(s) for s in net.sizes]
    S, D = sum(sizes), sizes[-1]

    class Step(torch.nn.Module):
        """One click per row, :meth:`GRU4RecLive.advance`'s semantics: :meth:`Net.forward` on the
        per-layer slices of the state; a row whose item is 0 keeps its state."""

        def forward(self, state: torch.Tensor, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            H = list(torch.split(state, sizes, dim=1))
            new = torch.cat(net.forward(item, H), dim=1)
            new = torch.where((item > 0).unsqueeze(1), new, state)
            return new, new[:, S - D :]

    example = (torch.zeros(2, S), torch.tensor([1, 0], dtype=torch.int64))
    io = {
        "inputs": [
            {"name": "state", "dtype": "float32", "shape": ["batch", S],
             "note": "the concatenated hidden states of every layer; zeros for a new session"},
            {"name": "item", "dtype": "int64", "shape": ["batch"],
             "note": f"the click's internal index 1..{model.n_items_} (see vocab.json); 0 = unknown item, state unchanged"},
        ],
        "outputs": [
            {"name": "new_state", "dtype": "float32", "shape": ["batch", S], "note": "keep it for the session's next click"},
            {"name": "query", "dtype": "float32", "shape": ["batch", D], "note": "the top layer's state"},
        ],
        "layers": sizes,
        "state_size": S,
        "embedding_mode": net.mode,
    }
    return Step(), example, io


def _sasrec_module(model: Any) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], dict[str, Any]]:
    """SASRec's query from a full T-wide window as a module to trace, example inputs, and the
    graph's description."""
    import torch

    net = model.net_
    if net.training or next(net.parameters()).device.type != "cpu":  # a copy: the model itself is left as it is
        net = copy.deepcopy(net).cpu().eval()
    T = int(net.T)
    positions = torch.arange(1, T + 1, dtype=torch.int64)[None, :]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    eye = torch.eye(T, dtype=torch.bool)

    class Query(torch.nn.Module):
        """:meth:`SASRecNet.forward_last` on a (B, T) left-padded window: the positions of
        :meth:`SASRecNet._positions` and the mask of :func:`causal_mask`, then the blocks."""

        def __init__(self) -> None:
            super().__init__()
            self.net = net  # registered: its parameters become the graph's initialisers

        def forward(self, clicks: torch.Tensor) -> torch.Tensor:
            net = self.net
            real = clicks > 0
            pos = torch.cumsum(real.to(torch.int64), dim=1) if net.start_positions else positions.expand(clicks.shape[0], T)
            h = net.item_emb(clicks) * net.scale + net.pos_emb(pos)
            mask = (causal & (real.unsqueeze(1) | eye)).unsqueeze(1)  # (B, 1, T, T)
            for blk in net.blocks:
                h = blk.forward_dense(h, mask)
            return net.ln_out(h[:, -1])

    example = torch.zeros(2, T, dtype=torch.int64)
    example[0, -1] = 1
    example[1, :] = 1
    d = int(net.item_emb.weight.shape[1])
    io = {
        "inputs": [
            {"name": "clicks", "dtype": "int64", "shape": ["batch", T],
             "note": f"the session's last {T} known clicks as internal indices 1..{model.n_items_} (see vocab.json), "
                     "oldest first, left-padded with 0; drop unknown items (0) before padding; at least one click"},
        ],
        "outputs": [{"name": "query", "dtype": "float32", "shape": ["batch", d], "note": "the hidden state at the last slot"}],
        "max_len": T,
        "positions": "start" if net.start_positions else "end",
    }
    return Query(), (example,), io


def _output_layer(model: Any) -> tuple[np.ndarray, np.ndarray]:
    """(W (V, d), b (V,)) float32 of ``scores = q @ W.T + b`` (zeros when the model has no bias)."""
    W, b = model.live().output_layer()
    W = W.detach().float().cpu().numpy()
    b = np.zeros(W.shape[0], np.float32) if b is None else b.detach().float().cpu().numpy()
    return np.ascontiguousarray(W), np.ascontiguousarray(b)


def _trace(module: torch.nn.Module, example: tuple[torch.Tensor, ...], io: dict[str, Any], path: Path) -> None:
    """Trace ``module`` and write it as ONNX with the names and the dynamic batch of ``io``."""
    import torch

    from nextclick.models.gru4rec.net import torch_threads

    names_in = [x["name"] for x in io["inputs"]]
    names_out = [x["name"] for x in io["outputs"]]
    dynamic = {n: {0: "batch"} for n in names_in + names_out}
    with warnings.catch_warnings(), torch.no_grad(), torch_threads(1):
        # the TorchScript exporter works offline with no package beyond onnx; torch marks it deprecated
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        # unpacking a fixed-size dimension (SASRec's K/V halves): the same for every input
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, message="Iterating over a tensor")
        torch.onnx.export(module, example, str(path), dynamo=False, input_names=names_in, output_names=names_out,
                          dynamic_axes=dynamic, opset_version=OPSET)


# ---------------------------------------------------------------------- the directory
def _how_to(name: str, graph: str) -> str:
    if name == "gru4rec":
        run = (f"A new session starts from state = zeros(1, state_size). On each click run {graph} with the session's "
               "state and the clicked item's index (0 if the id is not in vocab.json); keep new_state for the next click.")
    else:
        run = (f"Run {graph} on the session's last max_len known clicks (indices from vocab.json, unknown ids dropped), "
               "left-padded with 0.")
    return (f"{run} Scores over the catalogue: query @ W.T + b with W, b from {OUTPUT_FILE}; column j is item vocab ids[j - 1]; "
            "column 0 is padding: set it to -inf before taking the top k.")


def _write(tmp: Path, model: Any, module: Any, example: Any, io: dict[str, Any], source: str | None) -> dict[str, Any]:
    """Every file of the export into ``tmp``; returns the content of export.json."""
    import torch
    from safetensors.numpy import save_file

    onnx = require_onnx()
    graph = GRAPH_FILES[model.name]
    _trace(module, example, io, tmp / graph)
    onnx.checker.check_model(str(tmp / graph))
    W, b = _output_layer(model)
    save_file({"W": W, "b": b}, str(tmp / OUTPUT_FILE))
    model.vocab_.save(tmp / VOCAB_FILE)
    meta: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "model": model.name,
        "n_items": int(model.n_items_),
        "graph": graph,
        **io,
        "opset": OPSET,
        "exporter": f"torch {torch.__version__} torch.onnx.export (TorchScript tracer)",
        "output_layer": {"file": OUTPUT_FILE, "W": list(W.shape), "b": list(b.shape), "dtype": "float32",
                         "bias": "learned" if model.name == "gru4rec" else "zeros (the model has no output bias)"},
        "vocab": VOCAB_FILE,
        "padding_index": 0,
        "how_to_score": _how_to(model.name, graph),
        "model_config": dataclasses.asdict(model.config),
        "source_artifact": source,
    }
    meta["files"] = {n: digest(tmp / n) for n in (graph, OUTPUT_FILE, VOCAB_FILE)}
    (tmp / META_FILE).write_text(json.dumps(meta, indent=1, default=str))
    return meta


def export_onnx(model: Recommender | str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write the ONNX export of a fitted GRU4Rec or SASRec (``model``, or the path of its artifact
    directory) to ``out_dir`` atomically (see the module docstring); returns export.json's content.
    Other models have no neural serving graph: a one-line :class:`NextclickError`."""
    out = Path(out_dir)
    _target(out)
    require_onnx()
    rec, source = _load(model)
    if rec.name not in EXPORTABLE:
        raise NextclickError(f"export: {rec.name} has no neural serving graph; only {' and '.join(EXPORTABLE)} "
                             "models can be exported to ONNX")
    module, example, io = (_gru4rec_module if rec.name == "gru4rec" else _sasrec_module)(rec)
    meta = write_dir_atomically(out, lambda tmp: _write(tmp, rec, module, example, io, source))
    log.info("exported %s (%s, opset %d) to %s", rec.name, meta["graph"], OPSET, out)
    return meta
