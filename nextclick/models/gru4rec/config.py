"""GRU4Rec's hyper-parameters (named and defaulted as in the official implementation), their
validation, and the presets, each written as its differences from the defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from nextclick.errors import NextclickError


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
    # With engine="torch": torch's intra-op threads.
    n_threads: int = 1
    # how a training step runs: "compiled" (numba loops with hand-written gradients, CPU only) or
    # "torch" (tensor operations and autograd, the same maths; the one that runs on a CUDA device
    # and across processes launched by torchrun)
    engine: Literal["compiled", "torch"] = "compiled"
    device: str = "cpu"  # the torch engine's device: "cpu", "cuda" or "cuda:<index>"
    # seconds of training after which it stops (at the next 64th step; the weights are kept as
    # they are then, and the artifact records where it stopped); 0 = no limit
    time_budget: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.layers, int):
            self.layers = (self.layers,)
        self.layers = tuple(int(x) for x in self.layers)  # JSON round trips give lists


def check_config(c: GRU4RecConfig) -> None:
    """Raise :class:`NextclickError` naming the first field out of range and what it expects."""

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
    for name in ("sample_alpha", "bpreg", "elu_param", "logq", "time_budget"):
        if getattr(c, name) < 0:
            raise bad(name, "a number >= 0")
    if c.n_sample and c.sample_cache_max_size < c.n_sample:
        raise bad("sample_cache_max_size", f"at least n_sample={c.n_sample}")
    if c.session_order not in ("time", "random"):
        raise bad("session_order", "'time' or 'random'")
    if c.engine not in ("compiled", "torch"):
        raise bad("engine", "'compiled' or 'torch'")
    if not (c.device == "cpu" or c.device == "cuda" or c.device.startswith("cuda:")):
        raise bad("device", "'cpu', 'cuda' or 'cuda:<index>'")
    if c.device != "cpu" and c.engine != "torch":
        raise bad("device", "'cpu' with engine='compiled' (the torch engine runs on CUDA devices)")



# The official rsc15 and RetailRocket settings share these differences from the defaults.
_XE_RSC15 = dict(batch_size=32, bpreg=0.0, elu_param=0.0, logq=1.0)
_OFFICIAL = dict(_XE_RSC15, dropout_p_hidden=0.4, learning_rate=0.2, momentum=0.2)
_RETAILROCKET = dict(
    layers=(224,), loss="bpr-max", batch_size=80, dropout_p_embed=0.5, dropout_p_hidden=0.05, momentum=0.4,
    sample_alpha=0.4, bpreg=1.95,
)

PRESETS: dict[str, dict[str, Any]] = {
    # the RSC15 cross-entropy values of the project's first GRU4Rec specification (the weakest of
    # the rsc15 settings on rsc15-100k; kept to compare against)
    "spec_rsc15": dict(_XE_RSC15, dropout_p_embed=0.1, learning_rate=0.1, sample_alpha=0.75),
    # the official repository's paramfiles/rsc15_xe_shared_100_best.py: the setting that reproduces
    # the official implementation's figures on rsc15-100k
    "official_rsc15": _OFFICIAL,
    # the official paramfiles/retailrocket_bprmax_shared_best.py: best BPR-max setting on RetailRocket
    "official_retailrocket": _RETAILROCKET,
    # chosen by `nextclick tune` (Optuna TPE, MRR@20) on rsc15-100k train_tr -> train_valid only, as
    # changes to an official setting (commands and trials: docs/benchmarks.md)
    "tuned_rsc15": dict(  # cross-entropy, n_sample 512; 30 trials
        _OFFICIAL, n_sample=512, dropout_p_embed=0.43, dropout_p_hidden=0.48, learning_rate=0.089, momentum=0.29,
        sample_alpha=0.6,
    ),
    "tuned_rsc15_bprmax": dict(  # the RetailRocket BPR-max network; 16 trials
        _RETAILROCKET, dropout_p_embed=0.58, dropout_p_hidden=0.32, learning_rate=0.0375, momentum=0.58,
        sample_alpha=0.44, bpreg=2.87,
    ),
}

# Old preset names, for a message that names the new one.
RENAMED = {"rsc15": "spec_rsc15", "rsc15_official": "official_rsc15", "retailrocket": "official_retailrocket",
           "rsc15_tuned": "tuned_rsc15", "rsc15_bprmax_tuned": "tuned_rsc15_bprmax"}
