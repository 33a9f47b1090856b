"""SASRec's hyper-parameters, its presets and their checks (no torch).

The defaults are the paper's network (Kang & McAuley 2018, Sec. IV-C: 2 blocks, 1 head, d = 50,
T = 50, dropout 0.5, lr 0.001, batch 128) trained with full cross-entropy; see
:mod:`nextclick.models.sasrec.model` for what each option changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from nextclick.errors import NextclickError

Loss = Literal["bce", "ce", "sampled_ce", "gbce"]
LOSSES: tuple[str, ...] = ("bce", "ce", "sampled_ce", "gbce")


@dataclass
class SequenceConfig:
    """How a next-item network over left-padded sequences is trained and validated: SASRec's,
    and that of the models that share its trainer (:mod:`nextclick.models.sasrec.train`)."""

    max_len: int = 50  # T: most recent clicks kept per sequence
    hidden: int = 50  # d: embedding and hidden size
    dropout: float = 0.5  # the paper's value for the sparse Amazon data (0.2 for MovieLens)
    lr: float = 0.001
    batch_size: int = 128
    n_epochs: int = 200
    l2: float = 0.0  # L2 penalty on the item embeddings
    # the item table's optimiser: "adam" (every row, every step: dense gradient and update) or
    # "sparse_adam" (Adam on the rows a batch reads only, torch's SparseAdam; sampled losses)
    item_optimizer: Literal["adam", "sparse_adam"] = "adam"
    loss: Loss = "ce"
    bce_exclude_seen: bool = True  # bce: the negative is never an item of the sequence (the paper's sampler)
    n_negatives: int = 256  # sampled_ce / gbce
    gbce_t: float = 0.75  # gBCE calibration: 0 = plain BCE with n_negatives, 1 = fully calibrated
    sample_alpha: float = 1.0  # sampled_ce: negatives ~ popularity**alpha (0 = uniform)
    # sampled_ce: the batch's other targets are negatives too (mixed negatives, both sources' logQ)
    in_batch_negatives: bool = False
    # who shares a draw of n_negatives: "batch" (all positions of a mini-batch), "sequence" (the
    # positions of one sequence); "auto" = batch for sampled_ce, sequence for gbce
    neg_sharing: Literal["auto", "batch", "sequence"] = "auto"
    # sampled_ce: of each position's negatives (sampled and in-batch), only the k with the highest
    # logits as they enter the softmax (logQ-corrected, hits masked) take part (TRON's top-k
    # negative sampling); 0 = all of them
    top_k_negatives: int = 0
    # sampled_ce: subtract each candidate's log sampling probability (logQ); False = the plain
    # sampled softmax over raw scores (TRON's)
    logq_correction: bool = True
    patience: int = 5  # evaluations without improvement before stopping (0 = never stop early)
    # without validation data, the last click of this share of the training sequences is held out
    # to early-stop on (0 = no hold-out: all n_epochs)
    holdout: float = 0.1
    eval_every: int = 1  # epochs between validation evaluations
    # full-ranking metric (Recall@20: session recommendation's headline); "sampled_ndcg@10" etc. use valid_negatives
    valid_metric: str = "recall@20"
    valid_negatives: int = 100  # negatives per target for the sampled validation metrics (0 = none)
    seed: int = 0
    device: str = "cpu"
    n_threads: int = 1  # torch CPU threads during fit (0 = torch's setting); the ops are small
    progress: bool = True  # tqdm bar per epoch


@dataclass
class SASRecConfig(SequenceConfig):
    n_blocks: int = 2
    n_heads: int = 1
    pre_ln: bool = False  # see the module docstring of nextclick.models.sasrec.model
    positions: Literal["start", "end"] = "start"  # "end" = the paper's padded-slot positions
    scale_emb: bool = True  # multiply item embeddings by sqrt(d) at the input (reference code)


# Each preset states only what differs from SASRecConfig's defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # Kang & McAuley 2018, Sec. IV-C, amazon-games: the default network, BCE with one negative,
    # padded-slot positions
    "paper": dict(loss="bce", positions="end", valid_metric="ndcg@10", patience=3),
    # the same network trained with full softmax cross-entropy (the default loss)
    "paper_ce": dict(positions="end", valid_metric="ndcg@10", patience=3),
    # rsc15 sessions: chosen on rsc15-100k train_tr -> train_valid only (grid over dropout, hidden,
    # lr, max_len with CE; best validation Recall@20 at epoch 16), never on test; the epoch count
    # is part of the choice, so nothing is held out to choose it again
    "tuned_rsc15": dict(hidden=100, dropout=0.3, n_epochs=16, holdout=0.0),
    # gSASRec (Petrov & Macdonald, RecSys 2023): gBCE with k = 256 uniform negatives per positive
    # and t = 0.75, the paper's recommended values (README and ML-1M config of the authors' code),
    # both already SASRecConfig's defaults; d = 128 as in that config. Differs from the authors'
    # code: one draw of negatives per sequence, not per position (neg_sharing, see model.py),
    # input and output share the item table (theirs has separate ones), T = 50 (theirs 200, for
    # user histories), the loss sums the negatives' terms (theirs averages pos and negs: a scale)
    "gsasrec": dict(loss="gbce", hidden=128),
    # TRON (Wilm et al., RecSys 2023; configs/tron/otto.json and yoochoose.json of the authors'
    # code, diginetica.json differing in dropout 0.2 and 100 epochs): sampled softmax, no logQ,
    # uniform negatives shared by the batch plus in-batch negatives, of which the top 100 by score
    # enter the softmax; d = 200, 2 blocks, pre-LN (theirs: norm_first), dropout 0.05, lr 0.0005,
    # batch 128, T = 50, 10 epochs. Differs: n_negatives 4096 uniform, not 16384, scaled to a CPU
    # (on rsc15-100k's 2,933 items 16384 draws repeat each item ~5.6 times and took 2.5x the epoch
    # time, one thread); the in-batch negatives are all the batch's other targets (theirs: 127
    # clicks drawn from the other sessions of the batch, per session); only a candidate equal to
    # the target is masked (theirs drop the batch's clicks from the uniform draw and a session's
    # own clicks from its in-batch ones); the epoch is chosen on a 10% hold-out of the training
    # data (theirs: the checkpoint with the best Recall@20 on the split they evaluate on)
    "tron": dict(loss="sampled_ce", sample_alpha=0.0, in_batch_negatives=True, n_negatives=4096, top_k_negatives=100,
                 logq_correction=False, hidden=200, pre_ln=True, dropout=0.05, lr=0.0005, n_epochs=10),
}


def check_config(c: SequenceConfig, name: str = "sasrec") -> None:
    """Raise :class:`NextclickError` naming the first parameter out of range (``name``: the model's)."""
    for key in ("max_len", "hidden", "n_blocks", "n_heads", "batch_size"):
        if hasattr(c, key) and getattr(c, key) < 1:
            raise NextclickError(f"{name}: {key} must be >= 1, got {getattr(c, key)}")
    if not 0.0 <= c.dropout < 1.0:
        raise NextclickError(f"{name}: dropout must be in [0, 1), got {c.dropout}")
    if c.loss not in LOSSES:
        raise NextclickError(f"{name}: loss must be bce, ce, sampled_ce or gbce, got {c.loss!r}")
    if getattr(c, "positions", "start") not in ("start", "end"):
        raise NextclickError(f"{name}: positions must be 'start' or 'end', got {c.positions!r}")
    if not 0.0 <= c.holdout < 1.0:
        raise NextclickError(f"{name}: holdout must be in [0, 1), got {c.holdout}")
    if c.eval_every < 1:
        raise NextclickError(f"{name}: eval_every must be >= 1, got {c.eval_every}")
    if c.neg_sharing not in ("auto", "batch", "sequence"):
        raise NextclickError(f"{name}: neg_sharing must be auto, batch or sequence, got {c.neg_sharing!r}")
    if c.in_batch_negatives and c.loss != "sampled_ce":
        raise NextclickError(f"{name}: in_batch_negatives needs loss=sampled_ce, got {c.loss}")
    if c.top_k_negatives < 0:
        raise NextclickError(f"{name}: top_k_negatives must be >= 0 (0 = off), got {c.top_k_negatives}")
    if c.loss != "sampled_ce" and (c.top_k_negatives > 0 or not c.logq_correction):
        raise NextclickError(f"{name}: top_k_negatives and logq_correction need loss=sampled_ce, got {c.loss}")
    if c.item_optimizer not in ("adam", "sparse_adam"):
        raise NextclickError(f"{name}: item_optimizer must be adam or sparse_adam, got {c.item_optimizer!r}")
    if c.item_optimizer == "sparse_adam" and (c.loss == "ce" or c.l2 > 0):
        raise NextclickError(f"{name}: item_optimizer=sparse_adam needs a sampled loss (bce, sampled_ce, gbce) and "
                             f"l2=0, got loss={c.loss}, l2={c.l2}")
    if c.loss in ("sampled_ce", "gbce") and c.n_negatives < 1:
        raise NextclickError(f"{name}: loss {c.loss} needs n_negatives >= 1, got {c.n_negatives}")


def neg_sharing(c: SequenceConfig) -> str:
    """``neg_sharing`` with ``"auto"`` resolved: sequence for gbce, batch otherwise."""
    if c.neg_sharing != "auto":
        return c.neg_sharing
    return "sequence" if c.loss == "gbce" else "batch"


def valid_cutoffs(c: SequenceConfig) -> tuple[int, ...]:
    """The cutoffs validation evaluates: 10, 20 and the K of ``valid_metric``, which is checked."""
    metric = c.valid_metric
    name, _, k = metric.removeprefix("sampled_").partition("@")
    known = ("recall", "mrr", "ndcg", "hr") if metric.startswith("sampled_") else ("recall", "mrr", "ndcg")
    if name not in known or not k.isdigit() or int(k) < 1:
        raise NextclickError(
            f"sasrec: valid_metric {metric!r} not understood; expected recall@K, mrr@K or ndcg@K (full ranking) "
            "or sampled_hr@K, sampled_ndcg@K, sampled_mrr@K (with valid_negatives > 0)"
        )
    if metric.startswith("sampled_") and c.valid_negatives < 1:
        raise NextclickError(f"sasrec: valid_metric {metric!r} needs valid_negatives >= 1")
    return tuple(sorted({10, 20, int(k)}))
