"""GRU4Rec: session-based recommendations with recurrent neural networks.

Papers:

* B. Hidasi, A. Karatzoglou, L. Baltrunas, D. Tikk. *Session-based Recommendations with Recurrent
  Neural Networks.* ICLR 2016 (arXiv:1511.06939) -- the GRU over the clicks of a session,
  session-parallel mini-batches, mini-batch negatives.
* B. Hidasi, A. Karatzoglou. *Recurrent Neural Networks with Top-k Gains for Session-based
  Recommendations.* CIKM 2018 (arXiv:1706.03847) -- extra negatives shared by the mini-batch and
  sampled from popularity^alpha, the BPR-max loss with score regularisation, cross-entropy,
  constrained (shared) item embeddings.
* B. Hidasi, A. Czapp. *The Effect of Third Party Implementations on Reproducibility.* RecSys 2023
  -- the list of features a faithful implementation needs (all of them are here).

What one training step does (``B`` slots of the session-parallel batch, ``S = n_sample``)::

    x (B,) current clicks, y (B,) next clicks, s (S,) shared negatives (from the sample store)
    e = embed(x)                    # (B, D_in) constrained: rows of the output matrix; separate:
                                    # its own matrix; one-hot: the first GRU layer's input weights
    h_l = GRU_l(h_{l-1}, H_l)       # (B, D_l) one step; dropout on the output, which is also the
                                    # new hidden state; no back-propagation through time
    R = h_L @ [W_y; b_y][y ++ s].T  # (B, B + S) scores; column j < B is slot j's target
    loss = cross-entropy(softmax(R - logq * log q))  or  BPR-max(elu(R)) + bpreg * regulariser

The forward and backward passes are written out by hand (one GRU step has a short closed-form
gradient, checked against autograd in the tests), so a step is a fixed, short list of fused
operations with no autograd graph: five compiled phases (:mod:`nextclick.models.gru4rec.kernels`, numba) --
the gather of the step's item rows (with the embedding dropout), each GRU layer, the scores with
the loss, the output rows' gradient and the top layer's gates backward, the other weight-gradient
products, the optimiser -- each split over ``n_threads`` threads of numba's pool (row blocks of
the batch, column blocks of the output rows and of the gates so that no two threads pack the
same large operand, or whole products as separate tasks), with the products inside calling BLAS
single-threaded on blocks of the arrays, so one thread pool serves the whole step. Dropout masks
are drawn inside the loops, counter-based. The element-wise loops are written so that the
compiler vectorises them, exponentials included. The item matrices get row-sparse gradients,
and Adagrad with momentum reads and writes only the rows a step touched (repeated rows summed
first). An epoch's session-parallel steps are laid out as flat arrays before the epoch starts,
and negatives come from a pre-drawn sample store, so the Python work per step is a few slices.
Inference runs torch single-threaded.

Inference: :meth:`GRU4Rec.step` advances a live session by one click in O(1) (a hidden state
vector per session); evaluation (:meth:`GRU4Rec.iter_scores`) runs every test session once from
a zero state, all sessions at once, sorted by length so step ``t`` updates the sessions that
are still running (packed sequences), and scores every position.

Deliberate deviations (from the papers; most follow the official PyTorch implementation):

* GRU cell: the reset gate multiplies the recurrent product, ``n = tanh(W_n x + r * (U_n h + b))``
  (cuDNN / ``torch.nn.GRUCell`` form, also the official PyTorch code), not ``U_n (r * h)`` as in
  Cho et al.; the update gate interpolates as in the ICLR paper, ``h' = (1 - z) h + z n``. Every
  layer has an input bias and a recurrent bias (zero at start), including the one-hot layer.
* Weight initialisation as the official implementation's compatibility mode: every gate block and
  every item matrix ~ U(-a, a) with ``a = sqrt(6 / (fan_in + fan_out))``; biases zero.
* Adagrad with momentum as in the official code: ``acc += g^2; v = momentum * v -
  lr * g / sqrt(acc + eps); w += v`` (heavy ball on the Adagrad-scaled step; the official README
  calls it Nesterov momentum). ``nesterov=True`` uses the look-ahead form ``w += momentum * v -
  lr * g / sqrt(acc + eps)`` instead. Item matrices update only the rows a step touched.
* The output bias is stored as an extra column of the output item matrix. With the constrained
  embedding and momentum > 0 this means an input row whose bias got no gradient still gets its
  bias momentum applied in that step (the official code keeps the bias in a separate table); no
  other effect.
* Sessions are ordered by the time of their first click, as the official code does
  (``session_order="random"`` reshuffles every epoch instead). When no session is left to refill
  a slot, the batch shrinks so every click is trained on once per epoch (the official code does
  the same); with ``n_sample=0`` and BPR-max a step of one slot has no negative and is skipped.
* The loss is summed over the slots and divided by ``batch_size`` (official), so the learning
  rate does not depend on how many slots are still alive at the end of an epoch.
* logQ correction (cross-entropy only): in-batch targets are corrected by ``log(count)``, the
  shared samples by ``sample_alpha * log(count)`` (their sampling distribution), as officially.
* Each step scores and updates each DISTINCT sampled negative once, its draw count folded into
  the softmax (``+ log(count)`` on the cross-entropy logits, a weight on BPR-max's softmax over
  negatives): the same loss and gradients as scoring every drawn column (a repeated column's
  terms are identical; checked against autograd over the repeated columns in the tests), with
  far fewer columns when the catalogue is small (2048 draws hold ~1,150 distinct rsc15 items).
* Negatives are drawn with Walker's alias method (exact, O(1) per draw) instead of a binary
  search over the cumulative distribution; the result has the same distribution.
* CPU only (the official code targets a GPU); no L2 regularisation, gradient clipping or other
  optimisers (removed in the official PyTorch version too).

Presets: ``rsc15`` holds the values issue 3 lists; ``rsc15_official`` the official repository's
``paramfiles/rsc15_xe_shared_100_best.py`` (no embedding dropout, hidden dropout 0.4, learning
rate 0.2, momentum 0.2, sample_alpha 0.5), which is the one that reproduces the official
implementation's figures on rsc15-100k; ``retailrocket`` the official BPR-max paramfile;
``rsc15_tuned`` (cross-entropy, n_sample 512) and ``rsc15_bprmax_tuned`` (the BPR-max network)
were chosen with ``nextclick tune`` on rsc15-100k train_tr -> train_valid only.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from nextclick.data.batching import SessionParallelBatches
from nextclick.data.sessions import Sessions
from nextclick.errors import NextclickError
from nextclick.models.base import Recommender

log = logging.getLogger(__name__)

_EPS_LOG = 1e-24  # inside the logarithms of both losses, as in the official code
_NONE = np.zeros((0, 0), np.float32)  # the compiled gate loops' "no dropout"
_NO_ROWS = np.zeros(0, np.int64)


@contextmanager
def _threads(n: int) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads inside the block (restoring the setting after)."""
    old = torch.get_num_threads()
    if n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != old:
            torch.set_num_threads(old)


@contextmanager
def _numba_threads(n: int) -> Iterator[int]:
    """Run numba's parallel loops with ``n`` threads (at most its pool's size) inside the block;
    yields the number used. For one thread numba's thread pool is left alone (not started)."""
    if n <= 1:
        yield 1
        return
    import numba

    old = numba.get_num_threads()
    use = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(use)
    try:
        yield use
    finally:
        numba.set_num_threads(old)


def _one_thread():  # inference: a few small operations per call
    return _threads(1)


# ---------------------------------------------------------------------------------- config
@dataclass
class GRU4RecConfig:
    """Hyper-parameters, named and defaulted as in the official implementation."""

    layers: tuple[int, ...] = (100,)  # GRU layer sizes
    loss: Literal["cross-entropy", "bpr-max"] = "cross-entropy"
    batch_size: int = 64  # slots of the session-parallel mini-batch
    dropout_p_embed: float = 0.0  # on the input embedding (one-hot mode: on the first layer)
    dropout_p_hidden: float = 0.0  # on the output of every (other) GRU layer
    learning_rate: float = 0.05
    momentum: float = 0.0
    nesterov: bool = False  # False: the official update (see module docstring)
    n_sample: int = 2048  # extra negatives shared by the mini-batch
    sample_alpha: float = 0.5  # negatives ~ popularity ** sample_alpha
    sample_cache_max_size: int = 10_000_000  # negatives drawn in advance (the sample store)
    embedding: int = 0  # > 0: separate input item embedding of this size
    constrained_embedding: bool = True  # input embedding = output item matrix (overrides embedding)
    bpreg: float = 1.0  # BPR-max score regularisation
    elu_param: float = 0.5  # BPR-max final activation ELU(alpha); 0 = linear
    logq: float = 0.0  # cross-entropy logQ correction strength (0 = off)
    n_epochs: int = 10
    session_order: Literal["time", "random"] = "time"
    adagrad_eps: float = 1e-6
    seed: int = 42
    # threads of a training step's compiled phases (numba's pool; BLAS runs single-threaded inside
    # them). Two pay off for large layers or many negatives (the retailrocket and n_sample 2048
    # presets); for small products the hand-over costs about what the second thread saves. One
    # thread never starts numba's pool. More do, with numba's limits: with its OpenMP layer, a
    # process forked after such a fit must not train again (GNU OpenMP aborts the child); with its
    # workqueue layer (no OpenMP or TBB), two such fits must not run at once in one process.
    n_threads: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.layers, int):
            self.layers = (self.layers,)
        self.layers = tuple(int(x) for x in self.layers)  # JSON round trips give lists


def _check_config(c: GRU4RecConfig) -> None:
    def bad(name: str, want: str) -> NextclickError:
        return NextclickError(f"gru4rec: {name}={getattr(c, name)!r}; expected {want}")

    if not c.layers or min(c.layers) < 1:
        raise bad("layers", "one or more positive layer sizes, e.g. (100,)")
    if c.loss not in ("cross-entropy", "bpr-max"):
        raise bad("loss", "'cross-entropy' or 'bpr-max'")
    for name, lo, hi in (("dropout_p_embed", 0.0, 1.0), ("dropout_p_hidden", 0.0, 1.0), ("momentum", 0.0, 1.0)):
        if not lo <= getattr(c, name) < hi:
            raise bad(name, f"a number in [{lo}, {hi})")
    for name in ("batch_size", "n_epochs"):
        if getattr(c, name) < 1:
            raise bad(name, "an integer >= 1")
    for name in ("n_sample", "embedding"):
        if getattr(c, name) < 0:
            raise bad(name, "an integer >= 0")
    if c.n_threads < 1:
        raise bad("n_threads", "an integer >= 1")
    for name in ("learning_rate", "adagrad_eps"):
        if not getattr(c, name) > 0:
            raise bad(name, "a positive number")
    for name in ("sample_alpha", "bpreg", "elu_param", "logq"):
        if getattr(c, name) < 0:
            raise bad(name, "a number >= 0")
    if c.n_sample and c.sample_cache_max_size < c.n_sample:
        raise bad("sample_cache_max_size", f"at least n_sample={c.n_sample}")
    if c.session_order not in ("time", "random"):
        raise bad("session_order", "'time' or 'random'")


# ---------------------------------------------------------------------------------- losses
def xe_loss_grad(
    R: torch.Tensor, logq_offset: torch.Tensor | None, scale: float, out: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over a softmax of each row; row ``i``'s target is column ``i``.

    ``R`` (B, M) scores (not modified); ``logq_offset`` (M,) is subtracted from every row first
    (logQ correction) when given. Returns ``(loss, dL/dR)`` with ``loss = -scale * sum_i
    log(softmax(R)_ii + 1e-24)``; the gradient is written to ``out`` when given.
    """
    from nextclick.models.gru4rec import kernels  # numba: imported (and its loops loaded) only when training

    if out is None:
        out = torch.empty_like(R)
    Rn = R.numpy()
    lq = logq_offset.numpy().astype(Rn.dtype, copy=False) if logq_offset is not None else np.zeros(0, Rn.dtype)
    loss = kernels.xe_rows(Rn, lq, scale, _EPS_LOG, Rn.dtype == np.float32, out.numpy(), 0)
    return torch.tensor(loss, dtype=R.dtype), out


def bpr_max_loss_grad(
    R: torch.Tensor, bpreg: float, elu_param: float, scale: float, out: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BPR-max with score regularisation over ELU scores; row ``i``'s target is column ``i``.

    With ``o = elu(R)`` (identity when ``elu_param`` is 0), ``s`` the softmax of row ``i`` over
    its negatives (every column but the target) and ``t`` the target's score, the loss is
    ``scale * sum_i [-log(sum_j s_j sigmoid(t - o_j) + 1e-24) + bpreg * sum_j s_j o_j^2]``.
    Returns ``(loss, dL/dR)`` (written to ``out`` when given). ``R`` may be overwritten.
    ``weights`` (M,): column ``j`` stands for ``weights[j]`` identical negatives (its softmax weight
    is multiplied by it), which equals repeating the column that many times.
    """
    from nextclick.models.gru4rec import kernels  # numba: imported (and its loops loaded) only when training

    Rn = R.numpy()
    k = kernels.constants(Rn.dtype, float(elu_param), bpreg, scale)
    if out is None:
        out = torch.empty_like(R)
    w = weights.numpy().astype(Rn.dtype, copy=False) if weights is not None else np.zeros(0, Rn.dtype)
    loss = kernels.bpr_max_rows(Rn, w, k, _EPS_LOG, Rn.dtype == np.float32, out.numpy(), 0)
    return torch.tensor(loss, dtype=R.dtype), out


# ---------------------------------------------------------------------------------- negatives
def alias_table(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table for sampling index ``i`` with probability ``weights[i] / sum``.

    Returns ``(prob, alias)``: draw ``i`` uniformly, keep it with probability ``prob[i]``, else
    take ``alias[i]``. O(n) construction.
    """
    w = np.asarray(weights, dtype=np.float64)
    n = w.size
    if n == 0 or not (w.sum() > 0) or (w < 0).any():
        raise ValueError("alias_table needs non-negative weights with a positive sum")
    q = w * (n / w.sum())
    prob = np.ones(n, dtype=np.float64)
    alias = np.arange(n, dtype=np.int64)
    small = np.flatnonzero(q < 1.0)
    small = small[np.argsort(-q[small], kind="stable")].tolist()  # pop() takes the lightest first
    large = np.flatnonzero(q >= 1.0).tolist()
    ql = q.tolist()
    while small and large:
        s, g = small.pop(), large[-1]
        prob[s], alias[s] = ql[s], g
        ql[g] -= 1.0 - ql[s]
        if ql[g] < 1.0:
            small.append(large.pop())
    # leftovers (rounding error only; never a zero weight, those go first) keep prob 1
    return prob, alias


class SampleStore:
    """Negatives drawn in advance from ``weights`` (popularity ** alpha), handed out a row at a time.

    ``size // n_sample`` rows of ``n_sample`` item indices are drawn at once; when they are used
    up the store is refilled. ``next()`` returns a (n_sample,) int32 tensor.
    """

    def __init__(self, weights: np.ndarray, n_sample: int, size: int, rng: np.random.Generator) -> None:
        self.n_sample = int(n_sample)
        self.rows = max(1, int(size) // max(self.n_sample, 1))
        prob, alias = alias_table(weights)
        self.prob, self.alias = prob.astype(np.float32), alias.astype(np.int32)  # half the bytes per draw
        self.rng = rng
        self.refills = 0
        self._ptr = self.rows
        self._buf: torch.Tensor | None = None

    def draw(self, n: int) -> np.ndarray:
        """``n`` item indices (int32), drawn in chunks of 2**20 so that the temporaries stay small
        (a 10M-draw store otherwise touches ~0.4 GB of fresh memory, ~1 s of page faults)."""
        out = np.empty(n, np.int32)
        chunk = 1 << 20
        for lo in range(0, n, chunk):
            m = min(chunk, n - lo)
            i = self.rng.integers(0, self.prob.size, m, dtype=np.int32)
            u = self.rng.random(m, dtype=np.float32)
            np.copyto(out[lo : lo + m], np.where(u < self.prob[i], i, self.alias[i]))
        return out

    def next(self) -> torch.Tensor:
        if self._ptr >= self.rows:
            self._buf = torch.from_numpy(self.draw(self.rows * self.n_sample).reshape(self.rows, self.n_sample))
            self._ptr = 0
            self.refills += 1
        row = self._buf[self._ptr]  # type: ignore[index]
        self._ptr += 1
        return row


# ---------------------------------------------------------------------------------- network
def _uniform(rng: np.random.Generator, fan_in: int, fan_out: int, shape: tuple[int, ...]) -> np.ndarray:
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=shape).astype(np.float32)


class _Net:
    """The weights as plain tensors, and the inference forward pass.

    * ``out`` (n+1, D+1): output item vectors with their bias in the last column (row 0 unused);
      in constrained mode its first D columns are also the input embedding;
    * ``emb`` (n+1, E): separate input embedding (``embedding > 0``, not constrained);
    * ``wx`` (n+1, 3 D_0): one-hot mode, the first GRU layer's input weights as item rows;
    * per layer ``w_ih`` (3 D_l, D_in), ``w_hh`` (3 D_l, D_l), ``b_ih``, ``b_hh`` (3 D_l,), gate
      blocks in the order (reset, update, candidate); all views into the flat ``dense`` vector.
    """

    def __init__(self, n_items: int, sizes: tuple[int, ...], mode: str, embedding: int) -> None:
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
        self.out = torch.zeros(n_items + 1, D + 1)
        self.emb = torch.zeros(n_items + 1, embedding) if mode == "embedding" else None
        self.wx = torch.zeros(n_items + 1, 3 * sizes[0]) if mode == "onehot" else None

    # -------------------------------------------------------------- construction / state
    @classmethod
    def create(cls, cfg: GRU4RecConfig, n_items: int, rng: np.random.Generator) -> _Net:
        net = cls(n_items, cfg.layers, _mode(cfg), cfg.embedding)
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
        D = self.sizes[-1]
        a = {"item_out": self.out[:, :D].numpy().copy(), "item_bias": self.out[:, D].numpy().copy()}
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
    def from_arrays(cls, cfg: GRU4RecConfig, n_items: int, a: dict[str, np.ndarray]) -> _Net:
        net = cls(n_items, cfg.layers, _mode(cfg), cfg.embedding)

        def put(dst: torch.Tensor, key: str) -> None:
            if key not in a:
                raise NextclickError(f"gru4rec weights: missing array {key!r}")
            src = torch.from_numpy(np.asarray(a[key], dtype=np.float32))
            if tuple(src.shape) != tuple(dst.shape):
                raise NextclickError(f"gru4rec weights: {key!r} has shape {tuple(src.shape)}, expected {tuple(dst.shape)}")
            dst.copy_(src)

        D = cfg.layers[-1]
        put(net.out[:, :D], "item_out")
        put(net.out[:, D], "item_bias")
        if net.emb is not None:
            put(net.emb, "item_in")
        if net.wx is not None:
            put(net.wx, "gru0.w_item")
        for name, vs in net.views.items():
            for l, v in enumerate(vs):
                if v is not None:
                    put(v, f"gru{l}.{name}")
        return net

    # -------------------------------------------------------------- inference
    def embed(self, x: torch.Tensor) -> torch.Tensor | None:
        """(k,) item indices -> (k, D_in) input vectors (None in one-hot mode)."""
        if self.mode == "constrained":
            return self.out.index_select(0, x)[:, : self.sizes[-1]]
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
        for l, Dl in enumerate(self.sizes):
            Hp = H[l]
            gx = self.input_gates(l, x, inp)  # (k, 3 D_l)
            gh = torch.addmm(self.views["b_hh"][l], Hp, self.views["w_hh"][l].t())  # (k, 3 D_l)
            rz = torch.add(gx[:, : 2 * Dl], gh[:, : 2 * Dl]).sigmoid_()  # (k, 2 D_l)
            n = torch.addcmul(gx[:, 2 * Dl :], rz[:, :Dl], gh[:, 2 * Dl :]).tanh_()
            h = torch.addcmul(Hp, rz[:, Dl:], n.sub_(Hp))  # (1 - z) H + z n
            out.append(h)
            inp = h
        return out

    def forward_np(self, x: np.ndarray, H: np.ndarray) -> np.ndarray:
        """:meth:`forward` in numpy on the concatenated state (k, sum D_l) -> new state: the same
        float32 arithmetic on zero-copy views of the weights, for the service's small batches
        (numpy's per-operation cost on vectors of ~100 values is a fraction of torch's)."""
        out = np.empty_like(H)
        lo = 0
        inp = None
        if self.mode == "constrained":
            inp = self.out.numpy()[x, : self.sizes[-1]]
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

    @torch.no_grad()
    def scores(self, h: torch.Tensor) -> torch.Tensor:
        """(k, D) top-layer states -> (k, n_items + 1) scores."""
        D = self.sizes[-1]
        return torch.addmm(self.out[:, D].contiguous(), h, self.out[:, :D].t())


def _mode(cfg: GRU4RecConfig) -> str:
    if cfg.constrained_embedding:
        return "constrained"
    return "embedding" if cfg.embedding > 0 else "onehot"


# ---------------------------------------------------------------------------------- training
class _AdagradM:
    """Adagrad with momentum over the flat dense vector and over touched rows of item matrices.

    ``acc`` starts at ``eps``, so ``acc`` is the official ``sum(g^2) + eps`` without a separate
    addition. The updates are compiled loops (:mod:`nextclick.models.gru4rec.kernels`) on zero-copy numpy views
    of the tensors: a row-sparse update sums the gradients of repeated rows first (the update is
    non-linear), then reads and writes only the touched rows, in one pass.
    """

    def __init__(self, net: _Net, lr: float, momentum: float, nesterov: bool, eps: float) -> None:
        from nextclick.models.gru4rec import kernels  # numba: imported only when training

        self.kernels = kernels
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.acc: dict[int, np.ndarray] = {}
        self.mom: dict[int, np.ndarray] = {}  # without momentum: empty (a flat vector) or of width 0
        self._rows: dict[int, Any] = {}  # kernels.RowUpdater per item matrix
        for p in (net.dense, net.out, net.emb, net.wx):
            if p is None:
                continue
            self.acc[id(p)] = np.full(tuple(p.shape), eps, np.float32)
            no_mom = (0,) if p.dim() == 1 else (p.shape[0], 0)
            self.mom[id(p)] = np.zeros(tuple(p.shape) if momentum > 0 else no_mom, np.float32)
            if p.dim() == 2:
                self._rows[id(p)] = kernels.RowUpdater(p.numpy(), self.acc[id(p)], self.mom[id(p)])

    def rows_and_dense(
        self, p: torch.Tensor, idx0: np.ndarray, g0: np.ndarray, idx1: np.ndarray, g1: np.ndarray | None,
        dense: torch.Tensor, dense_grad: torch.Tensor,
    ) -> None:
        """:meth:`rows` of ``p`` with scratch parts ``(idx0, g0)`` (full width) and ``(idx1, g1)``
        (none where ``g1`` is None) and the flat vector ``dense`` with its gradient, in one phase
        (``update_phase`` of ``self.ph``, the trainer's :class:`kernels.Phases`): the rows are
        coalesced on the calling thread, then every thread updates a share of the rows and a slice
        of the vector."""
        i1, h1 = (_NO_ROWS, _NONE) if g1 is None else (idx1, g1)
        p_, acc, mom, pos, idx0, g0, idx1, g1, first, xrows, xbuf = self._rows[id(p)].scratch_args(idx0, g0, i1, h1)
        nf, nx = self.kernels._coalesce_in_place(pos, idx0, g0, idx1, g1, first, xrows, xbuf)
        d = id(dense)
        self.ph.update_phase(
            self.ph.parts, p_, acc, mom, pos, idx0, g0, first, nf, xrows, xbuf, nx,
            dense.numpy(), self.acc[d], self.mom[d], dense_grad.numpy(), self.lr, self.momentum, self.nesterov,
        )

    def rows(self, p: torch.Tensor, parts: list[tuple[torch.Tensor, torch.Tensor]], scratch: bool = False) -> None:
        """Update the rows of item matrix ``p`` named in ``parts``: (row indices (k,), gradient rows
        (k, <= width)) pairs; indices may repeat (their gradients are summed first). ``scratch``:
        at most two parts, the first of full width, whose gradient may be overwritten."""
        arrays = [(i.numpy(), g.numpy()) for i, g in parts]
        if scratch and len(arrays) <= 2 and arrays[0][1].shape[1] == p.shape[1]:
            i1, g1 = arrays[1] if len(arrays) == 2 else (_NO_ROWS, _NONE)
            self._rows[id(p)].update_scratch(*arrays[0], i1, g1, self.lr, self.momentum, self.nesterov)
        else:
            self._rows[id(p)].update(arrays, self.lr, self.momentum, self.nesterov)


@dataclass
class _EpochPlan:
    """An epoch's session-parallel steps as flat tensors (step ``t`` covers ``[off[t], off[t] + size[t])``)."""

    x: torch.Tensor  # (N,) inputs
    y: torch.Tensor  # (N,) targets
    carry: torch.Tensor  # (N, 1) float: 0 where a slot starts a new session, else 1
    off: list[int]
    size: list[int]
    has_reset: list[bool]
    keep: dict[int, torch.Tensor]  # step -> rows of the previous hidden state that continue

    @classmethod
    def build(cls, batches: SessionParallelBatches) -> _EpochPlan:
        xs, ys, rs, sizes, keep = [], [], [], [], {}
        for t, st in enumerate(batches):
            xs.append(st.inputs)
            ys.append(st.targets)
            rs.append(st.reset)
            sizes.append(st.inputs.size)
            if st.keep is not None:
                keep[t] = torch.from_numpy(np.asarray(st.keep, dtype=np.int64))
        off = np.concatenate([[0], np.cumsum(sizes)])[:-1].tolist() if sizes else []
        reset = np.concatenate(rs) if rs else np.zeros(0, bool)
        return cls(
            x=torch.from_numpy(np.concatenate(xs) if xs else np.zeros(0, np.int64)),
            y=torch.from_numpy(np.concatenate(ys) if ys else np.zeros(0, np.int64)),
            carry=torch.from_numpy((~reset).astype(np.float32))[:, None],
            off=off,
            size=[int(s) for s in sizes],
            has_reset=[bool(r.any()) for r in rs],
            keep=keep,
        )

    @property
    def n_events(self) -> int:
        return int(self.x.numel())


@dataclass
class _Fwd:
    """What one step's forward pass hands to its backward pass."""

    b: int
    x: torch.Tensor  # (b,) input items
    y_all: torch.Tensor  # (M,) output items: targets, then shared negatives
    Gout: np.ndarray  # (M, D + 1) their output vectors and biases
    hx: np.ndarray  # (b, D + 1) top-layer output, ones in the last column
    m_e: np.ndarray | None  # embedding dropout mask
    cache: list  # per layer, arrays: (input, previous state, [r z], candidate, U h + b_hh, candidate - state, dropout mask)
    lq: torch.Tensor | None  # (M,) logQ correction of the scores, or None
    w: torch.Tensor | None  # (M,) BPR-max: how many sampled negatives each column stands for
    dg: np.ndarray | None = None  # (b, 3D) the top layer's gate gradients (input, recurrent), from the loss phase
    dgh: np.ndarray | None = None
    g_out: np.ndarray | None = None  # (M, D + 1) the output rows' gradient, from the loss phase


class _Trainer:
    """One training step = forward, closed-form backward and the optimiser update."""

    def __init__(self, net: _Net, cfg: GRU4RecConfig, popularity: np.ndarray) -> None:
        self.net, self.cfg = net, cfg
        self.opt = _AdagradM(net, cfg.learning_rate, cfg.momentum, cfg.nesterov, cfg.adagrad_eps)
        from nextclick.models.gru4rec import kernels  # numba: imported (and its loops loaded) only when training

        self.kernels = kernels
        self.rng = np.random.default_rng([int(cfg.seed), 1])  # dropout: a stream apart from the initialisation's
        self._counts: np.ndarray | None = None  # per-item draw counters of _columns (kept zero between steps)
        self.parts = 1  # row blocks of the phases: the training loop sets its thread count
        self.scale = 1.0 / cfg.batch_size
        self._k = kernels.constants(np.float32, cfg.elu_param, cfg.bpreg, self.scale)  # BPR-max's scalars
        self.xe = cfg.loss == "cross-entropy"
        self.logq_t = self.logq_s = None
        if self.xe and cfg.logq > 0:
            with np.errstate(divide="ignore"):
                lp = np.log(popularity.astype(np.float64))
            lp[~np.isfinite(lp)] = 0.0  # never sampled nor a target
            self.logq_t = torch.from_numpy((cfg.logq * lp).astype(np.float32))
            self.logq_s = torch.from_numpy((cfg.logq * cfg.sample_alpha * lp).astype(np.float32))

    @property
    def parts(self) -> int:
        """Blocks (threads) of the step's phases; 1: the serial phases, no thread pool."""
        return self.ph.parts

    @parts.setter
    def parts(self, n: int) -> None:
        self.ph = self.opt.ph = self.kernels.Phases(int(n))

    def _dropout(self, b: int, d: int, p: float) -> tuple[np.uint64, np.uint32, float, np.ndarray | None]:
        """A (b, d) dropout's arguments for the compiled loops (:func:`kernels.dropout_mask`): a
        stream key from the trainer's generator (the loops draw the bits themselves, counter-based,
        in whatever row blocks the threads take), the threshold ``p * 2^32``, the kept values'
        scale ``1 / (1 - p)`` and the mask's array; no dropout when ``p`` is 0 (no mask)."""
        if p <= 0:
            return np.uint64(0), np.uint32(0), 1.0, None
        key = np.uint64(self.rng.bit_generator.random_raw())
        return key, np.uint32(min(round(p * 2.0**32), 2**32 - 1)), 1.0 / (1.0 - p), np.empty((b, d), np.float32)

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, y: torch.Tensor, neg: torch.Tensor | None, H: list[torch.Tensor]) -> _Fwd:
        """Gather the step's item rows and run the GRU; replaces ``H`` (per-layer states, contiguous)
        in place."""
        net, cfg = self.net, self.cfg
        sizes, mode, b = net.sizes, net.mode, x.numel()
        D, L = sizes[-1], len(sizes)
        V = net.views
        y_all, lq, w = self._columns(y, neg)  # (M,) M = b + distinct negatives
        Gout = np.empty((y_all.numel(), D + 1), np.float32)  # the output rows and biases
        inp: np.ndarray | None = None  # the first layer's input rows (b, D_in), embedding dropout applied
        src_in = {"constrained": net.out, "embedding": net.emb}.get(mode)
        if src_in is None:  # one-hot input: no input rows
            k_e, thr_e, keep_e, m_e = self._dropout(0, 0, 0.0)
            self.ph.gather_rows(
                net.out.numpy(), y_all.numpy(), Gout, net.out.numpy(), _NO_ROWS, _NONE, k_e, thr_e, keep_e, _NONE, self.parts
            )
        else:  # one gather: the output rows and the input rows
            inp = np.empty((b, D if mode == "constrained" else src_in.shape[1]), np.float32)
            k_e, thr_e, keep_e, m_e = self._dropout(b, inp.shape[1], cfg.dropout_p_embed)
            self.ph.gather_rows(
                net.out.numpy(), y_all.numpy(), Gout, src_in.numpy(), x.numpy(), inp, k_e, thr_e, keep_e,
                _NONE if m_e is None else m_e, self.parts,
            )
        hx = np.empty((b, D + 1), np.float32)  # the top layer's output and a column of ones (the output bias)
        cache = []
        for l, Dl in enumerate(sizes):
            Hp = H[l].numpy()
            if inp is None:  # one-hot layer: the input pre-activations are a row lookup
                gx = net.input_gates(l, x, None).numpy()
            else:
                gx = np.empty((b, 3 * Dl), np.float32)
            gh, rz = np.empty((b, 3 * Dl), np.float32), np.empty((b, 2 * Dl), np.float32)  # U H + b_hh, [reset update]
            n, dn, h = (np.empty((b, Dl), np.float32) for _ in range(3))  # candidate, n - H, output
            p = cfg.dropout_p_embed if (l == 0 and mode == "onehot") else cfg.dropout_p_hidden
            key, thr, keep, m = self._dropout(b, Dl, p)
            # h = ((1 - z) H + z n) * dropout mask
            self.ph.layer_forward(
                _NONE if inp is None else inp,
                _NONE if inp is None else V["w_ih"][l].numpy(), V["b_ih"][l].numpy(), Hp, V["w_hh"][l].numpy(),
                V["b_hh"][l].numpy(), key, thr, keep, self.parts,
                gx, gh, rz, n, dn, _NONE if m is None else m, h, hx if l == L - 1 else _NONE,
            )
            cache.append((inp, Hp, rz, n, gh, dn, m))
            H[l] = torch.from_numpy(h)  # the (dropped-out) output is the new hidden state, as in the official code
            inp = h
        return _Fwd(b, x, y_all, Gout, hx, m_e, cache, lq, w)

    def _columns(
        self, y: torch.Tensor, neg: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The step's output items: the targets, then each distinct sampled negative once (in item
        order), with the cross-entropy's offsets ``lq`` (logQ, and ``-log(count)`` for a negative
        drawn ``count`` times: it enters the softmax that many times) or BPR-max's column weights
        ``w`` (the counts); None where there is nothing to correct. Scoring and updating each
        distinct item once gives the same loss and gradients as the repeated columns (a repeated
        column's softmax terms are identical) at a fraction of the cost: 2048 draws from
        rsc15-100k's 2,933 items hold about 1,150 distinct ones."""
        b = y.numel()
        if neg is None:
            lq = self.logq_t.index_select(0, y) if self.xe and self.logq_t is not None else None
            return y, lq, None
        n_items = self.net.out.shape[0]
        if n_items <= 16 * neg.numel():  # a pass over every item's counter beats sorting the draws
            if self._counts is None:
                self._counts = np.zeros(n_items, np.int32)
            k = b + neg.numel()
            y_all, lq, w = np.empty(k, np.int64), np.empty(k, np.float32), np.empty(k, np.float32)
            none = np.zeros(0, np.float32)
            M = self.kernels.step_columns(
                y.numpy(), neg.numpy(), self._counts, self.xe,
                none if self.logq_t is None else self.logq_t.numpy(), none if self.logq_s is None else self.logq_s.numpy(),
                y_all, lq, w,
            )
            t = torch.from_numpy
            return t(y_all[:M]), (t(lq[:M]) if self.xe else None), (None if self.xe else t(w[:M]))
        u, c = torch.unique(neg, return_counts=True)
        u = u.long()
        y_all = torch.cat((y, u))
        if not self.xe:
            return y_all, None, torch.cat((torch.ones(b), c.float()))
        lq = self.logq_t.index_select(0, y_all) if self.logq_t is not None else torch.zeros(y_all.numel())
        lq_s = self.logq_s.index_select(0, u) if self.logq_s is not None else torch.zeros(u.numel())
        lq[b:] = lq_s.sub_(c.float().log())
        return y_all, lq, None

    def loss(self, f: _Fwd, dR: np.ndarray, dh: np.ndarray) -> float:
        """Scores and loss; fills ``dR`` (b, M) with dL/dscores and ``dh`` (b, D + 1) with
        dL/d(top-layer output) in its first D columns, and goes on to the output rows' gradient
        ``f.g_out`` (M, D + 1) and back through the top layer's gates: ``f.dg`` and ``f.dgh`` (its
        gate gradients) and its bias gradients."""
        none = np.zeros(0, np.float32)
        l = len(self.net.sizes) - 1
        _, _, rz, n, gh, dn, m = f.cache[l]
        b, M = dR.shape
        parts = self.parts
        f.dg, f.dgh = np.empty_like(gh), np.empty_like(gh)
        f.g_out = np.empty((M, dh.shape[1]), np.float32)
        gw = self.net.grads
        return self.ph.loss_phase(
            f.hx, f.Gout, self.xe, none if f.lq is None else f.lq.numpy(), none if f.w is None else f.w.numpy(),
            self._k, self.scale, _EPS_LOG, parts, np.empty((b, M), np.float32), dR,
            np.empty((parts, b, dh.shape[1]), np.float32), dh, f.g_out,
            _NONE if m is None else m, rz, n, gh, dn, f.dg, f.dgh,
            np.empty((parts, 2, gh.shape[1]), np.float32), gw["b_ih"][l].numpy(), gw["b_hh"][l].numpy(),
        )

    # ------------------------------------------------------------------ backward
    def backward(
        self, f: _Fwd
    ) -> tuple[np.ndarray, list[tuple[torch.Tensor, torch.Tensor, np.ndarray]], np.ndarray | None]:
        """Backward from where :meth:`loss` stopped (the output rows' gradient and the top layer's
        gate gradients in ``f``): dense gradients into ``net.dense_grad``; returns the output rows'
        gradient (M, D + 1), the row-sparse gradients of the separate input matrices and, in
        constrained mode, dL/d(input rows)."""
        if f.g_out is None or f.dg is None or f.dgh is None:
            raise RuntimeError("gru4rec: backward() needs loss() on the same forward pass first")
        net, K = self.net, self.kernels
        sizes, b, x = net.sizes, f.b, f.x
        V, gw = net.views, net.grads
        g_out = f.g_out
        d = None
        rows: list[tuple[torch.Tensor, torch.Tensor, np.ndarray]] = []
        for l in range(len(sizes) - 1, -1, -1):
            Dl = sizes[l]
            inp, Hp, rz, n, gh, dn, m = f.cache[l]
            if l == len(sizes) - 1:  # the loss phase went back through the top layer's gates
                dg, dgh = f.dg, f.dgh
            else:
                dg, dgh = np.empty((b, 3 * Dl), np.float32), np.empty((b, 3 * Dl), np.float32)  # gate pre-activation grads
                K.gru_backward(d, _NONE if m is None else m, rz, n, gh, dn, dg, dgh, gw["b_ih"][l].numpy(), gw["b_hh"][l].numpy())
            d_in = None if inp is None else np.empty((b, inp.shape[1]), np.float32)  # grad of the layer input
            self.ph.backward_products(
                dgh, Hp, gw["w_hh"][l].numpy(),
                dg, _NONE if inp is None else inp, _NONE if inp is None else gw["w_ih"][l].numpy(),
                _NONE if inp is None else V["w_ih"][l].numpy(), _NONE if d_in is None else d_in,
                _NONE if (l or f.m_e is None) else f.m_e,  # the embedding dropout's mask on the input rows' gradient
            )
            if d_in is None:  # one-hot layer: row-sparse input weights
                rows.append((net.wx, x, dg))  # type: ignore[arg-type]
                return g_out, rows, None
            d = d_in
        if net.mode == "embedding":
            rows.append((net.emb, x, d))  # type: ignore[arg-type]
            return g_out, rows, None
        return g_out, rows, d

    def gradients(
        self, x: torch.Tensor, y: torch.Tensor, neg: torch.Tensor | None, H: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]:
        """Forward and backward pass of one step, without updating (used by the tests).

        Returns the loss and the row-sparse gradients as ``(matrix, row indices, rows)`` (indices
        may repeat); the dense gradients are left in ``net.dense_grad``. Replaces ``H`` in place.
        """
        f = self.forward(x, y, neg, H)
        dR, dh = np.empty((f.b, f.y_all.numel()), np.float32), np.empty((f.b, self.net.sizes[-1] + 1), np.float32)
        loss = self.loss(f, dR, dh)
        g_out, rows, d_in = self.backward(f)
        out = [(p, i, torch.from_numpy(g)) for p, i, g in rows] + [(self.net.out, f.y_all, torch.from_numpy(g_out))]
        if d_in is not None:
            out.append((self.net.out, f.x, torch.cat((torch.from_numpy(d_in), torch.zeros(f.b, 1)), dim=1)))
        return torch.tensor(loss), out

    # ------------------------------------------------------------------ one training step
    def step(self, x: torch.Tensor, y: torch.Tensor, neg: torch.Tensor | None, H: list[torch.Tensor]) -> float:
        """Train on one session-parallel step; replaces ``H`` in place. Returns the loss."""
        net, opt = self.net, self.opt
        f = self.forward(x, y, neg, H)
        dR, dh = np.empty((f.b, f.y_all.numel()), np.float32), np.empty((f.b, net.sizes[-1] + 1), np.float32)
        loss = self.loss(f, dR, dh)
        g_out, rows, d_in = self.backward(f)
        # the output matrix (its output rows and, in constrained mode, its input rows) and the GRU
        # weights at once
        opt.rows_and_dense(net.out, f.y_all.numpy(), g_out, f.x.numpy(), d_in, net.dense, net.dense_grad)
        for p, idx, g in rows:
            opt.rows(p, [(idx, torch.from_numpy(g))], scratch=True)
        return loss


# ---------------------------------------------------------------------------------- model
class GRU4Rec(Recommender):
    """GRU4Rec (see the module docstring). ``step(state, item)`` serves a live session."""

    name = "gru4rec"
    Config = GRU4RecConfig
    needs_torch = True
    presets = {
        # the RSC15 cross-entropy setting as specified in the project's issue 3
        "rsc15": dict(
            layers=(100,),
            batch_size=32,
            dropout_p_embed=0.1,
            dropout_p_hidden=0.0,
            learning_rate=0.1,
            momentum=0.0,
            n_sample=2048,
            sample_alpha=0.75,
            bpreg=0.0,
            elu_param=0.0,
            logq=1.0,
            loss="cross-entropy",
            constrained_embedding=True,
            embedding=0,
            n_epochs=10,
        ),
        # the official repository's paramfiles/rsc15_xe_shared_100_best.py; on rsc15-100k it gives
        # the figures the issue quotes for the official "RSC15 preset" run (see the module docstring)
        "rsc15_official": dict(
            layers=(100,),
            batch_size=32,
            dropout_p_embed=0.0,
            dropout_p_hidden=0.4,
            learning_rate=0.2,
            momentum=0.2,
            n_sample=2048,
            sample_alpha=0.5,
            bpreg=0.0,
            elu_param=0.0,
            logq=1.0,
            loss="cross-entropy",
            constrained_embedding=True,
            embedding=0,
            n_epochs=10,
        ),
        # the official paramfiles/retailrocket_bprmax_shared_best.py: best BPR-max setting on RetailRocket
        "retailrocket": dict(
            layers=(224,),
            batch_size=80,
            dropout_p_embed=0.5,
            dropout_p_hidden=0.05,
            learning_rate=0.05,
            momentum=0.4,
            n_sample=2048,
            sample_alpha=0.4,
            bpreg=1.95,
            elu_param=0.5,
            logq=0.0,
            loss="bpr-max",
            constrained_embedding=True,
            embedding=0,
            n_epochs=10,
        ),
    }

    # chosen by `nextclick tune` (Optuna TPE, MRR@20) on rsc15-100k train_tr -> train_valid only, as
    # changes to an official setting (commands and trials: docs/benchmarks.md)
    presets["rsc15_tuned"] = {  # cross-entropy, n_sample 512; 30 trials
        **presets["rsc15_official"], "n_sample": 512, "dropout_p_embed": 0.43, "dropout_p_hidden": 0.48,
        "learning_rate": 0.089, "momentum": 0.29, "sample_alpha": 0.6,
    }
    presets["rsc15_bprmax_tuned"] = {  # the RetailRocket BPR-max network; 16 trials
        **presets["retailrocket"], "dropout_p_embed": 0.58, "dropout_p_hidden": 0.32, "learning_rate": 0.0375,
        "momentum": 0.58, "sample_alpha": 0.44, "bpreg": 2.87,
    }

    # ------------------------------------------------------------------ fitting
    def _fit(self, train: Sessions, valid: Sessions | None) -> None:
        cfg = self.config
        _check_config(cfg)
        rng = np.random.default_rng(cfg.seed)
        counts = self.popularity_.astype(np.float64)
        if cfg.session_order == "time" and train.times is not None:  # oldest session first
            train = train.select(np.argsort(train.times[train.offsets[:-1]], kind="stable"))
        order = "given" if cfg.session_order == "time" else "random"
        batches = SessionParallelBatches(train, cfg.batch_size, order=order, seed=cfg.seed)
        plan = _EpochPlan.build(batches)
        if plan.n_events == 0:
            raise NextclickError("gru4rec: no training session has 2 or more clicks")
        store = None
        if cfg.n_sample:  # never draw more negatives in advance than the whole training uses
            size = min(cfg.sample_cache_max_size, cfg.n_sample * len(plan.size) * cfg.n_epochs)
            store = SampleStore(counts**cfg.sample_alpha, cfg.n_sample, size, rng)
        self.net_ = _Net.create(cfg, self.n_items_, rng)
        self.epoch_losses_: list[float] = []
        self.events_per_second_: list[float] = []
        # numba's products call scipy's BLAS: load it before the limits so that they cover it too
        import scipy.linalg.cython_blas  # noqa: F401

        with (
            _threads(1),
            threadpool_limits(1, user_api="blas"),
            _numba_threads(cfg.n_threads) as parts,
            torch.no_grad(),
            np.errstate(over="ignore", invalid="ignore"),
        ):
            trainer = _Trainer(self.net_, cfg, counts)
            trainer.parts = parts
            for epoch in range(cfg.n_epochs):
                if epoch and order == "random":
                    plan = _EpochPlan.build(batches)
                t0 = time.perf_counter()
                loss, n_ev = self._epoch(trainer, plan, store, epoch)
                dt = time.perf_counter() - t0
                self.epoch_losses_.append(loss)
                self.events_per_second_.append(n_ev / dt)
                msg = f"epoch {epoch + 1}/{cfg.n_epochs}: loss {loss:.6f} ({dt:.2f}s, {n_ev / dt:,.0f} events/s)"
                if valid is not None and valid.n_predictions():
                    msg += " valid Recall@20 {:.4f} MRR@20 {:.4f}".format(*self._recall_mrr(valid, 20))
                log.info(msg)

    def _epoch(self, trainer: _Trainer, plan: _EpochPlan, store: SampleStore | None, epoch: int) -> tuple[float, int]:
        """One pass over the session-parallel steps; returns the mean loss per event and #events."""
        from tqdm.auto import tqdm

        cfg = self.config
        skip_single = cfg.loss == "bpr-max" and store is None  # one slot, no negatives: no BPR-max
        H = [torch.zeros(plan.size[0], Dl) for Dl in cfg.layers]
        total, n_ev = 0.0, 0
        bar = tqdm(
            total=plan.n_events,
            desc=f"gru4rec epoch {epoch + 1}/{cfg.n_epochs}",
            unit="ev",
            leave=False,
            disable=None,
            mininterval=0.5,
        )
        for t, (o, b) in enumerate(zip(plan.off, plan.size)):
            keep = plan.keep.get(t)
            if keep is not None:  # the batch shrank: keep the states of the slots that go on
                H = [h.index_select(0, keep) for h in H]
            if plan.has_reset[t]:  # zero the states of slots that start a new session
                carry = plan.carry[o : o + b]
                for h in H:
                    h.mul_(carry)
            if skip_single and b < 2:
                continue
            v = trainer.step(plan.x[o : o + b], plan.y[o : o + b], store.next() if store else None, H)
            if not math.isfinite(v):
                raise NextclickError(
                    f"gru4rec: loss is {v} at epoch {epoch + 1}, step {t}; lower learning_rate "
                    f"(now {cfg.learning_rate}) or momentum (now {cfg.momentum})"
                )
            total += v * b
            n_ev += b
            if t % 64 == 63:
                bar.update(o + b - bar.n)
        bar.close()
        return total / max(n_ev, 1), n_ev

    def _recall_mrr(self, sessions: Sessions, k: int) -> tuple[float, float]:
        hits = rr = 0.0
        n = 0
        for scores, targets, _, _ in self.iter_scores(sessions):
            t = scores[np.arange(targets.size), targets][:, None]
            rank = (scores >= t).sum(1) - 1
            hits += float((rank < k).sum())
            rr += float(np.where(rank < k, 1.0 / (rank + 1), 0.0).sum())
            n += targets.size
        return hits / max(n, 1), rr / max(n, 1)

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def _run(self, items: np.ndarray, starts: np.ndarray, lengths: np.ndarray, every: bool) -> torch.Tensor:
        """Run the GRU from a zero state over ``items[starts[i] : starts[i] + lengths[i]]`` for all i.

        Sequences are sorted by length so step ``t`` updates the first ``k_t`` rows (the ones still
        running). Returns the top-layer state after the last click of each sequence (N, D), or with
        ``every`` after every click (sum(lengths), D) in (sequence, position) order.
        """
        net = self.net_
        lengths = np.asarray(lengths, dtype=np.int64)
        N = lengths.size
        D = net.sizes[-1]
        total = int(lengths.sum())
        if N == 0 or total == 0:
            return torch.zeros(total if every else N, D)
        order = np.argsort(-lengths, kind="stable")
        Ls = lengths[order]
        T = int(Ls[0])
        k = N - np.searchsorted(Ls[::-1], np.arange(T), side="right")  # (T,) rows still running at step t
        step_off = np.concatenate([[0], np.cumsum(k)])
        row = np.arange(total, dtype=np.int64) - np.repeat(step_off[:-1], k)  # step-major layout
        tt = np.repeat(np.arange(T, dtype=np.int64), k)
        X = torch.from_numpy(items[np.asarray(starts, dtype=np.int64)[order][row] + tt])
        H = [torch.zeros(N, Dl) for Dl in net.sizes]
        if every:
            first = np.concatenate([[0], np.cumsum(lengths)])[:-1]
            dest = torch.from_numpy(first[order][row] + tt)
            allh = torch.empty(total, D)
        for t in range(T):
            a, kk = int(step_off[t]), int(k[t])
            Hn = net.forward(X[a : a + kk], [h[:kk] for h in H])
            for h, hn in zip(H, Hn):
                h[:kk] = hn
            if every:
                allh.index_copy_(0, dest[a : a + kk], Hn[-1])
        if every:
            return allh
        final = torch.empty(N, D)
        final[torch.from_numpy(order)] = H[-1]
        return final

    def _score(self, sessions: Sessions, sess: np.ndarray, plen: np.ndarray) -> np.ndarray:
        sess = np.asarray(sess, dtype=np.int64)
        with _one_thread():
            h = self._run(sessions.items, sessions.offsets[sess], np.asarray(plen, dtype=np.int64), every=False)
            return self.net_.scores(h).numpy()

    def iter_scores(
        self, sessions: Sessions, batch_size: int = 1024
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Every test session runs once from a zero state (all sessions together, packed by
        length); the states after each click are then scored ``batch_size`` prefixes at a time."""
        self._check_fitted()
        sess, plen, targets = sessions.prefixes()
        if sess.size == 0:
            return
        lengths = sessions.lengths
        # groups of whole sessions (prefixes come session by session) of about 2^16 predictions,
        # so the stored states of one GRU pass stay small
        run_start = np.flatnonzero(np.r_[True, sess[1:] != sess[:-1]])
        cut = np.searchsorted(run_start, np.arange(0, sess.size, 1 << 16), side="left")
        bounds = np.unique(np.r_[run_start[cut[cut < run_start.size]], sess.size])
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            g_sess = np.unique(sess[a:b])  # sorted session ids of the group
            n_in = lengths[g_sess] - 1  # the last click is never an input
            with _one_thread():
                allh = self._run(sessions.items, sessions.offsets[g_sess], n_in, every=True)
            first = np.concatenate([[0], np.cumsum(n_in)])[:-1]
            pos = torch.from_numpy(first[np.searchsorted(g_sess, sess[a:b])] + plen[a:b] - 1)
            for c in range(a, b, batch_size):
                sl = slice(c, min(c + batch_size, b))
                with _one_thread():
                    scores = self.net_.scores(allh.index_select(0, pos[c - a : sl.stop - a])).numpy()
                scores[:, 0] = -np.inf
                yield scores, targets[sl], sess[sl], plen[sl]

    # ------------------------------------------------------------------ live sessions
    @property
    def state_size(self) -> int:
        """Length of the hidden-state vector of one session (sum of the layer sizes)."""
        return int(sum(self.config.layers))

    def init_state(self, n: int | None = None) -> np.ndarray:
        """Zero state for a new session (or ``n`` sessions: shape (n, state_size))."""
        shape = (self.state_size,) if n is None else (int(n), self.state_size)
        return np.zeros(shape, dtype=np.float32)

    def step(self, state: np.ndarray | None, item_idx: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance live sessions by one click each; returns ``(new_state, scores)``.

        ``item_idx`` is an internal index (or a (k,) array of them, one per session) and ``state``
        the session's state vector from the previous call ((k, state_size) for k sessions; None =
        a new session). Scores have shape (n_items + 1,) (or (k, n_items + 1)) with column 0 at
        -inf. Index 0 (an unknown item) leaves that session's state unchanged. O(1) per click.
        """
        self._check_fitted()
        single = np.ndim(item_idx) == 0
        x = np.atleast_1d(np.asarray(item_idx, dtype=np.int64))
        if state is None:
            state = self.init_state(x.size)
        st = np.asarray(state, dtype=np.float32).reshape(x.size, self.state_size)
        if x.min(initial=0) < 0 or x.max(initial=0) > self.n_items_:
            raise NextclickError(f"gru4rec.step: item indices must lie in 0..{self.n_items_}, got {x.tolist()}")
        with torch.no_grad(), _one_thread():
            S = torch.from_numpy(st.copy())
            known = torch.from_numpy(x > 0)
            H = list(torch.split(S, list(self.config.layers), dim=1))
            if bool(known.any()):
                Hn = self.net_.forward(torch.from_numpy(x), [h.contiguous() for h in H])
                S = torch.where(known[:, None], torch.cat(Hn, dim=1), S)
            top = S[:, -self.config.layers[-1] :]
            scores = self.net_.scores(top.contiguous()).numpy()
        scores[:, 0] = -np.inf
        new = S.numpy()
        return (new[0], scores[0]) if single else (new, scores)

    # the service's live-session protocol (see Recommender.live_step): the store keeps this state
    def live_state_size(self) -> int:
        return self.state_size

    def _output_matrix(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Contiguous copies of the output weights (V+1, D) and bias (V+1,) for inference.

        ``net_.out`` keeps the bias as an extra column; serving scores against contiguous
        copies made once per fitted network, so no call depends on how torch handles the strided
        view. (At 100k items the product is memory-bound either way: see docs/benchmarks.md.)"""
        cache = getattr(self, "_out_cache", None)
        if cache is None or cache[0] is not self.net_:
            D = self.config.layers[-1]
            cache = (self.net_, self.net_.out[:, :D].contiguous(), self.net_.out[:, D].contiguous())
            self._out_cache = cache
        return cache[1], cache[2]

    def _live_scores_t(self, top: torch.Tensor) -> np.ndarray:
        W, b = self._output_matrix()
        scores = torch.addmm(b, top, W.t()).numpy()
        scores[:, 0] = -np.inf
        return scores

    def output_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._output_matrix()

    def live_query(self, states, clicks, new_items):  # type: ignore[override]
        """One GRU step per session (``new_items`` None or an unknown item, index 0, leave the
        state unchanged); the query is the top layer's new state."""
        self._check_fitted()
        B = len(clicks) if new_items is None else len(new_items)
        st = self.init_state(B) if states is None else np.asarray(states, dtype=np.float32).reshape(B, self.state_size)
        S = st
        if new_items is not None:
            x = np.asarray(new_items, dtype=np.int64)
            known = x > 0
            if known.any():
                if B <= 4:  # numpy: less per-operation overhead, and too small for BLAS threads
                    Hn = self.net_.forward_np(x, st)
                else:
                    with torch.no_grad(), _one_thread():
                        H = [torch.from_numpy(np.ascontiguousarray(h)) for h in np.split(st, np.cumsum(self.config.layers)[:-1], axis=1)]
                        Hn = torch.cat(self.net_.forward(torch.from_numpy(x), H), dim=1).numpy()
                S = Hn if known.all() else np.where(known[:, None], Hn, st)
        S = np.array(S, dtype=np.float32, copy=True)
        return S, torch.from_numpy(np.ascontiguousarray(S[:, -self.config.layers[-1] :]))

    def live_step(self, states, clicks, new_items):  # type: ignore[override]
        """One GRU step per session (unknown items, index 0, leave the state unchanged)."""
        S, q = self.live_query(states, clicks, new_items)
        with torch.no_grad(), _one_thread():
            return S, self._live_scores_t(q)

    def live_scores(self, states, clicks):  # type: ignore[override]
        """Scores from stored states (no new click): the output layer over the top layer's state."""
        _, q = self.live_query(states, clicks, None)
        with torch.no_grad(), _one_thread():
            return self._live_scores_t(q)

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, np.ndarray]:
        return self.net_.arrays()

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.net_ = _Net.from_arrays(self.config, self.n_items_, arrays)
