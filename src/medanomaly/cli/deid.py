"""``medanomaly deid IN -o OUT`` (or ``deid IN OUT``): de-identify a DICOM folder (PS3.15 Annex E basic profile + options)."""

from __future__ import annotations

from pathlib import Path

import typer


def _parse_private(items: list[str]) -> frozenset[tuple[str, int]]:
    from medanomaly.errors import InputError

    out = set()
    for item in items:
        creator, sep, elem = item.rpartition(":")
        try:
            value = int(elem, 16)
        except ValueError:
            value = -1
        if not sep or not creator or not 0 <= value <= 0xFF:
            raise InputError(f"--keep-private wants CREATOR:EE (element byte in hex), got {item!r}")
        out.add((creator, value))
    return frozenset(out)


def _output_folder(out_arg: Path | None, out_opt: Path | None) -> Path:
    """The one output folder, given as OUT or ``--out/-o`` (exactly once)."""
    from medanomaly.errors import InputError

    if out_arg is not None and out_opt is not None:
        raise InputError("give the output folder once (OUT or --out), not both", out_opt)
    if out_arg is None and out_opt is None:
        raise InputError("give the output folder (--out DIR)")
    return out_opt or out_arg  # type: ignore[return-value]


def _report(summary, in_dir: Path, out_dir: Path) -> None:  # noqa: ANN001 - privacy.deid.Summary
    """Print what a batch did (fixed reason strings only, no PHI); a run that stopped early or
    released nothing is a failure (one line, exit 2)."""
    from medanomaly.errors import InputError

    typer.echo(
        f"de-identified {summary.processed}, resumed {summary.resumed}, refused {summary.refused}; "
        f"audit: {summary.audit_path}"
    )
    for reason, n in summary.refused_by_reason.items():  # fixed strings only (no PHI)
        typer.echo(f"  refused {n}: {reason}")
    if summary.stopped is not None:  # e.g. a full disk: what was written is valid, the rest refused
        raise InputError(
            f"{summary.stopped}: stopped after {summary.processed} written, {summary.refused} refused; "
            f"audit: {summary.audit_path}",
            out_dir,
        )
    if summary.processed + summary.resumed == 0:  # a run that released nothing is a failed run
        reason = f"{summary.refused} refused, see the audit" if summary.refused else "the folder holds no files"
        raise InputError(f"no file could be de-identified ({reason})", in_dir)


def register(app: typer.Typer) -> None:
    @app.command()
    def deid(
        in_dir: Path = typer.Argument(..., help="Input folder of DICOM files (only read, never modified)."),
        out_arg: Path | None = typer.Argument(None, metavar="[OUT]", help="Output folder (same as --out)."),
        out_opt: Path | None = typer.Option(
            None, "--out", "-o", help="Output folder (<study>/<series>/<instance>.dcm, remapped UIDs). Required: no "
            "default is derived from IN, whose name may identify the patient."
        ),
        key_file: Path | None = typer.Option(
            None, "--key-file", help="File holding the project secret (else $MEDANOMALY_DEID_KEY)."
        ),
        dates: str = typer.Option("remove", "--dates", help="remove | shift (per-patient offset) | keep."),
        retain_dates: bool = typer.Option(False, "--retain-dates", help="Same as --dates shift."),
        retain_patient_characteristics: bool = typer.Option(
            False, "--retain-patient-characteristics", help="Keep sex, age, size, weight (Annex E option)."
        ),
        clean_descriptors: bool = typer.Option(
            False, "--clean-descriptors", help="Keep descriptions/comments with identifiers scrubbed."
        ),
        retain_device_identity: bool = typer.Option(
            False, "--retain-device-identity", help="Keep station name, serial numbers, device ids (Annex E option)."
        ),
        retain_institution_identity: bool = typer.Option(
            False, "--retain-institution-identity", help="Keep institution name, address, department (Annex E option)."
        ),
        keep_private: list[str] = typer.Option(
            [], "--keep-private", help="Safe private element CREATOR:EE to keep (repeatable)."
        ),
        burned_in: str = typer.Option("auto", "--burned-in", help="auto (BurnedInAnnotation) | always | never."),
        redact: str = typer.Option("all", "--redact", help="all: blank every text region (safest) | phi: only regions OCR reads as identifying (names, IDs, dates)."),
        ocr_check: bool = typer.Option(True, "--ocr-check/--no-ocr-check", help="OCR whole frame after redaction."),
        max_size_mb: float = typer.Option(2048, "--max-size-mb", help="Refuse larger files."),
        lookup: Path | None = typer.Option(
            None, "--lookup", help="Encrypted re-identification lookup file to create or extend."
        ),
        workers: int = typer.Option(1, "--workers", min=1, help="Processes working in parallel."),
        redo: bool = typer.Option(
            False, "--redo", help="OUT holds outputs made with other options or key: remove them and start over."
        ),
    ) -> None:
        """De-identify a DICOM folder: header profile, keyed pseudonyms and UIDs, burned-in text, audit.

        Example: medanomaly deid study_in/ -o study_out/ --key-file ~/secrets/deid.key --dates shift
        """
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from medanomaly.errors import InputError
        from medanomaly.privacy.batch import check_workers
        from medanomaly.privacy.deid import DeidConfig, check_folders, deidentify_folder
        from medanomaly.privacy.profile import DATE_OPTIONS, ProfileOptions
        from medanomaly.privacy.pseudonym import load_key

        out_dir = _output_folder(out_arg, out_opt)
        if retain_dates:
            dates = "shift"
        if dates not in DATE_OPTIONS:
            raise InputError(f"--dates must be one of {', '.join(DATE_OPTIONS)}")
        if burned_in not in ("auto", "always", "never") or redact not in ("all", "phi"):
            raise InputError("--burned-in must be auto|always|never and --redact all|phi")
        check_workers(workers)
        check_folders(in_dir, out_dir)  # before the progress bar starts: a usage error prints one line only
        key = load_key(key_file)
        options = ProfileOptions(
            dates=dates,
            retain_patient_characteristics=retain_patient_characteristics,
            clean_descriptors=clean_descriptors,
            retain_device_identity=retain_device_identity,
            retain_institution_identity=retain_institution_identity,
            safe_private=_parse_private(keep_private),
        )
        config = DeidConfig(options, burned_in, redact, ocr_check, max_size_mb, lookup)
        columns = (TextColumn("deid"), BarColumn(), MofNCompleteColumn(), TextColumn("files"), TimeRemainingColumn())
        with Progress(*columns, transient=False) as bar:
            task = bar.add_task("deid", total=None)

            def tick(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            summary = deidentify_folder(in_dir, out_dir, key, config, progress=tick, workers=workers, redo=redo)
        _report(summary, in_dir, out_dir)
