"""SASRec: self-attentive sequential recommendation (Kang & McAuley, "Self-Attentive Sequential
Recommendation", ICDM 2018), with the losses of later work as named options.

Model (paper Sec. III). A sequence keeps its most recent ``max_len`` (T) clicks and is LEFT-padded
with item 0. Input = item embedding (x sqrt(d), as the reference code does) + learned position
embedding, then embedding dropout. ``n_blocks`` blocks of causal multi-head self-attention and a
point-wise two-layer ReLU feed-forward network follow, each sub-layer with dropout and a residual
connection; a final layer norm closes the stack. Position t attends to the real clicks 1..t only
(causal mask + padding mask). The output at every position is scored against the SHARED item
embedding matrix (dot product), so training is sequence-to-sequence: every position of every
sequence predicts its next click in one forward pass.

Layer-norm placement (``pre_ln``):

* ``pre_ln=False`` (default, the paper's placement as released with the paper): per block
  ``q = LN(x); x = q + Attn(Q=q, K=V=x); y = LN(x); x = y + Dropout(FFN(y))``, where attention
  drops its WEIGHTS (not its output, as in the reference code) and FFN drops its hidden layer;
* ``pre_ln=True``: the textbook pre-LN Transformer, which is the paper's Eq. (4) read literally:
  ``x = x + Dropout(g(LN(x)))`` for g = attention (Q = K = V = LN(x)) and g = FFN.

Losses (``loss``), all averaged over the real (non-padding) positions of a batch:

* ``"bce"`` -- the paper: binary cross-entropy of the target against ONE negative per position,
  drawn uniformly from the items not in that sequence (``bce_exclude_seen=False``: from all items;
  excluding them never penalises scoring the sequence's own items high, which full ranking and
  session data with repeats punish);
* ``"ce"`` -- full softmax cross-entropy over the whole catalogue (Klenitskiy & Vasilev,
  "Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?", RecSys 2023);
* ``"sampled_ce"`` -- sampled softmax over the target and ``n_negatives`` items drawn from
  popularity**``sample_alpha``, every logit corrected by -log Q(item) (logQ correction, Yi et al.,
  RecSys 2019); a negative equal to the target is masked out. With ``in_batch_negatives`` the
  batch's other targets are negatives too (mixed negative sampling, Yang et al., WWW 2020 companion):
  every logit is then corrected by the log of its item's expected count among the candidates,
  log(N p_click + K q), N positions and K samples;
* ``"gbce"`` -- gBCE of gSASRec (Petrov & Macdonald, RecSys 2023): ``n_negatives`` uniform negatives,
  positive term raised to beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha = n_negatives / (n_items
  - 1), t = ``gbce_t``: loss = -beta log sigma(s+) - sum_j log(1 - sigma(s-_j)).

Two options refine ``sampled_ce``: ``top_k_negatives=k`` keeps, per position, only the k
negatives (sampled and in-batch) with the largest logits as they enter the softmax (after the
logQ correction, a masked hit never), the top-k negative sampling of TRON (Wilm et al., RecSys
2023); ``logq_correction=False`` drops the correction (TRON's plain sampled softmax). With
uniform negatives alone (``sample_alpha=0``) every candidate's correction is the same constant,
so neither option changes which negatives are the top k.

The recipes people compare against, and what realises each (presets in :mod:`.config`, which
state where each value comes from and what differs from the authors' code):

======================  ============  ==========================================================
recipe                  preset        loss and options
======================  ============  ==========================================================
SASRec (paper)          ``paper``     ``bce``: one uniform negative per position, unseen items
SASRec + full CE        ``paper_ce``  ``ce`` (Klenitskiy & Vasilev)
gSASRec                 ``gsasrec``   ``gbce``, ``n_negatives=256``, ``gbce_t=0.75``, one draw
                                      of negatives per sequence
TRON                    ``tron``      ``sampled_ce``, ``sample_alpha=0`` (uniform, shared by the
                                      batch), ``in_batch_negatives``, ``top_k_negatives=100``,
                                      ``logq_correction=False``
GRU4Rec+ (the GRU4Rec   GRU4Rec's     :mod:`nextclick.models.gru4rec`: the mini-batch's targets
of TRON's comparison)   presets       plus ``n_sample`` popularity**alpha negatives shared by
                                      the batch, cross-entropy (optional logQ) or BPR-max; no
                                      top-k
======================  ============  ==========================================================

Deliberate deviations from the paper (measured with benchmarks/sasrec_amazon.py, or harmless):

1. ``positions="start"`` (default): the position index counts from the oldest KEPT click (1..t),
   not the padded slot (the paper: slot n is always the most recent click). With causal attention
   this makes the output at position t a function of clicks 1..t alone, identical in training (all
   positions of a sequence) and in inference (a prefix of t clicks), and lets evaluation score all
   positions of a session in one forward pass. ``positions="end"`` is the paper's slot indexing;
   evaluation then scores each prefix separately (slower, same results as serving).
2. Each epoch visits every training sequence once in a random order (the reference code samples
   users with replacement).
3. ``sampled_ce`` and ``gbce`` do not draw ``n_negatives`` for every position (gSASRec does): by
   default ``sampled_ce`` shares one draw across the mini-batch (one matrix product) and ``gbce``
   one draw per sequence (``neg_sharing``). Measured on amazon-games: batch-shared negatives make
   gBCE collapse (every logit pushed far below zero within ~5 epochs), per-sequence ones train as
   stably as per-position ones at a fraction of the cost; sampled softmax is fine batch-shared.
4. Attention has no output projection (as in the paper's formula and its code); Q/K/V have biases.
   K and V share one (2d x d) linear layer, each half with its own Xavier initialisation.
5. Adam uses beta2 = 0.98 and the embedding L2 (``l2``) is Adam's L2 penalty on the item
   embedding table, as in the reference code; dropout is applied to the attention weights, and
   (as in the reference code, unlike Eq. (4) read literally) not to the attention output.
6. Negatives for ``bce`` avoid the items of the sequence's kept window (T clicks + target), not of
   the whole user history.
7. Early stopping (``patience``, ``eval_every``) on a validation split restores the best weights;
   the paper trains a fixed number of epochs. Under ``torchrun`` the fit is data-parallel
   (:mod:`.train`): ``batch_size`` is the batch of all ranks together.
8. Dropout masks come from a seeded numpy generator (same maths as ``nn.Dropout``, cheaper than
   torch's CPU Bernoulli sampler), so a fit is reproducible without touching torch's global
   random state.
9. ``item_optimizer="sparse_adam"`` (an option; Adam on every row is the default): the item table
   gets Adam on the rows a batch reads only (lazy Adam, torch's SparseAdam), so a row's moments and
   value change only in the steps that read it; there is no dense (n_items x d) gradient, and a
   step's work does not grow with the catalogue. Sampled losses only (bce, sampled_ce, gbce), no
   ``l2``.

Speed (same results, less work): per-position layers run on the packed real clicks only and
attention on groups of rows of similar length, never on the padding of a T = 50 window (see
:class:`~nextclick.models.sasrec.net.Block`); the full softmax never materialises autograd's
(N, n_items) temporaries (see :func:`~nextclick.models.sasrec.losses.ce_loss`); evaluation runs
each session once for all its positions.

Where things are: :mod:`.config` (hyper-parameters, presets, checks), :mod:`.net` (the network),
:mod:`.losses`, :mod:`.train` (batches, negatives, epochs, early stopping), this module (the
recommender: fitting, scoring, live sessions, attention, artifacts). Padding is
:mod:`nextclick.data.batching`'s, negatives come from :mod:`nextclick.data.sampling`.

Inference from a list of clicks keeps the last T. :meth:`SASRec.attention` returns the attention
matrices of every block so a caller can see which past clicks drove a recommendation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from nextclick.data.batching import pad_arrays, pad_prefixes, trim_padding
from nextclick.data.holdout import hold_out_last_clicks
from nextclick.data.sessions import Sessions
from nextclick.errors import NextclickError
from nextclick.models import distributed
from nextclick.models.base import Recommender
from nextclick.models.live import LiveSessions
from nextclick.models.sasrec.config import PRESETS, SASRecConfig, check_config, valid_cutoffs
from nextclick.models.sasrec.net import SASRecNet, eval_mode
from nextclick.models.sasrec.train import train_net

__all__ = ["SASRec", "SASRecConfig"]

log = logging.getLogger(__name__)


class SASRec(Recommender):
    """SASRec; see the module docstring."""

    name = "sasrec"
    Config = SASRecConfig
    needs_torch = True
    presets = PRESETS
    renamed_presets = {"rsc15": "tuned_rsc15"}
    recommended = {"sessions like rsc15": "tuned_rsc15", "user sequences like amazon-games": "paper_ce",
                   "reproducing the paper": "paper"}
    data_parallel = True  # fits under torchrun, one rank per process (see .train)

    # ------------------------------------------------------------------ fitting
    def _device(self, fit: bool) -> torch.device:
        """``config.device``; training on an unavailable device is an error, while an artifact
        trained on a GPU loads on the CPU when this machine has none (a service, say)."""
        c = self.config
        try:
            dev = torch.device(c.device)
        except RuntimeError as e:
            raise NextclickError(f"{self.name}: device must be a torch device such as 'cpu' or 'cuda', got {c.device!r}") from e
        if fit and dev.type == "cuda" and torch.cuda.is_available():
            dev = distributed.local_device(dev)  # under torchrun: this rank's GPU
        if dev.type == "cuda" and not (torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()):
            if fit:
                raise NextclickError(f"{self.name}: device {c.device!r}, but torch sees no such CUDA device here "
                                     f"(torch.cuda.is_available() is {torch.cuda.is_available()}); use device=cpu")
            log.info("%s: the artifact names device %r, which this machine lacks: loading on the CPU", self.name, c.device)
            return torch.device("cpu")
        return dev

    def _build(self, fit: bool = False) -> None:
        check_config(self.config, self.name)
        self.device_ = self._device(fit)
        self.net_ = self._make_net().to(self.device_)

    def _make_net(self) -> torch.nn.Module:
        """The network; the models that share SASRec's trainer give theirs (same interface as
        :class:`SASRecNet`: ``item_emb``, ``forward``, ``forward_last``, ``reset_parameters``; dropout
        through :class:`~nextclick.models.sasrec.net.NumpyDropout`, whose masks the trainer seeds)."""
        return SASRecNet(self.n_items_, self.config)

    def _fit(self, train: Sessions, valid: Sessions | None) -> None:
        c = self.config
        threads = torch.get_num_threads()
        if c.n_threads > 0:
            torch.set_num_threads(c.n_threads)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(c.seed)
                self._build(fit=True)
                distributed.init(self.device_)  # under torchrun: join the group (rank 0 of 1 alone)
                self.net_.reset_parameters()
                held = valid is None and c.patience > 0 and c.holdout > 0
                fit_data = train
                if held:
                    fit_data, valid = hold_out_last_clicks(train, c.holdout, c.seed)
                    log.info("%s: no validation data: the last click of %d training sequences is held out to "
                             "choose the epoch (holdout=%g)", self.name, valid.n_sessions, c.holdout)
                if valid is not None:
                    valid_cutoffs(c)  # a bad metric name fails now, not after the first epochs
                validate = (lambda: self._validate(valid)) if valid is not None else None
                self.history_, best_epoch = train_net(self.net_, c, self.device_, self.n_items_, fit_data, validate)
                self.training_["curve"] = [{"epoch": int(h["epoch"]), "loss": float(h["loss"]), "seconds": float(h["epoch_seconds"]),
                                            **{f"valid_{k}": float(v) for k, v in h.get("valid", {}).items()}} for h in self.history_]
                if best_epoch is not None:
                    self.best_epoch_ = best_epoch
                if held:
                    # the model keeps its best epoch's weights: the held-out clicks are a small share of
                    # the training clicks, and another epoch on every click with a new optimiser state
                    # lowered test accuracy on rsc15-100k (docs/benchmarks.md)
                    self.training_["held_out"] = {"sequences": valid.n_sessions, "share": c.holdout, "best_epoch": best_epoch,
                                                  "epochs": len(self.history_)}
        finally:
            torch.set_num_threads(threads)

    def _validate(self, valid: Sessions) -> dict[str, float]:
        """Validation metrics with the core evaluator (full ranking; sampled ones too when
        ``valid_negatives`` > 0), keys like ``ndcg@10`` and ``sampled_hr@10``."""
        from nextclick.evaluate import evaluate  # lazy: evaluation sits above the models

        c = self.config
        neg = c.valid_negatives if c.valid_negatives > 0 else None
        res = evaluate(self, valid, cutoffs=valid_cutoffs(c), sampled_negatives=neg, seed=c.seed)
        out = {k: float(v) for k, v in res.metrics.items() if "@" in k}
        if res.sampled is not None:
            out.update({f"sampled_{k}": float(v) for k, v in res.sampled.items() if "@" in k})
        return out

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def _hidden(self, x: np.ndarray, last: np.ndarray) -> torch.Tensor:
        """Hidden states of the last ``last[b]`` positions of each left-padded row of ``x`` (B, T),
        concatenated row by row in position order: (sum(last), D)."""
        with eval_mode(self.net_):
            x = trim_padding(x)  # (B, t)
            t = x.shape[1]
            h = self.net_(x)  # (N, D)
            sel = np.arange(t)[None, :] >= (t - last)[:, None]  # (B, t)
            return h[torch.from_numpy(sel[x > 0]).to(self.device_)]

    @torch.no_grad()
    def _scores_from_hidden(self, h: torch.Tensor) -> np.ndarray:
        out = (h @ self.net_.item_emb.weight.T).float().cpu().numpy()  # (N, V + 1)
        out[:, 0] = -np.inf
        return out

    # ------------------------------------------------------------------ live sessions (serving)
    def _score(self, sessions: Sessions, sess: np.ndarray, plen: np.ndarray) -> np.ndarray:
        T = self.config.max_len
        out = np.empty((len(sess), self.n_items_ + 1), dtype=np.float32)
        for a in range(0, len(sess), 1024):
            s = slice(a, a + 1024)
            x, kept = pad_prefixes(sessions.items, sessions.offsets[sess[s]], plen[s], T)
            out[s] = self._scores_from_hidden(self._hidden(x, np.ones(len(x), dtype=np.int64)))
        return out

    def _windows(self, sessions: Sessions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Forward passes needed to score every evaluation prefix: (session, end, n_out). A window
        reads clicks ``[max(0, end - T), end)`` and yields the prefixes ``end - n_out + 1 .. end``."""
        T, L = self.config.max_len, sessions.lengths
        s = np.flatnonzero(L >= 2)
        n_pred = L[s] - 1
        if sessions.last_only:
            return s, n_pred, np.ones_like(s)
        if getattr(self.config, "positions", "start") == "end":  # positions depend on the prefix end: one pass per prefix
            sess, plen, _ = sessions.prefixes()
            return sess, plen, np.ones_like(sess)
        first = np.minimum(n_pred, T)  # one pass covers the first min(L - 1, T) prefixes ...
        extra = n_pred - first  # ... longer prefixes keep only their last T clicks: one pass each
        es = np.repeat(s, extra)
        ee = np.arange(int(extra.sum()), dtype=np.int64) - np.repeat(np.cumsum(extra) - extra, extra) + T + 1
        return (np.concatenate([s, es]), np.concatenate([first, ee]),
                np.concatenate([first, np.ones_like(es)]))

    def iter_scores(self, sessions: Sessions, batch_size: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """All positions of a session come from one forward pass (causal attention: the output at
        position t sees clicks 1..t only); ``last_only`` data scores just the last position."""
        self._check_fitted()
        ws, we, wm = self._windows(sessions)
        T = self.config.max_len
        # score blocks of <= 16 MB: larger ones are mmapped and page-faulted afresh on every batch
        batch_size = max(1, min(batch_size, 4_000_000 // (self.n_items_ + 1)))
        cum = np.cumsum(wm)
        a = 0
        while a < ws.size:
            b = int(np.searchsorted(cum, (cum[a - 1] if a else 0) + batch_size, side="right"))
            b = max(b, a + 1)
            s, e, m = ws[a:b], we[a:b], wm[a:b]
            x, _ = pad_prefixes(sessions.items, sessions.offsets[s], e, T)
            scores = self._scores_from_hidden(self._hidden(x, m))
            sess = np.repeat(s, m)
            plen = np.repeat(e - m, m) + np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m) + 1
            yield scores, sessions.items[sessions.offsets[sess] + plen], sess, plen
            a = b

    # ------------------------------------------------------------------ attention
    @torch.no_grad()
    def attention(self, session_items_idx: Sequence[int] | np.ndarray, per_head: bool = False) -> list[np.ndarray]:
        """Attention matrices of a session of INTERNAL indices, one per block.

        The session keeps its last T known clicks (t of them). Each matrix is (t, t) averaged over
        heads (``per_head=True``: (n_heads, t, t)); row i holds the weights with which position i
        (the prediction after click i) reads clicks 1..i of the kept window -- the last row explains
        the recommendation for the whole session. Rows sum to 1 over the visible clicks; entries
        right of the diagonal are 0.
        """
        self._check_fitted()
        s = np.asarray(session_items_idx, dtype=np.int64)
        s = s[(s > 0) & (s <= self.n_items_)][-self.config.max_len :]
        if s.size == 0:
            return []
        weights: list[torch.Tensor] = []
        with eval_mode(self.net_):
            self.net_(s[None, :], weights)
        if not weights:  # a network on this trainer without self-attention blocks (NARM, STAMP)
            raise NextclickError(f"{self.name}: no attention maps (only SASRec's self-attention blocks record them)")
        out = [w[0].cpu().numpy() for w in weights]  # (H, t, t) each
        return out if per_head else [w.mean(0) for w in out]

    def click_weights(self, session_items: Sequence[Any], block: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """For a live session of SHOP item ids: ``(item_ids, weights)`` -- the kept known clicks
        (oldest first) and the attention the next-click prediction pays to each in ``block``
        (default the last), averaged over heads. Weights sum to 1."""
        idx, _ = self.encode_session(session_items)
        idx = idx[-self.config.max_len :]
        mats = self.attention(idx)
        if not mats:
            return self.vocab_.decode(idx), np.zeros(0, dtype=np.float32)
        return self.vocab_.decode(idx), mats[block][-1].astype(np.float32)

    # ------------------------------------------------------------------ artifacts
    def _state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        with torch.random.fork_rng(devices=[]):  # the throw-away initialisation leaves torch's RNG alone
            self._build()
        self.net_.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
        self.net_.eval()

    # ------------------------------------------------------------------ evaluation queries
    def iter_queries(
        self, sessions: Sessions, batch_size: int = 1024
    ) -> Iterator[tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]]:
        """:meth:`iter_scores` without the scores: ``(queries, targets, sess, plen)`` with the
        hidden states (B, D) on the model's device in place of the score rows (the scores are
        ``queries @ item_emb.T``), batched by ``batch_size`` alone (``iter_scores`` also caps its
        batches by the size of their score block; where that cap does not bind, the batches are the same)."""
        self._check_fitted()
        ws, we, wm = self._windows(sessions)
        T = self.config.max_len
        cum = np.cumsum(wm)
        a = 0
        while a < ws.size:
            b = max(int(np.searchsorted(cum, (cum[a - 1] if a else 0) + batch_size, side="right")), a + 1)
            s, e, m = ws[a:b], we[a:b], wm[a:b]
            x, _ = pad_prefixes(sessions.items, sessions.offsets[s], e, T)
            sess = np.repeat(s, m)
            plen = np.repeat(e - m, m) + np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m) + 1
            yield self._hidden(x, m), sessions.items[sessions.offsets[sess] + plen], sess, plen
            a = b


class SASRecLive(LiveSessions):
    """SASRec's live sessions: no state of its own (the store keeps the clicks); the query is the
    hidden state at the last position over a session's last ``max_len`` known clicks."""

    model: SASRec

    def output_layer(self) -> tuple[torch.Tensor, None]:
        return self.model.net_.item_emb.weight.detach(), None

    def queries(self, states: np.ndarray | None, clicks: Sequence[np.ndarray]) -> torch.Tensor:
        m = self.model
        seqs = [np.asarray(c, dtype=np.int64) for c in clicks]
        x = trim_padding(pad_arrays([s[(s > 0) & (s <= m.n_items_)] for s in seqs], m.config.max_len)[0])  # (B, t)
        if ((x > 0).sum(1) == 0).any():  # not expected from the service (it answers those with popularity)
            raise NextclickError(f"{m.name}: a live session has no known click")
        with eval_mode(m.net_), torch.no_grad():
            h = m.net_.forward_last(x)
        return h.float().cpu().contiguous()


SASRec.Live = SASRecLive
