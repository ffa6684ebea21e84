"""``pacs`` and the archive batch: studies in, results tables and DICOM SEG/SR out.

``medanomaly pacs RUN --url http://127.0.0.1:8042/dicom-web [--watch]`` queries the PACS
(QIDO-RS), retrieves the series the task needs (WADO-RS), runs the model, stores the DICOM SEG
and SR back into each study (STOW-RS) and remembers what it did in ``OUT/pacs_state.sqlite``;
``--url dimse://HOST:PORT/CALLED_AE`` does the same with C-FIND, C-GET and C-STORE.

:func:`predict_archive` is the body of ``medanomaly predict RUN ARCHIVE --out DIR`` on a folder
tree (the ``predict`` command calls it): one row per series in ``DIR/results.csv`` and
``DIR/results.parquet``, per-series JSON, DICOM SEG/SR/Parametric Map, a resumable run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from medanomaly.errors import InputError, printable

#: A fusion model's pairing of a study's series (``deploy.fusion_sets``): shared by predict (archive), pacs and listen.
MODALITY_SERIES = typer.Option([], "--modality-series", help="Fusion model: NAME=REGEX, the series of a study that is "
                               "modality NAME, by its SeriesDescription (default: by Modality, or the name as a word "
                               "of the description); repeatable.")
RESAMPLE_TO_FIRST = typer.Option(False, "--resample-to-first", help="Fusion model: bring each modality onto the "
                                 "first's grid by patient coordinates (same DICOM frame of reference only; no "
                                 "registration); files (MOD=path) or an archive.")
REGISTER_TO_FIRST = typer.Option(False, "--register-to-first", help="Fusion model: register each modality onto the "
                                 "first (rigid, mutual information; any frame of reference: two visits, a patient who "
                                 "moved) and resample it there; the transform found is in the flags.")
PAIR_BY = typer.Option("study", "--pair-by", help="Fusion model (archive, PACS, node): pair the series of one study (study) "
                       "or of one patient across their studies (patient: a CT and an MR of two visits; with "
                       "--register-to-first).")
PAIR_WAIT = typer.Option(0.0, "--pair-wait", help="Fusion model, PACS (with --watch) or node: a set that lacks a "
                         "modality waits up to this many hours for it (its other study may come later), then runs "
                         "without it; 0: at once. A modality whose other one ran already without it does not "
                         "wait (at the node across a restart only with --keyed-ids).")
#: Options of both DICOM network commands (pacs and listen).
SERIES_FILTER = typer.Option(None, "--series-filter", help="Series rule, e.g. Modality=CT.")
SITE = typer.Option("auto", "--site", help="Finding site in the SR (lung, breast, ...; auto; none).")
TLS_CA = typer.Option(None, "--tls-ca", help="DICOM TLS: PEM certificate(s) to trust (the hospital's CA); default "
                      "the system store.")
TLS_KEY = typer.Option(None, "--tls-key", help="DICOM TLS: our certificate's private key (PEM).")
#: Keyed ids in results (HMAC pseudonyms of UIDs and paths): shared by predict (archive), pacs and listen.
KEYED_IDS = typer.Option(False, "--keyed-ids", help="Series, study and file ids in results, records and messages as "
                         "keyed pseudonyms (HMAC; key from $MEDANOMALY_DEID_KEY or --key-file), never UIDs or paths.")
KEY_FILE = typer.Option(None, "--key-file", help="The key of --keyed-ids (a file).")
#: Bounds of ``--interval`` with ``--watch``, seconds (0 polled the PACS about 140 times a second; -5 was a traceback).
MIN_INTERVAL_S, MAX_INTERVAL_S = 1.0, 86_400.0
#: Longest ``--pair-wait``, hours (a set held longer than a month is a set whose other modality will not come).
MAX_PAIR_WAIT_H = 24.0 * 31


def ids_key(keyed_ids: bool, key_file: Path | None) -> bytes | None:
    """The secret for keyed ids (``--keyed-ids``: ``$MEDANOMALY_DEID_KEY`` or ``--key-file``), else None."""
    if not keyed_ids and key_file is None:
        return None
    from medanomaly.privacy.pseudonym import load_key

    return load_key(key_file)


def batch_options(series_filter: list[str] | None, memory_limit: str, dicom: bool, site: str,
                  explain: str | None = None, modality_series: list[str] | None = None,
                  resample_to_first: bool = False, register_to_first: bool = False, pair_by: str = "study",
                  pair_wait_h: float = 0.0):  # fmt: skip
    from medanomaly.deploy.batch_context import BatchOptions
    from medanomaly.deploy.fusion_sets import PAIR_BY
    from medanomaly.deploy.select import parse_rule, parse_size
    from medanomaly.engine.alignment import alignment_of

    if explain is not None:
        check_explain_method(explain)
    alignment_of(resample_to_first, register_to_first)  # both at once: one line before any work
    if pair_by not in PAIR_BY:
        raise InputError(f"--pair-by must be {' or '.join(PAIR_BY)}, got {pair_by[:32]!r}")
    if not (math.isfinite(pair_wait_h) and 0 <= pair_wait_h <= MAX_PAIR_WAIT_H):
        raise InputError(f"--pair-wait must be 0..{MAX_PAIR_WAIT_H:g} hours, got {pair_wait_h:g}")
    filters = tuple(series_filter or ())
    for rule in filters:
        parse_rule(rule)  # a bad rule is one line, before any work
    if modality_series:
        from medanomaly.deploy.fusion_sets import parse_modality_series

        parse_modality_series(modality_series, None)  # its form before any work; its names once the model is loaded
    if site not in ("auto", "none"):
        from medanomaly.deploy.codes import finding_site

        finding_site(site)  # an unknown site failed each series' SR after its model run
    return BatchOptions(series_filters=filters, memory_limit=parse_size(memory_limit), dicom=dicom,
                        site=None if site == "none" else site, explain=explain,
                        modality_series=tuple(modality_series or ()), resample_to_first=resample_to_first,
                        register_to_first=register_to_first, pair_by=pair_by,
                        pair_wait_s=pair_wait_h * 3600.0)  # fmt: skip


def check_explain_method(method: str) -> None:
    """One line, before any model loads, for an ``--explain`` method that is not an explainer."""
    from medanomaly.explain import methods  # noqa: F401 - registers the explainers
    from medanomaly.registry import EXPLAINERS

    try:
        EXPLAINERS.get(method)
    except InputError as exc:
        raise InputError(f"--explain {method}: {exc.reason}") from None


def predict_archive(
    run: Path,
    archive: Path,
    out: Path,
    *,
    series_filter: list[str] | None = None,
    memory_limit: str = "4G",
    dicom: bool = True,
    site: str = "auto",
    engine: str = "local",
    address: str | None = None,
    workers: int | None = None,
    keyed_ids: bool = False,
    key_file: Path | None = None,
    retry_errors: bool = False,
    progress: bool = True,
    explain: str | None = None,
    modality_series: list[str] | None = None,
    resample_to_first: bool = False,
    register_to_first: bool = False,
    pair_by: str = "study",
) -> int:
    """Run a trained model over every series of an archive; print a summary; return the exit code.

    Exit code 0 when every series to run finished (done, skipped or refused), 1 when some ended
    in error (their reasons are in results.csv), 2 for bad input (raised as InputError) and for an archive
    without a single readable series (its files' reasons are in problems.csv).
    """
    from medanomaly.deploy.batch import run_batch
    from medanomaly.engine import load_model

    options = batch_options(series_filter, memory_limit, dicom, site, explain, modality_series, resample_to_first,
                            register_to_first, pair_by)  # fmt: skip
    key = ids_key(keyed_ids, key_file)
    if engine != "ray" and (address or workers):  # they were ignored without a word on one machine
        raise InputError(f"{'--address' if address else '--workers'} is for --engine ray")
    if engine == "ray" and address:
        from medanomaly.deploy.ray_engine import check_reachable

        check_reachable(address)  # before the model loads and OUT is locked
    model = load_model(run)
    summary = run_batch(model, archive, out, options, key=key, retry_errors=retry_errors, progress=progress,
                        engine=engine, address=address, workers=workers)  # fmt: skip
    if not sum(summary.counts.values()):  # nothing readable: bad input as a whole, said in one line
        typer.echo(f"error: {archive}: no readable DICOM series ({summary.n_problems} file(s) skipped, see "
                   f"{out / 'problems.csv'})", err=True)  # fmt: skip
        return 2
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items()))
    typer.echo(f"{sum(summary.counts.values())} series: {counts} ({summary.reused} reused from an earlier run; "
               f"{summary.n_problems} file(s) skipped, see problems.csv)")  # fmt: skip
    typer.echo(f"results: {summary.results_csv} and {summary.results_parquet.name}")
    return 1 if summary.counts.get("error") else 0


def reporter(line: Callable[[Any], str]) -> Callable[[Any], None]:
    """A callback for a running summary (a poll's, a node round's): prints ``line(summary)``, then each error line
    added since the last call, as it happens (a watch or a node runs for days)."""
    printed = 0

    def report(summary: Any) -> None:
        nonlocal printed
        typer.echo(line(summary))
        for error in summary.errors[printed:]:
            typer.echo(f"error: {printable(error)}", err=True)
        printed = len(summary.errors)

    return report


def tls_files(ca: Path | None, cert: Path | None, key: Path | None):
    """The ``--tls-*`` files as a :class:`~medanomaly.deploy.dicom_tls.DicomTls`, or None when none is given."""
    if ca is None and cert is None and key is None:
        return None
    from medanomaly.deploy.dicom_tls import DicomTls

    return DicomTls(ca=ca, cert=cert, key=key)


def _study_filters(pairs: list[str] | None) -> dict[str, str] | None:
    out = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputError(f"study filter {pair!r}: expected KEYWORD=VALUE (e.g. ModalitiesInStudy=CT)")
        out[name.strip()] = value.strip()
    return out or None


def register(app: typer.Typer) -> None:
    @app.command()
    def pacs(
        run: Path = typer.Argument(..., help="Run folder of a trained model (e.g. a lung_nodule detector)."),
        url: str = typer.Option(..., "--url", help="DICOMweb root, e.g. http://127.0.0.1:8042/dicom-web (Orthanc), "
                                "or a DIMSE PACS: dimse://HOST:PORT/CALLED_AE."),
        out: Path = typer.Option(Path("pacs-work"), "--out", help="Work folder: records, DICOM outputs, state file."),
        watch: bool = typer.Option(False, "--watch", help="Keep polling the PACS until Ctrl-C."),
        interval: float = typer.Option(30.0, "--interval", help="Seconds between polls with --watch."),
        state: Path | None = typer.Option(None, "--state", help="SQLite state file (default OUT/pacs_state.sqlite)."),
        study_filter: list[str] | None = typer.Option(None, "--study-filter", help="Study filter KEYWORD=VALUE (QIDO-RS or "
                                                      "C-FIND), e.g. ModalitiesInStudy=CT, StudyDate=20261201-."),
        series_filter: list[str] | None = SERIES_FILTER,
        memory_limit: str = typer.Option("4G", "--memory-limit", help="Refuse series larger than this as float32."),
        site: str = SITE,
        store_map: bool = typer.Option(False, "--store-map", help="Also store the anomaly or explanation map "
                                       "(Parametric Map)."),
        ae_title: str | None = typer.Option(None, "--ae-title", help="Our AE title to a DIMSE PACS (default "
                                            "MEDANOMALY); the PACS must know it."),
        tls_ca: Path | None = TLS_CA,
        tls_cert: Path | None = typer.Option(None, "--tls-cert", help="DICOM TLS: our certificate (PEM)."),
        tls_key: Path | None = TLS_KEY,
        move_port: int | None = typer.Option(None, "--move-port", help="Retrieve with C-MOVE to this port of ours (a "
                                             "PACS without C-GET; it must know our AE title there)."),
        move_host: str = typer.Option("0.0.0.0", "--move-host", help="Address our C-MOVE storage SCP listens on."),
        since_days: int | None = typer.Option(None, "--since-days", help="Only studies of the last N days (and "
                                              "today), recomputed each poll: a watch of a PACS holding years."),
        explain: str | None = typer.Option(None, "--explain", help="Also explain each call with this method "
                                           "(gradcam, ...) as a Parametric Map (stored with --store-map)."),
        modality_series: list[str] = MODALITY_SERIES,
        resample_to_first: bool = RESAMPLE_TO_FIRST,
        register_to_first: bool = REGISTER_TO_FIRST,
        pair_by: str = PAIR_BY,
        pair_wait: float = PAIR_WAIT,
        keyed_ids: bool = KEYED_IDS,
        key_file: Path | None = KEY_FILE,
    ) -> None:
        """Query a PACS, run the model on new series, store DICOM SEG + SR back into each study.

        Credentials, if the PACS asks for them, come from the environment, never the command line:
        MEDANOMALY_PACS_USER and MEDANOMALY_PACS_PASSWORD (HTTP Basic), MEDANOMALY_PACS_TOKEN (bearer), or
        MEDANOMALY_PACS_TOKEN_COMMAND (a command that prints a bearer token, run again when it expires).
        A DIMSE PACS (dimse://HOST:PORT/CALLED_AE) knows us by our AE title (--ae-title) instead; over DICOM TLS
        (dimse+tls://HOST:PORT/CALLED_AE) the PACS's certificate is checked against --tls-ca (default: the system
        store) and ours, if it asks for one, is --tls-cert / --tls-key.
        """
        from medanomaly.deploy.batch_context import check_options_for
        from medanomaly.deploy.pacs import connect, run_pacs
        from medanomaly.deploy.pacs_auth import PacsAuth, cleartext_warning
        from medanomaly.engine import load_model

        options = batch_options(series_filter, memory_limit, True, site, explain, modality_series, resample_to_first,
                                register_to_first, pair_by, pair_wait)  # fmt: skip
        filters = _study_filters(study_filter)
        if pair_wait and not watch:  # one poll would never come back for the set
            raise InputError("--pair-wait holds a set for a later poll of --watch; give --watch too")
        key = ids_key(keyed_ids, key_file)
        if since_days is not None and not 0 <= since_days <= 36_500:
            raise InputError(f"--since-days must be 0..36,500, got {since_days}")
        if since_days is not None and "StudyDate" in (filters or {}):
            raise InputError("--since-days sets the StudyDate filter: give one or the other")
        if interval != 30.0 and not watch:  # it was ignored without a word: one poll
            raise InputError("--interval is the time between polls of --watch; give --watch too")
        if move_host != "0.0.0.0" and move_port is None:
            raise InputError("--move-host is where our C-MOVE storage SCP listens; give --move-port too")
        if watch and not (math.isfinite(interval) and MIN_INTERVAL_S <= interval <= MAX_INTERVAL_S):
            raise InputError(f"--interval must be {MIN_INTERVAL_S:g}..{MAX_INTERVAL_S:g} seconds, got {interval:g}")
        auth = PacsAuth.from_env(os.environ)  # never from the command line: ps shows it to every user
        warning = cleartext_warning(url, auth)
        if warning:
            typer.echo(warning, err=True)
        move_to = None
        if move_port is not None:
            from medanomaly.cli.serve import check_free

            check_free(move_host, move_port, "--move-port")
            move_to = (move_host, move_port)
        tls = tls_files(tls_ca, tls_cert, tls_key)
        client = connect(url, auth=auth, ae_title=ae_title, tls=tls, move_to=move_to)  # one line before the model
        model = load_model(run)
        check_options_for(model, options)  # before the first poll

        report = reporter(lambda s: f"poll {s.polls}: {s.studies} stud(ies) seen, {s.processed} series processed, "
                          f"{s.skipped} skipped, {s.stored} instance(s) stored, {len(s.errors)} error(s)"
                          + (f", {s.waiting} set(s) waiting for a modality" if pair_wait else ""))  # fmt: skip
        summary = run_pacs(model, url, out, options=options, state_path=state, search_filters=filters, watch=watch,
                           interval_s=interval, store_map=store_map, on_poll=report, client=client,
                           since_days=since_days, key=key)  # fmt: skip
        if summary.errors:
            raise typer.Exit(1)
