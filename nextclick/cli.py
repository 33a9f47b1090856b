"""Command-line interface: a thin layer over the importable API.

User errors (:class:`NextclickError`) print one clear line to stderr and exit with status 2,
without a traceback. The choices of an option are those of the ``Literal`` type of the config
field it fills (:class:`ReadOptions`, :class:`PrepareOptions`, the service's :class:`Settings`,
:func:`nextclick.tune.tune`), so they are defined once. Reading those types imports polars and
numpy but never torch: torch, the models and the service are imported by the commands that need them.
"""

from __future__ import annotations

import json
import logging
import sys
import typing
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from nextclick.data.options import PrepareOptions, ReadOptions
from nextclick.errors import NextclickError
from nextclick.serve.settings import Settings
from nextclick.tune import Direction as _Direction

app = typer.Typer(
    name="nextclick",
    help="Session-based next-click recommendation: prepare click logs, train, evaluate, recommend.",
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
)
log = logging.getLogger("nextclick")


def _choices(name: str, owner: Any, field: str) -> type[Enum]:
    """A str ``Enum`` (what typer turns into choices) of the values of the ``Literal`` annotation of
    ``field`` of ``owner``, a dataclass or a function, in their order."""
    values = typing.get_args(typing.get_type_hints(owner)[field])
    return Enum(name, [(v, v) for v in values], type=str, module=__name__)


Fmt = _choices("Fmt", ReadOptions, "format")
TimeFmt = _choices("TimeFmt", ReadOptions, "time_format")
Split = _choices("Split", PrepareOptions, "split")
SplitBy = _choices("SplitBy", PrepareOptions, "split_by")
Direction = Enum("Direction", [(v, v) for v in typing.get_args(_Direction)], type=str, module=__name__)
ScoringMode = _choices("ScoringMode", Settings, "scoring")
ModelWorkerKind = _choices("ModelWorkerKind", Settings, "model_worker")
StoreKind = _choices("StoreKind", Settings, "store")


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every step (INFO) to stderr.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors on stderr.")] = False,
) -> None:
    level = logging.WARNING if quiet else (logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _read_options(session_col: str, item_col: str, time_col: str, user_col: str, fmt: Fmt, time_format: TimeFmt, names: str):
    return ReadOptions(
        session_col=session_col or None,
        item_col=item_col,
        time_col=time_col or None,
        user_col=user_col or None,
        format=fmt.value,
        time_format=time_format.value,
        names=[n.strip() for n in names.split(",")] if names else None,
    )


@app.command()
def prepare(
    input: Annotated[Path, typer.Argument(help="Click log: CSV, TSV, Parquet or whitespace `user item [time]` file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the prepared dataset.")],
    session_col: Annotated[
        str, typer.Option(help="Session id column; '' = none (build sessions from --user-col).")
    ] = "SessionId",
    item_col: Annotated[str, typer.Option(help="Item id column.")] = "ItemId",
    time_col: Annotated[str, typer.Option(help="Timestamp column; '' = none (line order is time order).")] = "Time",
    user_col: Annotated[str, typer.Option(help="User id column (optional; needed to build sessions or for --split loo).")] = "",
    format: Annotated[Fmt, typer.Option("--format", help="Input format; auto = from the file extension.")] = Fmt.auto,
    time_format: Annotated[
        TimeFmt, typer.Option(help="Timestamps: unix seconds, milliseconds, ISO-8601, or auto-detect.")
    ] = TimeFmt.auto,
    names: Annotated[str, typer.Option(help="Comma-separated column names for a file without a header row.")] = "",
    session_gap: Annotated[
        float, typer.Option(help="Inactivity gap in minutes that starts a new session (no session column).")
    ] = 30.0,
    drop_repeats: Annotated[
        bool, typer.Option("--drop-repeats/--keep-repeats", help="Drop consecutive clicks on the same item.")
    ] = True,
    min_session_length: Annotated[
        int, typer.Option(help="Remove sessions shorter than this (iterated with --min-item-support).")
    ] = 2,
    min_item_support: Annotated[int, typer.Option(help="Remove items with fewer clicks than this (iterated until stable).")] = 5,
    split: Annotated[
        Split, typer.Option(help="time: test = sessions starting in the last --test-days; loo: leave-one-out per user; none.")
    ] = Split.time,
    test_days: Annotated[float, typer.Option(help="Days at the end of the log that form the test set (time split).")] = 1.0,
    valid_days: Annotated[
        Optional[float], typer.Option(help="Days at the end of train that form `valid` (default: --test-days).")
    ] = None,
    split_by: Annotated[SplitBy, typer.Option(help="Assign a session to test by its start or end time.")] = SplitBy.start,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Write into a non-empty --out that is not a nextclick dataset.")
    ] = False,
) -> None:
    """Read a raw click log, build sessions, filter, split, and write a prepared dataset.

    Never writes over its input; a non-empty --out must be a dataset nextclick wrote, or --overwrite.
    """
    from nextclick.data.preprocess import prepare as run_prepare

    opts = PrepareOptions(
        read=_read_options(session_col, item_col, time_col, user_col, format, time_format, names),
        session_gap=session_gap * 60.0,
        drop_repeats=drop_repeats,
        min_session_length=min_session_length,
        min_item_support=min_item_support,
        split=split.value,
        test_days=test_days,
        valid_days=valid_days,
        split_by=split_by.value,
    )
    ds = run_prepare(input, out, opts, overwrite=overwrite)
    for r in ds.meta["report"]:
        extra = ", ".join(f"{k}={v}" for k, v in r["details"].items() if k != "cut_time")
        typer.echo(f"{r['step']:<16} removed {r['removed_events']:>10,} events {r['removed_sessions']:>9,} sessions  {extra}")
    for role, st in ds.meta["stats"].items():
        typer.echo(f"{role:<9} {st['events']:>11,} events {st['sessions']:>10,} sessions {st['items']:>8,} items")
    typer.echo(f"catalogue {len(ds.meta['vocab']['ids']):,} items (index 0 = padding); written to {out}")


@app.command()
def train(
    model: Annotated[str, typer.Argument(help="Model name (see `nextclick models`).")],
    train: Annotated[
        Path, typer.Option("--train", help="Prepared dataset dir (its train split) or a SessionId/ItemId/Time click file.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Artifact directory to write.")],
    valid: Annotated[
        Optional[Path], typer.Option("--valid", help="Validation data (dataset dir -> its valid split, or a click file).")
    ] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Named hyper-parameter preset of the model.")] = None,
    param: Annotated[
        Optional[list[str]], typer.Option("--param", "-p", help="Override a hyper-parameter: key=value (repeatable).")
    ] = None,
) -> None:
    """Train MODEL and save it as an artifact directory (JSON config + vocab, safetensors weights).

    Under ``torchrun`` (several processes, on one machine or several) a model that trains
    data-parallel (sasrec; gru4rec with engine=torch) runs one rank per process; each rank reads the data, trains on its
    share of every batch, and rank 0 alone validates, prints and writes ``--out``."""
    import os

    from nextclick.data.dataset import load_sessions
    from nextclick.models import get_model_class
    from nextclick.models.base import parse_params

    klass = get_model_class(model)
    params = parse_params(klass.Config, param or [])
    rec = klass.from_preset(preset, **params)
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    if ranks > 1 and not getattr(rec, "data_parallel", False):
        raise NextclickError(f"train: {model} does not train data-parallel; run it without torchrun")
    main = os.environ.get("RANK", "0") == "0"
    tr, _ = load_sessions(train, "train")
    va = None
    if valid is not None:
        va, rep = load_sessions(valid, "valid", vocab=tr.vocab)
        if main:
            _report_encode(rep, valid)
    if main:
        on = f" ({ranks} ranks)" if ranks > 1 else ""
        typer.echo(f"training {model} on {tr.n_events:,} clicks / {tr.n_sessions:,} sessions / {tr.n_items:,} items{on}",
                   err=True)
    rec.fit(tr, va)
    if main:
        rec.save(out)
        typer.echo(f"trained {model} in {rec.fit_seconds_:.2f} s -> {out}")
    if ranks > 1:
        from nextclick.models import distributed

        distributed.barrier()  # the others wait until rank 0 has written the artifact
        distributed.close()


@app.command()
def tune(
    model: Annotated[str, typer.Argument(help="Model name (see `nextclick models`).")],
    space: Annotated[
        str,
        typer.Option(
            "--space",
            help='Search space: a JSON file or inline JSON, e.g. \'{"k": {"low": 50, "high": 500}, '
            '"decay": {"choices": ["linear", "div"]}}\' (low/high + optional log, step; or choices).',
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for trials.csv and best.json.")],
    data: Annotated[
        Optional[Path], typer.Option("--data", help="Prepared dataset dir: trains on train_tr (loo: train), scores on valid.")
    ] = None,
    train: Annotated[
        Optional[Path], typer.Option("--train", help="Training click file, e.g. train_tr.tsv (with --valid).")
    ] = None,
    valid: Annotated[
        Optional[Path], typer.Option("--valid", help="Validation click file, e.g. train_valid.tsv (with --train).")
    ] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Named preset of the model as the base parameters.")] = None,
    param: Annotated[
        Optional[list[str]], typer.Option("--param", "--fixed", "-p", help="Fix a hyper-parameter: key=value (repeatable).")
    ] = None,
    trials: Annotated[int, typer.Option("--trials", help="New trials to run.")] = 20,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Start no new trial after this many seconds.")] = None,
    metric: Annotated[str, typer.Option("--metric", help="Validation metric: recall@K, mrr@K, ndcg@K, ...")] = "mrr@20",
    direction: Annotated[Direction, typer.Option("--direction", help="Whether a higher or lower metric is better.")] = (
        Direction.maximize
    ),
    seed: Annotated[int, typer.Option("--seed", help="Seed of the TPE sampler (same seed, same trials).")] = 0,
    storage: Annotated[
        Optional[str], typer.Option("--storage", help="Optuna RDB URL (sqlite:///tune.db) to keep and resume the study.")
    ] = None,
    study_name: Annotated[
        Optional[str], typer.Option("--study-name", help="Study name in --storage (default nextclick-MODEL-METRIC).")
    ] = None,
) -> None:
    """Search MODEL's hyper-parameters with Optuna on validation data only (the test split is never read)."""
    from nextclick.models import get_model_class
    from nextclick.models.base import parse_params
    from nextclick.tune import check_arguments, load_tuning_data, require_optuna
    from nextclick.tune import tune as run_tune

    # every argument is checked before any data is read
    fixed = parse_params(get_model_class(model).Config, param or [])
    klass, search = check_arguments(
        model, space, preset=preset, fixed=fixed, metric=metric, direction=direction.value, n_trials=trials, timeout=timeout
    )
    optuna = require_optuna()
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    d = load_tuning_data(data, train, valid)
    typer.echo(
        f"tuning {model} on {d.train.n_events:,} clicks / {d.train.n_sessions:,} sessions ({d.sources['train']}), "
        f"scoring {metric} on {d.valid.n_predictions():,} predictions ({d.sources['valid']})",
        err=True,
    )
    res = run_tune(
        klass,
        d,
        search,
        preset=preset,
        fixed=fixed,
        metric=metric,
        direction=direction.value,
        n_trials=trials,
        timeout=timeout,
        seed=seed,
        storage=storage,
        study_name=study_name,
        out=out,
        echo=lambda line: typer.echo(line, err=True),
    )
    typer.echo(f"best {metric}={res.best_value:.4f} at trial {res.best_trial} ({res.n_complete} complete, {res.n_failed} failed)")
    typer.echo(f"params {json.dumps(res.best_params, sort_keys=True)} -> {out}/best.json, {out}/trials.csv")


def _report_encode(rep, path) -> None:
    d = rep.as_dict()
    if any(d.values()):
        typer.echo(
            f"{path}: removed {d['unknown_item_events_removed']:,} clicks on items unknown to the model, then "
            f"{d['short_sessions_removed']:,} sessions left shorter than 2 ({d['short_session_events_removed']:,} clicks)",
            err=True,
        )


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="Artifact directory written by `nextclick train`.")],
    test: Annotated[
        Path, typer.Option("--test", help="Prepared dataset dir (its test split) or a SessionId/ItemId/Time click file.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with every metric.")] = False,
    cutoffs: Annotated[str, typer.Option(help="Comma-separated K values.")] = "1,5,10,20",
    by_length: Annotated[bool, typer.Option("--by-length", help="Also break Recall@20 / MRR@20 down by session length.")] = False,
    sampled: Annotated[
        int, typer.Option("--sampled", help="ALSO rank against N uniform negatives (paper comparison only; labelled).")
    ] = 0,
    batch_size: Annotated[int, typer.Option(help="Predictions scored per batch.")] = 512,
    seed: Annotated[int, typer.Option(help="Seed for sampled negatives and for --max-sessions.")] = 0,
    max_sessions: Annotated[
        Optional[int],
        typer.Option(
            "--max-sessions",
            help="Evaluate a random subset of N test sessions (drawn with --seed), stated as such in the output; "
            "each prediction still ranks the full catalogue (not sampled negatives).",
        ),
    ] = None,
    chunk_items: Annotated[
        Optional[int],
        typer.Option(
            "--chunk-items",
            help="Catalogue columns scored at once: a batch holds at most batch-size x N scores (default: "
            "nextclick.evaluate.CHUNK_ITEMS); 0: whole score rows whatever the catalogue.",
        ),
    ] = None,
) -> None:
    """Next-click evaluation at every position of every test session, ranking the FULL catalogue.

    Large catalogues are ranked in chunks of --chunk-items columns (GRU4Rec, SASRec: exactly the
    ranks of whole rows, with no predictions x catalogue matrix in memory); other models score
    fewer predictions per batch."""
    from nextclick.data.dataset import load_sessions
    from nextclick.evaluate import evaluate as run_eval
    from nextclick.models.base import Recommender

    rec = Recommender.load(model_dir)
    te, rep = load_sessions(test, "test", vocab=rec.vocab_)
    _report_encode(rep, test)
    try:
        ks = [int(k) for k in cutoffs.split(",") if k.strip()]
    except ValueError:
        raise NextclickError(f"--cutoffs {cutoffs!r}: expected comma-separated integers") from None
    if not ks or min(ks) < 1:
        raise NextclickError("--cutoffs: every K must be >= 1")
    if batch_size < 1:
        raise NextclickError(f"--batch-size must be >= 1, got {batch_size}")
    if max_sessions is not None and max_sessions < 1:
        raise NextclickError(f"--max-sessions must be >= 1, got {max_sessions}")
    if chunk_items is not None and chunk_items < 0:
        raise NextclickError(f"--chunk-items must be >= 0 (0: whole score rows), got {chunk_items}")
    chunking = {} if chunk_items is None else {"chunk_items": chunk_items or None}
    res = run_eval(
        rec,
        te,
        cutoffs=ks,
        batch_size=batch_size,
        sampled_negatives=sampled or None,
        by_length=by_length,
        seed=seed,
        progress=not as_json,
        max_sessions=max_sessions,
        **chunking,
    )
    if as_json:
        out = {"model": rec.name, **res.as_dict(), **{f"filtered_{k}": v for k, v in rep.as_dict().items()}}
        typer.echo(json.dumps(out))
    else:
        typer.echo(f"model {rec.name} ({model_dir})")
        typer.echo(res.table(ks))


@app.command()
def recommend(
    model_dir: Annotated[Path, typer.Argument(help="Artifact directory written by `nextclick train`.")],
    items: Annotated[list[str], typer.Argument(help="The session's clicks so far, oldest first (the shop's item ids).")],
    k: Annotated[int, typer.Option("--k", "-k", help="How many items to recommend (1..1000).")] = 10,
    exclude_seen: Annotated[bool, typer.Option("--exclude-seen", help="Never recommend an item already clicked.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Recommend the next items for a session given its clicks."""
    from nextclick.models.base import Recommender

    if not 1 <= k <= 1000:
        raise NextclickError(f"--k must be between 1 and 1000, got {k}")
    rec = Recommender.load(model_dir)
    r = rec.recommend_detailed(items, k=k, exclude_seen=exclude_seen)
    if r.unknown:
        typer.echo(f"ignored {len(r.unknown)} unknown item id(s): {' '.join(map(str, r.unknown[:20]))}", err=True)
    if r.fallback:
        typer.echo("no known item in the session: recommending the most popular items", err=True)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "items": r.items.tolist(),
                    "scores": [float(s) for s in r.scores],
                    "unknown": [str(u) for u in r.unknown],
                    "fallback": r.fallback,
                }
            )
        )
    else:
        for i, (item, score) in enumerate(zip(r.items.tolist(), r.scores.tolist()), 1):
            typer.echo(f"{i:>3}  {item}  {score:.4f}")


@app.command()
def models() -> None:
    """List the available models, their hyper-parameters and presets."""
    import dataclasses

    from nextclick.models import available_models, get_model_class

    for name in available_models():
        try:
            k = get_model_class(name)
        except ImportError as e:  # e.g. torch missing
            typer.echo(f"{name:<8} (unavailable: {e})")
            continue
        params = ", ".join(
            f"{f.name}={f.default!r}" if f.default is not dataclasses.MISSING else f.name for f in dataclasses.fields(k.Config)
        )
        typer.echo(f"{name:<8} {params}")
        for p, v in k.presets.items():
            typer.echo(f"{'':<8}   preset {p}: {v}")


@app.command()
def generate(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Output click file (.parquet, .csv or .tsv), or a directory for Parquet parts.")
    ],
    size: Annotated[
        str, typer.Option(help="Named size: small (the default shop), otto (OTTO's size), otto-tenth; written as parts.")
    ] = "",
    n_sessions: Annotated[Optional[int], typer.Option(help="Sessions to generate (default: the size's).")] = None,
    n_items: Annotated[Optional[int], typer.Option(help="Catalogue size (default: the size's).")] = None,
    n_categories: Annotated[Optional[int], typer.Option(help="Categories (default: the size's).")] = None,
    days: Annotated[Optional[float], typer.Option(help="Days the log spans (default: the size's).")] = None,
    chunk_sessions: Annotated[int, typer.Option(help="Sessions per Parquet part (directory output).")] = 250_000,
    with_sessions: Annotated[
        bool,
        typer.Option(
            "--with-sessions/--users-only",
            help="Write SessionId (else only UserId; sessions are rebuilt by `prepare --session-col ''`).",
        ),
    ] = True,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Write a synthetic shop's click log (the built-in default data).

    A file name writes one file from memory; a directory (or --size) writes the log chunk by chunk
    as DIR/clicks/part-NNNNN.parquet with the item table in DIR/items.parquet."""
    from nextclick.data.synthetic import generate_shop, shop_size, write_shop

    given = {"n_sessions": n_sessions, "n_items": n_items, "n_categories": n_categories, "days": days}
    cfg = shop_size(size or "small", seed=seed, **{k: v for k, v in given.items() if v is not None})
    suffix = out.suffix.lower()
    if size or not suffix:
        counts = write_shop(cfg, out, chunk_sessions=chunk_sessions, with_sessions=with_sessions)
        typer.echo(
            f"wrote {counts['clicks']:,} clicks ({counts['sessions']:,} sessions, {counts['items']:,} items) "
            f"in {counts['parts']} parts to {out / 'clicks'}; items in {out / 'items.parquet'}"
        )
        return
    shop = generate_shop(cfg)
    df = shop.clicks if with_sessions else shop.clicks.drop("SessionId")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        df.write_parquet(out)
    elif suffix in (".csv", ".tsv"):
        df.write_csv(out, separator="," if suffix == ".csv" else "\t")
    else:
        raise NextclickError(f"--out {out}: use a .parquet, .csv or .tsv file name, or a directory")
    typer.echo(f"wrote {df.height:,} clicks to {out}")


@app.command()
def quickstart(
    out: Annotated[Path, typer.Option("--out", "-o", help="Working directory for data and models.")] = Path("runs/quickstart"),
    n_sessions: Annotated[int, typer.Option(help="Sessions in the synthetic shop.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed of the shop.")] = 0,
    model: Annotated[
        Optional[list[str]], typer.Option("--model", "-m", help="Only these models (repeatable); default: all.")
    ] = None,
) -> None:
    """Main job on built-in data: synthetic shop -> prepare -> train every model -> leaderboard -> replay."""
    from nextclick.data.synthetic import ShopConfig
    from nextclick.quickstart import run_quickstart

    run_quickstart(out, ShopConfig(n_sessions=n_sessions, seed=seed), models=model or None, echo=typer.echo)


@app.command()
def serve(
    model_dir: Annotated[Path, typer.Argument(help="Artifact directory written by `nextclick train`.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    store: Annotated[
        StoreKind, typer.Option(help="Session store: in-process (TTL + size bound) or Redis (shared by replicas).")
    ] = StoreKind.memory,
    redis_url: Annotated[str, typer.Option(help="Redis URL for --store redis.")] = "redis://127.0.0.1:6379/0",
    session_ttl: Annotated[float, typer.Option(help="Seconds a session lives after its last click.")] = 1800.0,
    max_sessions: Annotated[
        int, typer.Option(help="In-memory store: most sessions kept (least recently used go first).")
    ] = 1_000_000,
    max_k: Annotated[int, typer.Option(help="Largest k a request may ask for.")] = 100,
    max_batch: Annotated[int, typer.Option(help="Most requests scored together in one model call.")] = 64,
    scoring: Annotated[
        ScoringMode,
        typer.Option(help="Top-k of GRU4Rec/SASRec: float32 product over every item, or fp16 (an int8/fp16 copy "
                     "bounds the scores, the items that can reach the top k are scored exactly: the same answers), "
                     "or auto (fp16 for item matrices over 8 MB)."),
    ] = ScoringMode.auto,
    model_worker: Annotated[
        ModelWorkerKind,
        typer.Option(help="Run the model in its own process (default: it and the event loop then do not share "
                     "Python's GIL) or on a thread of the service process."),
    ] = ModelWorkerKind.process,
    admin_token_env: Annotated[
        str, typer.Option(help="Environment variable holding the token for POST /admin/reload (unset: reload via SIGHUP only).")
    ] = "NEXTCLICK_ADMIN_TOKEN",
    body_timeout: Annotated[
        float, typer.Option(help="Seconds a client may take to send a request body (then 408).")
    ] = 10.0,
    models_dir: Annotated[
        Optional[Path], typer.Option(help="POST /admin/reload loads only artifacts under this directory "
                                          "(default: MODEL_DIR's parent).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Serve next-click recommendations over HTTP (FastAPI/uvicorn; OpenAPI at /docs)."""
    import os

    import uvicorn

    from nextclick.models.base import Recommender
    from nextclick.serve.app import create_app

    Recommender.load(model_dir)  # fail fast with a clear error before binding the port
    settings = Settings(
        model_dir=str(model_dir),
        store=store.value,
        redis_url=redis_url,
        session_ttl=session_ttl,
        max_sessions=max_sessions,
        max_k=max_k,
        max_batch=max_batch,
        scoring=scoring.value,
        model_worker=model_worker.value,
        admin_token=os.environ.get(admin_token_env) or None,
        body_timeout=body_timeout,
        models_dir=str(models_dir) if models_dir is not None else None,
    )
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


def main() -> None:
    try:
        app()
    except NextclickError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
