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

What its losses cover of TRON's recipe (Wilm et al., RecSys 2023, who compare SASRec variants
with this GRU4Rec+): every step's negatives are the mini-batch's other targets (in-batch) plus
``n_sample`` items from popularity**``sample_alpha`` (0: uniform) shared by the whole mini-batch,
scored by cross-entropy -- a sampled softmax, with logQ correction when ``logq`` > 0 -- or by
BPR-max. Every negative enters the loss: there is no top-k selection of the hardest. TRON's
top-k sampled softmax is SASRec's ``top_k_negatives`` option and ``tron`` preset
(:mod:`nextclick.models.sasrec.model`).

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
operations with no autograd graph: five compiled phases (numba) -- the gather of the step's item
rows (with the embedding dropout), each GRU layer, the scores with the loss, the output rows'
gradient and the top layer's gates backward, the other weight-gradient products, the optimiser --
each split over ``n_threads`` threads of numba's pool, with the products inside calling BLAS
single-threaded on blocks of the arrays, so one thread pool serves the whole step. Dropout masks
are drawn inside the loops, counter-based. The item matrices get row-sparse gradients, and
Adagrad with momentum reads and writes only the rows a step touched (repeated rows summed first).
An epoch's session-parallel steps are laid out as flat arrays before the epoch starts, and
negatives come from a pre-drawn sample store, so the Python work per step is a few slices.
Inference runs torch single-threaded.

Where things are: :mod:`.config` (hyper-parameters, validation, presets), :mod:`.net` (weights,
:func:`~.net.gru_cell` -- the one definition of the GRU step -- and the scores), :mod:`.sampling`
(negatives), :mod:`.losses`, :mod:`.train` (one training step and the optimiser), :mod:`.fit`
(the epoch loop), :mod:`.kernels` (the compiled loops, tested equal to the plain definitions).

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
* Two training engines: the compiled CPU step above (the default) and ``engine="torch"``
  (:mod:`.train_torch`: the same maths with autograd, on the CPU or a CUDA device, data-parallel
  under ``torchrun``; its dropout draws other masks). No L2 regularisation, gradient clipping or
  other optimisers (removed in the official PyTorch version too).

Presets (:mod:`.config`): ``spec_rsc15`` holds the values of the project's GRU4Rec specification; ``official_rsc15`` the official repository's
``paramfiles/rsc15_xe_shared_100_best.py`` (no embedding dropout, hidden dropout 0.4, learning
rate 0.2, momentum 0.2, sample_alpha 0.5), which is the one that reproduces the official
implementation's figures on rsc15-100k; ``retailrocket`` the official BPR-max paramfile;
``tuned_rsc15`` (cross-entropy, n_sample 512) and ``tuned_rsc15_bprmax`` (the BPR-max network)
were chosen with ``nextclick tune`` on rsc15-100k train_tr -> train_valid only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import closing

import numpy as np
import torch

from nextclick.data.sessions import Sessions
from nextclick.errors import NextclickError
from nextclick.models.base import Recommender
from nextclick.models.gru4rec.config import PRESETS, RENAMED, GRU4RecConfig, check_config
from nextclick.models.gru4rec.net import Net, torch_threads
from nextclick.models.live import LiveSessions
from nextclick.ranking.exact import conservative_rank

__all__ = ["GRU4Rec", "GRU4RecConfig"]

log = logging.getLogger(__name__)


def _one_thread():  # inference: a few small operations per call
    return torch_threads(1)


class GRU4Rec(Recommender):
    """GRU4Rec (see the module docstring); :class:`GRU4RecLive` serves its live sessions."""

    name = "gru4rec"
    Config = GRU4RecConfig
    needs_torch = True
    presets = PRESETS
    renamed_presets = RENAMED
    recommended = {"sessions like rsc15 (cross-entropy)": "tuned_rsc15", "sessions like rsc15 (BPR-max)": "tuned_rsc15_bprmax",
                   "retailrocket": "official_retailrocket", "reproducing the official rsc15 figures": "official_rsc15"}

    @property
    def data_parallel(self) -> bool:
        """Whether this config fits under torchrun, one rank per process: the torch engine does."""
        return self.config.engine == "torch"

    # ------------------------------------------------------------------ fitting
    def _fit(self, train: Sessions, valid: Sessions | None) -> None:
        from nextclick.models.gru4rec.fit import epochs  # numba: imported (and its loops loaded) only when training

        cfg = self.config
        check_config(cfg)
        self.net_, run = epochs(cfg, train, self.popularity_.astype(np.float64), self.n_items_)
        self.epoch_losses_: list[float] = []
        self.events_per_second_: list[float] = []
        self.training_["curve"] = curve = []  # per epoch: epoch, loss, seconds (and validation figures)
        with closing(run):  # the training's thread settings end with the loop, even on an error
            for ep in run:
                loss, n_ev, dt = ep.loss, ep.n_events, ep.seconds
                self.epoch_losses_.append(loss)
                self.events_per_second_.append(n_ev / dt)
                msg = f"epoch {ep.index + 1}/{cfg.n_epochs}: loss {loss:.6f} ({dt:.2f}s, {n_ev / dt:,.0f} events/s)"
                if ep.out_of_time:
                    msg += f"; the time budget ({cfg.time_budget:g} s) ran out after {n_ev:,} of its events"
                    self.training_["out_of_time"] = {"epoch": ep.index + 1, "events": n_ev}
                curve.append({"epoch": ep.index + 1, "loss": float(loss), "seconds": float(dt)})
                if valid is not None and valid.n_predictions():
                    self._out_cache = None  # the weights moved since the last scoring
                    curve[-1]["valid_recall@20"], curve[-1]["valid_mrr@20"] = self._recall_mrr(valid, 20)
                    msg += " valid Recall@20 {:.4f} MRR@20 {:.4f}".format(curve[-1]["valid_recall@20"], curve[-1]["valid_mrr@20"])
                log.info(msg)
        self._out_cache = None  # scoring copies the trained weights, not a validation's snapshot

    def _recall_mrr(self, sessions: Sessions, k: int) -> tuple[float, float]:
        """Recall@k and MRR@k over every position of ``sessions`` (conservative ranks): the training log's
        validation figures."""
        hits = rr = 0.0
        n = 0
        for scores, targets, _, _ in self.iter_scores(sessions):
            rank = conservative_rank(scores, targets)
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
            return self._scores(h).numpy()

    def iter_scores(
        self, sessions: Sessions, batch_size: int = 1024
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Every test session runs once from a zero state (all sessions together, packed by
        length); the states after each click are then scored ``batch_size`` prefixes at a time."""
        for queries, targets, sess, plen in self.iter_queries(sessions, batch_size):
            with _one_thread():
                scores = self._scores(queries).numpy()
            scores[:, 0] = -np.inf
            yield scores, targets, sess, plen

    # ------------------------------------------------------------------ live sessions
    @torch.no_grad()
    def _scores(self, h: torch.Tensor) -> torch.Tensor:
        """(k, D) top-layer states -> (k, n_items + 1) scores, against :meth:`_output_matrix` (the
        same contiguous matrices whether the net was just trained or loaded: the same sums)."""
        W, b = self._output_matrix()
        return torch.addmm(b, h, W.t())

    def _output_matrix(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The output weights (V+1, D) and bias (V+1,), contiguous, for inference.

        A net being trained keeps the bias as an extra column of ``net_.out``: scoring then uses
        contiguous copies made once per fitted network, so no call depends on how torch handles
        the strided view. Training moves the weights in place, so ``_fit`` drops the copies after
        each validation and at its end. A loaded net's are the loaded arrays themselves (no copy)."""
        cache = getattr(self, "_out_cache", None)
        if cache is None or cache[0] is not self.net_:
            cache = (self.net_, self.net_.out_w.contiguous(), self.net_.out_b.contiguous())
            self._out_cache = cache
        return cache[1], cache[2]

    # ------------------------------------------------------------------ state
    def _state(self) -> dict[str, np.ndarray]:
        return self.net_.arrays()

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.net_ = Net.from_arrays(self.config, self.n_items_, arrays)

    # ------------------------------------------------------------------ evaluation queries
    def iter_queries(
        self, sessions: Sessions, batch_size: int = 1024
    ) -> Iterator[tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]]:
        """:meth:`iter_scores` without the scores: ``(queries, targets, sess, plen)`` with the
        top-layer states (B, D) in place of the score rows (the scores are ``queries @ W.T + b``,
        :meth:`GRU4RecLive.output_layer`), in the same batches."""
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
            g_sess = np.unique(sess[a:b])
            n_in = lengths[g_sess] - 1
            with _one_thread():
                allh = self._run(sessions.items, sessions.offsets[g_sess], n_in, every=True)
            first = np.concatenate([[0], np.cumsum(n_in)])[:-1]
            pos = torch.from_numpy(first[np.searchsorted(g_sess, sess[a:b])] + plen[a:b] - 1)
            for c in range(a, b, batch_size):
                sl = slice(c, min(c + batch_size, b))
                yield allh.index_select(0, pos[c - a : sl.stop - a]), targets[sl], sess[sl], plen[sl]


class GRU4RecLive(LiveSessions):
    """GRU4Rec's live sessions: the state is the hidden state of every layer (concatenated), a
    click is one GRU step (O(1) per click), the query is the top layer's state."""

    model: GRU4Rec

    @property
    def state_size(self) -> int:
        return int(sum(self.model.config.layers))

    def advance(self, states: np.ndarray | None, new_items: np.ndarray) -> np.ndarray:
        m = self.model
        x = np.asarray(new_items, dtype=np.int64).reshape(-1)
        st = self.start(x.size) if states is None else np.asarray(states, dtype=np.float32).reshape(x.size, self.state_size)
        if x.min(initial=0) < 0 or x.max(initial=0) > m.n_items_:
            raise NextclickError(f"gru4rec: item indices must lie in 0..{m.n_items_}, got {x.tolist()}")
        known = x > 0
        if not known.any():
            return st.copy()
        if x.size <= 4:  # numpy: less per-operation overhead, and too small for BLAS threads
            Hn = m.net_.forward_np(x, st)
        else:
            with torch.no_grad(), _one_thread():
                layers = np.split(st, np.cumsum(m.config.layers)[:-1], axis=1)
                H = [torch.from_numpy(np.ascontiguousarray(h)) for h in layers]
                Hn = torch.cat(m.net_.forward(torch.from_numpy(x), H), dim=1).numpy()
        return np.array(Hn if known.all() else np.where(known[:, None], Hn, st), dtype=np.float32, copy=True)

    def queries(self, states: np.ndarray | None, clicks: Sequence[np.ndarray]) -> torch.Tensor:
        st = self.start(len(clicks)) if states is None else np.asarray(states, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(st[:, -self.model.config.layers[-1] :]))

    def output_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model._output_matrix()

    def scores(self, states: np.ndarray | None, clicks: Sequence[np.ndarray]) -> np.ndarray:
        W, b = self.model._output_matrix()
        with torch.no_grad(), _one_thread():
            scores = torch.addmm(b, self.queries(states, clicks), W.t()).numpy()
        scores[:, 0] = -np.inf
        return scores


GRU4Rec.Live = GRU4RecLive
