"""``listen``: a DICOM node that receives series (C-STORE), runs the model and sends the results on.

``medanomaly listen RUN --allow-ae PACS [--port 11112] [--store-to dimse://pacs:104/PACS]`` (see
:mod:`medanomaly.deploy.listener`).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from medanomaly.cli.pacs import (KEY_FILE, KEYED_IDS, MODALITY_SERIES, PAIR_BY, PAIR_WAIT, REGISTER_TO_FIRST,
                                 RESAMPLE_TO_FIRST, SERIES_FILTER, SITE, TLS_CA, TLS_KEY)


def register(app: typer.Typer) -> None:
    @app.command()
    def listen(
        run: Path = typer.Argument(..., help="Run folder of a trained model (e.g. a lung_nodule detector)."),
        allow_ae: list[str] = typer.Option(None, "--allow-ae", help="AE title that may send (repeat); required."),
        port: int = typer.Option(11112, "--port", help="TCP port to listen on."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0: every interface)."),
        ae_title: str = typer.Option("MEDANOMALY", "--ae-title", help="Our AE title, which senders call."),
        store_to: str | None = typer.Option(None, "--store-to", help="Where SEG / RTSTRUCT / SR go: "
                                            "dimse://HOST:PORT/AE or a DICOMweb root; none: kept in OUT only."),
        out: Path = typer.Option(Path("listener-work"), "--out", help="Work folder: records, outputs, state file."),
        idle: float = typer.Option(10.0, "--idle", help="Seconds without a new instance after which a series is "
                                   "complete and run."),
        series_filter: list[str] | None = SERIES_FILTER,
        memory_limit: str = typer.Option("4G", "--memory-limit", help="Refuse series larger than this (float32, "
                                         "and as received)."),
        site: str = SITE,
        store_map: bool = typer.Option(False, "--store-map", help="Also send the anomaly or explanation map "
                                       "(Parametric Map)."),
        explain: str | None = typer.Option(None, "--explain", help="Also explain each call with this method "
                                           "(gradcam, ...) as a Parametric Map (sent with --store-map)."),
        tls_ca: Path | None = TLS_CA,
        tls_cert: Path | None = typer.Option(None, "--tls-cert", help="DICOM TLS: our certificate (PEM); with it the node listens over TLS."),
        tls_key: Path | None = TLS_KEY,
        modality_series: list[str] = MODALITY_SERIES,
        resample_to_first: bool = RESAMPLE_TO_FIRST,
        register_to_first: bool = REGISTER_TO_FIRST,
        pair_by: str = PAIR_BY,
        pair_wait: float = PAIR_WAIT,
        keyed_ids: bool = KEYED_IDS,
        key_file: Path | None = KEY_FILE,
    ) -> None:
        """Receive series pushed by a PACS or modality, run the model on each complete one, send SEG + SR on."""
        from medanomaly.cli.pacs import batch_options, ids_key, reporter, tls_files
        from medanomaly.cli.serve import check_free
        from medanomaly.deploy.batch_context import check_options_for
        from medanomaly.deploy.listener import ListenerOptions, check_options, connect_store_to, run_listener
        from medanomaly.deploy.pacs_auth import PacsAuth
        from medanomaly.engine import load_model

        options = ListenerOptions(host=host, port=port, ae_title=ae_title, allowed=tuple(allow_ae or ()),
                                  store_to=store_to, idle_s=idle, store_map=store_map,
                                  tls=tls_files(tls_ca, tls_cert, tls_key))  # fmt: skip
        check_options(options)
        check_free(host, port)
        batch = batch_options(series_filter, memory_limit, True, site, explain, modality_series, resample_to_first,
                              register_to_first, pair_by, pair_wait)  # fmt: skip
        key = ids_key(keyed_ids, key_file)
        auth = PacsAuth.from_env(os.environ) if store_to else None  # a DICOMweb --store-to's, as `pacs` takes them
        if host not in ("127.0.0.1", "localhost", "::1") and (options.tls is None or options.tls.cert is None):
            typer.echo(f"warning: listening on {host}: reachable from other machines, in the clear (--tls-cert and "
                       "--tls-key for DICOM TLS)", err=True)  # fmt: skip
        client = connect_store_to(options, auth)  # a --store-to that does not answer is one line before the model loads
        model = load_model(run)
        check_options_for(model, batch)  # before the node listens
        report = reporter(lambda s: f"{s.received} instance(s) received, {s.processed} series run, {s.skipped} "
                          f"skipped, {s.refused} refused, {s.stored} result(s) stored, {len(s.errors)} error(s)"
                          + (f", {s.waiting} set(s) waiting for a modality" if pair_wait else ""))  # fmt: skip

        typer.echo(f"listening on {host}:{port} as {options.ae_title} for {', '.join(options.allowed)}", err=True)
        run_listener(model, out, options, batch, on_series=report, auth=auth, client=client, key=key)
