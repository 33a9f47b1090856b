"""GRU4Rec's network: the weights as plain tensors, the one definition of the GRU step
(:func:`gru_cell`) and the inference forward pass (the scores: ``GRU4Rec._scores``).

The GRU step is defined once, in :func:`gru_cell` (torch). Its twins, kept for speed, are tested
equal to it: :meth:`Net.forward_np` (numpy, for the service's small batches) and the compiled
training layer (:func:`nextclick.models.gru4rec.kernels.gru.gru_forward`, with its dropout).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from nextclick.errors import NextclickError
from nextclick.models.gru4rec.config import GRU4RecConfig


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads inside the block (restoring the setting after).
    Inference runs with one: a few small operations per call."""
    old = torch.get_num_threads()
    if n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != old:
            torch.set_num_threads(old)


def gru_cell(gx: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One GRU step from the gates' pre-activations: the new state (k, D).

    ``gx`` (k, 3D) the input's (``W x + b_ih``), ``gh`` (k, 3D) the recurrent ones (``U h +
    b_hh``), gate blocks (reset, update, candidate), ``h`` (k, D) the previous state::

        r, z = sigmoid(gx_r + gh_r), sigmoid(gx_z + gh_z)
        n = tanh(gx_n + r * gh_n)
        h' = (1 - z) h + z n
    """
    D = h.shape[1]
    rz = torch.add(gx[:, : 2 * D], gh[:, : 2 * D]).sigmoid_()  # (k, 2D)
    n = torch.addcmul(gx[:, 2 * D :], rz[:, :D], gh[:, 2 * D :]).tanh_()  # (k, D)
    d = n - h if n.requires_grad else n.sub_(h)  # autograd keeps tanh's output for its backward
    return torch.addcmul(h, rz[:, D:], d)  # h + z (n - h)


def _uniform(rng: np.random.Generator, fan_in: int, fan_out: int, shape: tuple[int, ...]) -> np.ndarray:
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=shape).astype(np.float32)


class Net:
    """The weights as plain tensors, and the inference forward pass.

    * ``out`` (n+1, D+1): output item vectors with their bias in the last column (row 0 unused);
      in constrained mode its first D columns are also the input embedding. ``out_w`` (n+1, D)
      and ``out_b`` (n+1,) are its two parts: views of ``out`` in a net built to train, and in a
      net loaded from an artifact (:meth:`from_arrays`, no ``out``) the loaded arrays themselves;
    * ``emb`` (n+1, E): separate input embedding (``embedding > 0``, not constrained);
    * ``wx`` (n+1, 3 D_0): one-hot mode, the first GRU layer's input weights as item rows;
    * per layer ``w_ih`` (3 D_l, D_in), ``w_hh`` (3 D_l, D_l), ``b_ih``, ``b_hh`` (3 D_l,), gate
      blocks in the order (reset, update, candidate); all views into the flat ``dense`` vector.
    """

    def __init__(self, n_items: int, sizes: tuple[int, ...], mode: str, embedding: int, tables: bool = True) -> None:
        self.n_items, self.sizes, self.mode = n_items, sizes, mode
        D = sizes[-1]
        self.d_in = [D if mode == "constrained" else embedding if mode == "embedding" else 0]
        self.d_in += list(sizes[:-1])
        shapes: list[tuple[str, int, tuple[int, ...]]] = []
        for l, Dl in enumerate(sizes):
            if not (l == 0 and mode == "onehot"):
                shapes.append(("w_ih", l, (3 * Dl, self.d_in[l])))
            shapes += [("w_hh", l, (3 * Dl, Dl)), ("b_ih", l, (3 * Dl,)), ("b_hh", l, (3 * Dl,))]
        self.dense = torch.zeros(sum(math.prod(s) for _, _, s in shapes))
        self.dense_grad = torch.zeros_like(self.dense)
        self.views: dict[str, list[torch.Tensor | None]] = {k: [None] * len(sizes) for k in ("w_ih", "w_hh", "b_ih", "b_hh")}
        self.grads: dict[str, list[torch.Tensor | None]] = {k: [None] * len(sizes) for k in ("w_ih", "w_hh", "b_ih", "b_hh")}
        o = 0
        for name, l, shape in shapes:
            k = math.prod(shape)
            self.views[name][l] = self.dense[o : o + k].view(shape)
            self.grads[name][l] = self.dense_grad[o : o + k].view(shape)
            o += k
        self.out: torch.Tensor | None = None
        self.emb: torch.Tensor | None = None
        self.wx: torch.Tensor | None = None
        if tables:  # the item tables, allocated to train (a loaded net takes the loaded arrays)
            self.out = torch.zeros(n_items + 1, D + 1)
            self.emb = torch.zeros(n_items + 1, embedding) if mode == "embedding" else None
            self.wx = torch.zeros(n_items + 1, 3 * sizes[0]) if mode == "onehot" else None
            self.out_w, self.out_b = self.out[:, :D], self.out[:, D]

    # -------------------------------------------------------------- construction / state
    @classmethod
    def create(cls, cfg: GRU4RecConfig, n_items: int, rng: np.random.Generator) -> Net:
        net = cls(n_items, cfg.layers, mode(cfg), cfg.embedding)
        n, D = n_items, cfg.layers[-1]
        if net.emb is not None:
            net.emb[1:] = torch.from_numpy(_uniform(rng, n, cfg.embedding, (n, cfg.embedding)))
        if net.wx is not None:
            D0 = cfg.layers[0]
            net.wx[1:] = torch.from_numpy(np.hstack([_uniform(rng, n, D0, (n, D0)) for _ in range(3)]))
        for l, Dl in enumerate(cfg.layers):
            w_ih = net.views["w_ih"][l]
            if w_ih is not None:
                w_ih.copy_(torch.from_numpy(np.vstack([_uniform(rng, net.d_in[l], Dl, (Dl, net.d_in[l])) for _ in range(3)])))
            net.views["w_hh"][l].copy_(torch.from_numpy(np.vstack([_uniform(rng, Dl, Dl, (Dl, Dl)) for _ in range(3)])))
        net.out[1:, :D] = torch.from_numpy(_uniform(rng, n, D, (n, D)))
        return net

    def arrays(self) -> dict[str, np.ndarray]:
        a = {"item_out": self.out_w.numpy().copy(), "item_bias": self.out_b.numpy().copy()}
        if self.emb is not None:
            a["item_in"] = self.emb.numpy().copy()
        if self.wx is not None:
            a["gru0.w_item"] = self.wx.numpy().copy()
        for name, vs in self.views.items():
            for l, v in enumerate(vs):
                if v is not None:
                    a[f"gru{l}.{name}"] = v.numpy().copy()
        return a

    @classmethod
    def from_arrays(cls, cfg: GRU4RecConfig, n_items: int, a: dict[str, np.ndarray]) -> Net:
        """A net to score with, from an artifact's arrays: the item tables (``out_w``, ``out_b``,
        ``emb``, ``wx``) are the given float32 arrays themselves, not copies (memory maps of the
        weights file stay shared between processes); the small GRU weights are copied."""
        net = cls(n_items, cfg.layers, mode(cfg), cfg.embedding, tables=False)
        D, D0 = cfg.layers[-1], cfg.layers[0]

        def table(key: str, shape: tuple[int, ...]) -> torch.Tensor:
            if key not in a:
                raise NextclickError(f"gru4rec weights: missing array {key!r}")
            arr = np.asarray(a[key], dtype=np.float32)
            if arr.shape != shape:
                raise NextclickError(f"gru4rec weights: {key!r} has shape {arr.shape}, expected {shape}")
            return torch.from_numpy(np.ascontiguousarray(arr))

        net.out_w = table("item_out", (n_items + 1, D))
        net.out_b = table("item_bias", (n_items + 1,))
        if net.mode == "embedding":
            net.emb = table("item_in", (n_items + 1, cfg.embedding))
        if net.mode == "onehot":
            net.wx = table("gru0.w_item", (n_items + 1, 3 * D0))
        for name, vs in net.views.items():
            for l, v in enumerate(vs):
                if v is not None:
                    v.copy_(table(f"gru{l}.{name}", tuple(v.shape)))
        return net

    # -------------------------------------------------------------- inference
    def embed(self, x: torch.Tensor) -> torch.Tensor | None:
        """(k,) item indices -> (k, D_in) input vectors (None in one-hot mode)."""
        if self.mode == "constrained":
            return self.out_w.index_select(0, x)
        if self.mode == "embedding":
            return self.emb.index_select(0, x)  # type: ignore[union-attr]
        return None

    def input_gates(self, l: int, x: torch.Tensor, inp: torch.Tensor | None) -> torch.Tensor:
        """(k, 3 D_l) input contribution to the gates of layer ``l`` (bias included)."""
        if inp is None:  # one-hot layer: a row lookup
            return self.wx.index_select(0, x).add_(self.views["b_ih"][0])  # type: ignore[union-attr]
        return torch.addmm(self.views["b_ih"][l], inp, self.views["w_ih"][l].t())

    @torch.no_grad()
    def forward(self, x: torch.Tensor, H: list[torch.Tensor]) -> list[torch.Tensor]:
        """One click per row: (k,) items and per-layer states (k, D_l) -> new states (no dropout)."""
        inp = self.embed(x)
        out = []
        for l in range(len(self.sizes)):
            Hp = H[l]
            gx = self.input_gates(l, x, inp)  # (k, 3 D_l)
            gh = torch.addmm(self.views["b_hh"][l], Hp, self.views["w_hh"][l].t())  # (k, 3 D_l)
            h = gru_cell(gx, gh, Hp)  # (k, D_l)
            out.append(h)
            inp = h
        return out

    def forward_np(self, x: np.ndarray, H: np.ndarray) -> np.ndarray:
        """:meth:`forward` in numpy on the concatenated state (k, sum D_l) -> new state: a twin of
        :func:`gru_cell` (tested equal to it), the same float32 arithmetic on zero-copy views of the weights, for the service's small batches
        (numpy's per-operation cost on vectors of ~100 values is a fraction of torch's)."""
        out = np.empty_like(H)
        lo = 0
        inp = None
        if self.mode == "constrained":
            inp = self.out_w.numpy()[x]
        elif self.mode == "embedding":
            inp = self.emb.numpy()[x]  # type: ignore[union-attr]
        for l, Dl in enumerate(self.sizes):
            Hp = H[:, lo : lo + Dl]
            b_ih = self.views["b_ih"][l].numpy()  # type: ignore[union-attr]
            if inp is None:
                gx = self.wx.numpy()[x] + b_ih  # type: ignore[union-attr]
            else:
                gx = inp @ self.views["w_ih"][l].numpy().T + b_ih  # type: ignore[union-attr]
            gh = Hp @ self.views["w_hh"][l].numpy().T + self.views["b_hh"][l].numpy()  # type: ignore[union-attr]
            rz = gx[:, : 2 * Dl] + gh[:, : 2 * Dl]
            np.negative(rz, out=rz)
            with np.errstate(over="ignore"):  # exp overflow: sigmoid 0, as torch's
                np.exp(rz, out=rz)
            rz += 1.0
            np.reciprocal(rz, out=rz)  # sigmoid
            n = np.tanh(gx[:, 2 * Dl :] + rz[:, :Dl] * gh[:, 2 * Dl :])
            h = out[:, lo : lo + Dl]
            np.subtract(n, Hp, out=h)
            h *= rz[:, Dl:]
            h += Hp  # (1 - z) H + z n
            inp = h
            lo += Dl
        return out


def mode(cfg: GRU4RecConfig) -> str:
    """How items enter the first layer: ``constrained`` (rows of the output matrix),
    ``embedding`` (a separate matrix) or ``onehot`` (the first layer's input weights)."""
    if cfg.constrained_embedding:
        return "constrained"
    return "embedding" if cfg.embedding > 0 else "onehot"

