"""Model commands: train, tune, evaluate, recommend, export, and the list of models."""

from __future__ import annotations

import json
import logging
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from nextclick.cli.choices import Direction
from nextclick.errors import NextclickError


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
    items: Annotated[
        Optional[Path], typer.Option("--items", help="Item table (CSV or Parquet: id, title, category, optional price "
                                                      "and image URL) to keep in the artifact, for the service's demo page.")
    ] = None,
    tuned: Annotated[
        Optional[Path], typer.Option("--tuned", help="best.json (or its folder) of `nextclick tune MODEL`: train with the "
                                                      "best trial's parameters (-p overrides them).")
    ] = None,
) -> None:
    """Train MODEL and save it as an artifact directory (JSON config + vocab, safetensors weights).

    Under ``torchrun`` (several processes, on one machine or several) a model that trains
    data-parallel (sasrec; gru4rec with engine=torch) runs one rank per process; each rank reads the data, trains on its
    share of every batch, and rank 0 alone validates, prints and writes ``--out``."""
    import os

    from nextclick.data.dataset import load_sessions
    from nextclick.data.holdout import refuse_overlap, refuse_test_split
    from nextclick.models import get_model_class
    from nextclick.models.base import parse_params

    klass = get_model_class(model)
    params = parse_params(klass.Config, param or [])
    if tuned is not None:
        from nextclick.tune.study import read_best

        if preset is not None:
            raise NextclickError("train: give --preset or --tuned, not both (best.json holds the preset's values)")
        params = {**read_best(tuned, model), **params}
    rec = klass.from_preset(preset, **params)
    ranks = int(os.environ.get("WORLD_SIZE", "1"))
    if ranks > 1 and not getattr(rec, "data_parallel", False):
        raise NextclickError(f"train: {model} does not train data-parallel; run it without torchrun")
    main = os.environ.get("RANK", "0") == "0"
    refuse_test_split("--train", train)
    table = None
    if items is not None:
        from nextclick.data.items import ItemTable

        table = ItemTable.read(items)  # a bad table fails before the training
    tr, _ = load_sessions(train, "train")
    va = None
    if valid is not None:
        refuse_test_split("--valid", valid)
        va, rep = load_sessions(valid, "valid", vocab=tr.vocab)
        refuse_overlap(tr, va, train, valid)
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
        if table is not None:
            from nextclick.data.items import ARTIFACT_FILE

            table.write(Path(out) / ARTIFACT_FILE)
            described, total = table.coverage(rec.vocab_.ids)
            typer.echo(f"item table {items}: {len(table):,} rows, describing {described:,} of the model's {total:,} items")
    if ranks > 1:
        from nextclick.models import distributed

        distributed.barrier()  # the others wait until rank 0 has written the artifact
        distributed.close()


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
    if sampled < 0:
        raise NextclickError(f"--sampled must be >= 0 (0: no sampled metrics), got {sampled}")
    if te.n_predictions() == 0:
        raise NextclickError(f"{test}: no next-click prediction to evaluate (no session has two clicks the model knows)")
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
        typer.echo(json.dumps(_json_safe(out), allow_nan=False))
    else:
        typer.echo(f"model {rec.name} ({model_dir})")
        typer.echo(res.table(ks))


def _json_safe(x):  # type: ignore[no-untyped-def]
    """``x`` with every non-finite float as None: JSON has no NaN or Infinity."""
    if isinstance(x, float):
        return x if x == x and abs(x) != float("inf") else None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    return x


def recommend(
    model_dir: Annotated[Path, typer.Argument(help="Artifact directory written by `nextclick train`.")],
    items: Annotated[list[str], typer.Argument(help="The session's clicks so far, oldest first (the shop's item ids).")],
    k: Annotated[int, typer.Option("--k", "-k", help="How many items to recommend (1..1000).")] = 10,
    exclude_seen: Annotated[bool, typer.Option("--exclude-seen", help="Never recommend an item already clicked.")] = False,
    exclude_last: Annotated[
        Optional[bool],
        typer.Option("--exclude-last/--keep-last", help="Leave out the last click's item (default: when the model's "
                                                        "training data dropped consecutive repeats)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Recommend the next items for a session given its clicks."""
    from nextclick.models.base import Recommender

    if not 1 <= k <= 1000:
        raise NextclickError(f"--k must be between 1 and 1000, got {k}")
    rec = Recommender.load(model_dir)
    r = rec.recommend_detailed(items, k=k, exclude_seen=exclude_seen, exclude_last=exclude_last)
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
        for data, p in k.recommended.items():
            typer.echo(f"{'':<8}   recommended for {data}: --preset {p}")


class ExportFormat(str, Enum):
    """Formats of ``nextclick export``."""

    onnx = "onnx"


def export(
    model_dir: Annotated[Path, typer.Argument(help="Artifact directory written by `nextclick train` (gru4rec or sasrec).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the exported graph, item matrix and vocabulary to.")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="Export format.")] = ExportFormat.onnx,
) -> None:
    """Export a neural model's serving graph for other runtimes (ONNX: GRU4Rec's click step, SASRec's query).

    Writes the graph (step.onnx or query.onnx), output.safetensors (the item matrix W and bias b:
    scores = query @ W.T + b), vocab.json and export.json (names, shapes, how to score)."""
    from nextclick.models.export import export_onnx

    meta = export_onnx(model_dir, out)
    typer.echo(f"exported {meta['model']} as {fmt.value} (opset {meta['opset']}): {meta['graph']}, "
               f"{meta['output_layer']['file']}, {meta['vocab']} -> {out}")
