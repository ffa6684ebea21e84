"""``predict`` and ``tune``: apply any trained run to image files; search hyper-parameters."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from medanomaly.cli.pacs import KEY_FILE, KEYED_IDS, MODALITY_SERIES, PAIR_BY, REGISTER_TO_FIRST, RESAMPLE_TO_FIRST


def _format_prediction(path: Path, prediction) -> str:
    probs = " ".join(f"{c}={p:.3f}" for c, p in zip(prediction.class_names, prediction.scores, strict=True))
    if prediction.abstained:
        from medanomaly.types import quality_check_failed

        reason = "a quality check failed" if quality_check_failed(prediction.flags) else "low confidence"
        call = f"ABSTAIN ({reason}; top class {prediction.label})"
    else:
        call = prediction.label
    found = f", {len(prediction.findings)} finding(s)" if prediction.findings else ""
    flags = f" {{{', '.join(prediction.flags)}}}" if prediction.flags else ""
    return f"{path.name}: {call}{found}  [{probs}]{flags}"


def _in_order(paths: list[Path], refused: dict, predicted):
    """``predict_paths``' results with the ``refused`` inputs' errors in their places (input order)."""
    for path in paths:
        yield (path, refused[path], None) if path in refused else next(predicted)


def _fusion_inputs(paths: list[Path]) -> dict[str, Path | None]:
    """``MOD=path`` arguments of a fusion prediction (``MOD=-`` marks a missing modality)."""
    from medanomaly.errors import InputError

    out: dict[str, Path | None] = {}
    for arg in map(str, paths):
        if "=" not in arg:
            raise InputError("a fusion run takes MODALITY=path arguments (MODALITY=- when missing)", arg)
        name, _, value = arg.partition("=")
        out[name] = None if value in ("", "-") else Path(value)
    return out


def register(app: typer.Typer) -> None:
    @app.command()
    def predict(
        run: Path = typer.Argument(..., help="Run folder written by `medanomaly train` (any task)."),
        paths: list[Path] = typer.Argument(..., help="Image files (DICOM, NIfTI, NRRD, PNG...); fusion: MOD=path."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Also write <image>.json (+ findings, maps) here."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object per image."),
        series_filter: list[str] = typer.Option([], "--series-filter", help="Archive: keep series matching "
                                                "KEY=VALUE (e.g. Modality=CT); repeatable."),
        engine: str = typer.Option("local", "--engine", help="Archive: local (one machine) or ray."),
        address: str | None = typer.Option(None, "--address", help="Archive: Ray cluster address (--engine ray)."),
        dicom: bool = typer.Option(True, "--dicom/--no-dicom", help="Archive: write DICOM SEG + SR per series."),
        frame: int | None = typer.Option(None, "--frame", min=0, help="Cine loops (frames in time) or 4D images: "
                                         "predict this frame or volume (0-based) of each."),
        explain: str | None = typer.Option(None, "--explain", help="Archive: also explain each call with this "
                                           "method (gradcam, occlusion, ...), written as the series' Parametric Map."),
        modality_series: list[str] = MODALITY_SERIES,
        resample_to_first: bool = RESAMPLE_TO_FIRST,
        register_to_first: bool = REGISTER_TO_FIRST,
        pair_by: str = PAIR_BY,
        memory_limit: str = typer.Option("4G", "--memory-limit", help="Archive: refuse a series whose float32 "
                                         "volume is larger, by its headers, before reading it."),
        site: str = typer.Option("auto", "--site", help="Archive: finding site in the SR (lung, breast, ...; auto; "
                                 "none)."),
        keyed_ids: bool = KEYED_IDS,
        key_file: Path | None = KEY_FILE,
        retry_errors: bool = typer.Option(False, "--retry-errors", help="Archive: run again the series an earlier "
                                          "run recorded as errors."),
        workers: int | None = typer.Option(None, "--workers", min=1, max=1024, help="Archive: Ray workers "
                                           "(--engine ray; default 2)."),
    ) -> None:
        """Predict with a trained run (or exported package): class and probabilities (or "ABSTAIN"),
        findings, anomaly score. A single folder argument is an archive: every series is found by UID,
        run, and summarised in OUT/results.csv + results.parquet (resumable)."""
        from medanomaly.engine import default_out, load_model
        from medanomaly.engine.alignment import alignment_of
        from medanomaly.engine.outputs import check_distinct_outputs, output_dir, output_names_too_long, prepare_output_dir
        from medanomaly.errors import InputError

        if len(paths) == 1 and paths[0].is_dir() and "=" not in str(paths[0]):
            from medanomaly.cli.pacs import predict_archive

            if frame is not None:
                raise InputError("--frame takes one frame of a cine or 4D file, not of every series of an archive", paths[0])

            with output_dir(out or default_out("predict", paths[0].name)) as target:
                code = predict_archive(run, paths[0], target, series_filter=series_filter or None, dicom=dicom,
                                       engine=engine, address=address, explain=explain,
                                       modality_series=modality_series, resample_to_first=resample_to_first,
                                       register_to_first=register_to_first, pair_by=pair_by,
                                       memory_limit=memory_limit, site=site, keyed_ids=keyed_ids, key_file=key_file,
                                       retry_errors=retry_errors, workers=workers)  # fmt: skip
            raise typer.Exit(code=code)
        archive_only = {"--series-filter": bool(series_filter), "--engine": engine != "local", "--address": address,
                        "--no-dicom": not dicom, "--memory-limit": memory_limit != "4G", "--site": site != "auto",
                        "--keyed-ids": keyed_ids, "--key-file": key_file, "--retry-errors": retry_errors,
                        "--workers": workers, "--pair-by": pair_by != "study"}  # fmt: skip
        given = [name for name, value in archive_only.items() if value]
        if given:  # they were ignored without a word for files
            raise InputError(f"{', '.join(given)}: for an archive (a folder of series); not for files", paths[0])
        if modality_series:
            raise InputError("--modality-series pairs the series of an archive's studies (a folder); for files give "
                             "MODALITY=path", paths[0])  # fmt: skip
        alignment = alignment_of(resample_to_first, register_to_first)
        if alignment != "none" and "=" not in str(paths[0]):
            raise InputError(f"--{alignment}-to-first brings a fusion model's modalities onto one grid: give "
                             "MODALITY=path (or an archive)", paths[0])  # fmt: skip
        if explain is not None:
            raise InputError("--explain explains each series of an archive (a folder); for files use `medanomaly "
                             "explain RUN IMAGE`", paths[0])  # fmt: skip
        if frame is not None and "=" in str(paths[0]):
            raise InputError("--frame takes one frame of a cine or 4D file, not of a fusion's modalities", paths[0])
        too_long: dict = {}
        if out is not None:
            if "=" not in str(paths[0]):  # fusion's MOD=path inputs make one prediction
                check_distinct_outputs(paths)
            prepare_output_dir(out)
            too_long = output_names_too_long([paths[0]] if "=" in str(paths[0]) else paths, out, frame)
        model = load_model(run)
        if model.task == "fusion":
            from medanomaly.engine.verbs import predict_multimodal

            results = [(paths[0], too_long[paths[0]], None) if too_long else
                       predict_multimodal(model, _fusion_inputs(paths), alignment)]  # fmt: skip
        else:
            from medanomaly.engine import predict_paths

            results = _in_order(paths, too_long, predict_paths(model, [p for p in paths if p not in too_long],
                                                               frame=frame))  # fmt: skip
        single = len(paths) == 1 or model.task == "fusion"  # fusion: its files make one prediction
        _report(results, out, as_json, run, single=single, frame=frame)

    @app.command()
    def tune(
        config: Path = typer.Argument(..., help="YAML config with a `tune:` section (the search space)."),
        trials: int | None = typer.Option(None, "--trials", "-n", help="Number of trials (default: the config's)."),
        out: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default runs/tune-<name>-<time>)."),
    ) -> None:
        """Optuna search over the declared space, scored on the validation split; writes best.yaml."""
        from medanomaly.config import load_config
        from medanomaly.engine import default_out, get_task
        from medanomaly.errors import ConfigError, InputError, about_file

        cfg = load_config(config)
        task = get_task(cfg.task, config)
        if not hasattr(task, "tune"):
            raise InputError(f"task {cfg.task!r} has no tuning", config)
        out_dir = out or default_out("tune", cfg.name or config.stem)
        with about_file(config, ConfigError):  # a search-space error names the config
            summary = task.tune(cfg, trials, out_dir)
        tag = " (SYNTHETIC data)" if summary.get("synthetic") else ""
        typer.echo(f"best {summary['metric']} = {summary['best_value']:.4f}{tag} with {summary['best_params']}")
        typer.echo(f"tune: {out_dir} ({summary['n_trials']} trial(s); the same command with -o {out_dir} resumes or "
                   "extends this search)")  # fmt: skip


def _report(results, out: Path | None, as_json: bool, run: Path, single: bool = False, frame: int | None = None) -> None:
    """Print each result (bad files on stderr, "skipped: ...") and write outputs; exit 2 when every file failed. A
    ``single`` input that fails is the one error line of any bad input (``error: FILE: reason``, exit 2). ``frame``
    (of a cine or a 4D image) is recorded with each result and names its files (``NAME_frameN.json``)."""
    from medanomaly.engine.outputs import write_prediction
    from medanomaly.io.assumed_spacing import assumed_spacing_json
    from medanomaly.errors import InputError, printable
    from medanomaly.jsonio import finite_json

    total = failures = 0
    for path, outcome, volume in results:
        total += 1
        if isinstance(outcome, InputError):
            if single:  # the console entry point's one line for any bad input
                typer.echo(f"error: {printable(str(outcome))}", err=True)
                raise typer.Exit(code=2)
            failures += 1
            typer.echo(f"skipped: {printable(str(outcome))}", err=True)
            continue
        which = {} if frame is None else {"frame": frame}
        if out is not None:
            write_prediction(out, path, outcome, {"run": run.name, **which, **assumed_spacing_json(volume)})
        if as_json:
            typer.echo(json.dumps(finite_json({"file": path.name, **which, **assumed_spacing_json(volume),
                                               **outcome.to_json()})))  # fmt: skip
        else:
            typer.echo(printable(_format_prediction(path, outcome)))
    if failures and failures == total:
        raise typer.Exit(code=2)
