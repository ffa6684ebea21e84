"""``medanomaly serve`` (the HTTP service and viewer) and ``medanomaly token new`` (bearer tokens)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medanomaly.errors import InputError

__all__ = ["register"]


def _model_names(paths: list[Path]) -> dict[str, Path]:
    names: dict[str, Path] = {}
    for path in paths:
        name = path.resolve().name
        if name in names:
            raise InputError(f"two models are called {name!r} (give runs in folders of different names)", path)
        names[name] = path
    return names


def register(app: typer.Typer) -> None:
    """Add ``serve`` and the ``token`` group to the app."""
    token_app = typer.Typer(help="Bearer tokens of the service (only their hashes are stored).", no_args_is_help=True)
    app.add_typer(token_app, name="token")

    @token_app.command("new")
    def token_new(
        tokens: Path = typer.Option(..., "--tokens", help="token file (JSON of hashes; created 0600)"),
        model: list[str] = typer.Option(None, "--model", help="model name the token may use (repeat); default all"),
        all_studies: bool = typer.Option(False, "--all-studies", help="the token reads every study of its models "
                                         "(a reading room's viewer); by default only those uploaded with it"),
    ) -> None:
        """Print a new bearer token once; the token file keeps only its SHA-256 hash."""
        from medanomaly.deploy.service.tokens import list_tokens, new_token

        token = new_token(tokens, models=list(model or []), all_studies=all_studies)
        token_id = list_tokens(tokens)[-1]["id"]
        typer.echo(token)  # alone on standard output, for scripts; its id (to revoke it) on standard error
        typer.echo(f"token id {token_id} (revoke: medanomaly token revoke {token_id} --tokens {tokens})", err=True)

    @token_app.command("list")
    def token_list(tokens: Path = typer.Option(..., "--tokens", help="token file made by `medanomaly token new`")) -> None:
        """List the tokens: id, models, which studies, created (never a token or its hash)."""
        from medanomaly.deploy.service.tokens import list_tokens

        for entry in list_tokens(tokens):
            studies = "every study" if entry["all_studies"] else "its own studies"
            typer.echo(f"{entry['id']}  models {','.join(entry['models'])}  {studies}  created {entry['created'] or '?'}")

    @token_app.command("revoke")
    def token_revoke(
        token_id: str = typer.Argument(..., help="the token's id (see `medanomaly token list`)"),
        tokens: Path = typer.Option(..., "--tokens", help="token file made by `medanomaly token new`"),
    ) -> None:
        """Remove a token; a running service refuses it from its next request."""
        from medanomaly.deploy.service.tokens import revoke_token

        revoke_token(tokens, token_id)
        typer.echo(f"revoked {token_id}")

    @app.command("serve")
    def serve(
        runs: list[Path] = typer.Argument(..., help="run folders (or packages) to serve; named by folder name"),
        host: str = typer.Option("127.0.0.1", help="address to bind (default: this machine only)"),
        port: int = typer.Option(8000, help="TCP port"),
        tokens: Path = typer.Option(..., "--tokens", help="token file made by `medanomaly token new`"),
        data: Path = typer.Option(Path("service-data"), "--data", help="job store and study files"),
        max_upload_mb: int = typer.Option(1024, help="largest request body, MiB (413 above)"),
        queue_size: int = typer.Option(32, help="most queued jobs per model (503 + Retry-After above)"),
        min_free_mb: int = typer.Option(512, help="free disk space (MiB) --data keeps after an upload (507 below)"),
        header_timeout: float = typer.Option(15.0, "--header-timeout-s", help="seconds a client has to send a "
                                             "request's headers; the connection is closed after"),
        body_timeout: float = typer.Option(60.0, "--body-idle-timeout-s", help="seconds an upload may stall, or a "
                                           "client stop reading a response, before its connection is closed"),
        max_connections: int = typer.Option(1000, help="most open connections (fewer when ulimit -n is lower); one "
                                            "more is closed at once"),
        cors_origin: list[str] = typer.Option(None, "--cors-origin", help="a web origin whose pages may call the API "
                                              "from a browser, e.g. https://ohif.hospital.org (repeat); none by default"),
        root_path: str = typer.Option("", "--root-path", help="the path a reverse proxy serves the service under, "
                                      "e.g. /medanomaly for https://host/medanomaly/ (the proxy strips it)"),
        max_active_per_token: int = typer.Option(0, "--max-active-per-token", help="most studies one token may have "
                                                 "queued or running (429 above); 0: no limit"),
        explain: str | None = typer.Option(None, "--explain", help="also explain each call with this method "
                                           "(gradcam, occlusion, integrated_gradients, ...): its map is shown over "
                                           "the image (classifiers, whole-image detectors)"),
    ) -> None:
        """Serve models over HTTP: POST /v1/studies, GET /v1/jobs/{id}, results, viewer at /, docs at /docs."""
        import logging

        import uvicorn

        from medanomaly.deploy.service.app import ServiceConfig, check_origin, create_app
        from medanomaly.deploy.service.connections import BACKLOG, guarded_protocol
        from medanomaly.deploy.service.ingest import IngestLimits
        from medanomaly.deploy.service.tokens import TokenStore

        _check_serve_options(host, port, max_upload_mb, queue_size, min_free_mb, max_active_per_token)
        origins = tuple(check_origin(o) for o in cors_origin or ())
        root_path = check_root_path(root_path)
        if explain is not None:
            from medanomaly.cli.pacs import check_explain_method

            check_explain_method(explain)  # before the models load: one line listing the methods
        connection_limits = _connection_limits(header_timeout, body_timeout, max_connections)
        if not tokens.exists() or len(TokenStore(tokens)) == 0:
            raise InputError("no tokens yet: run `medanomaly token new --tokens FILE` first", tokens)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        limits = IngestLimits(max_body_bytes=max_upload_mb << 20, min_free_bytes=min_free_mb << 20)
        config = ServiceConfig(models=_model_names(runs), data_dir=data, tokens=tokens, limits=limits,
                               queue_size=queue_size, cors_origins=origins, explain=explain,
                               max_active_per_token=max_active_per_token)  # fmt: skip
        if host not in ("127.0.0.1", "localhost", "::1"):
            typer.echo(f"warning: binding {host}: reachable from other machines; put TLS in front", err=True)
        uvicorn.run(create_app(config), host=host, port=port, log_level="info", root_path=root_path,
                    http=guarded_protocol(connection_limits), backlog=BACKLOG)  # fmt: skip


def _connection_limits(header_s: float, body_idle_s: float, max_connections: int) -> Any:
    """The service's connection limits, each checked (one line, exit 2): deadlines of 0.1 s to a day, 1 to 100,000
    connections, fewer when the open-file limit (first raised to its hard limit) leaves less room."""
    import math

    from medanomaly.deploy.service.connections import ConnectionLimits, default_max_connections, raise_open_file_limit

    for name, value in (("--header-timeout-s", header_s), ("--body-idle-timeout-s", body_idle_s)):
        if not (math.isfinite(value) and 0.1 <= value <= 86_400):
            raise InputError(f"{name} must be 0.1..86,400 seconds, got {value}")
    if not 1 <= max_connections <= 100_000:
        raise InputError(f"--max-connections must be 1..100,000, got {max_connections}")
    raise_open_file_limit()  # room for more connections where the hard limit allows it
    return ConnectionLimits(header_s, body_idle_s, default_max_connections(max_connections))


def check_root_path(value: str) -> str:
    """``--root-path`` as ``/a/b`` (no trailing slash; "" for none): letters, digits and ``. _ ~ -`` between slashes,
    no empty, ``.`` or ``..`` segment (it goes into every page's ``<base>`` and the API description's server).

    Example:
        >>> check_root_path("/medanomaly/")
        '/medanomaly'
    """
    import re

    path = value.rstrip("/")
    segments = path.split("/")[1:]
    if path and (not path.startswith("/") or not all(re.fullmatch(r"[A-Za-z0-9._~-]+", s) and s not in (".", "..")
                                                         for s in segments)):  # fmt: skip
        raise InputError(f"--root-path {value!r}: a URL path such as /medanomaly (letters, digits, . _ ~ - between "
                         "slashes)")  # fmt: skip
    return path


def _check_serve_options(host: str, port: int, max_upload_mb: int, queue_size: int, min_free_mb: int,
                         max_active_per_token: int = 0) -> None:  # fmt: skip
    """One line, exit 2, for an option no server can use, before the models load: a port over 65535 was an
    OverflowError traceback from the socket, a port in use uvicorn's log and exit 3, a negative upload limit or
    queue a server that refused every request."""

    for name, value, low, high in (("--port", port, 1, 65535), ("--max-upload-mb", max_upload_mb, 1, 1 << 20),
                                   ("--queue-size", queue_size, 1, 100_000), ("--min-free-mb", min_free_mb, 0, 1 << 20),
                                   ("--max-active-per-token", max_active_per_token, 0, 100_000)):  # fmt: skip
        if not low <= value <= high:
            raise InputError(f"{name} must be {low}..{high:,}, got {value}")
    check_free(host, port)


def check_free(host: str, port: int, option: str = "--port") -> None:
    """One line when ``host:port`` cannot be listened on now (a port out of 1..65535, named as ``option``; in use; an
    address not of this machine): checked before the models load; the server binds it a moment later."""
    import socket

    if not 1 <= port <= 65535:  # the socket raised OverflowError past 65535, a traceback
        raise InputError(f"{option} must be 1..65535, got {port}")

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        reason = (exc.strerror or str(exc)).split(" (while attempting")[0]  # Python adds the address again
        raise InputError(f"cannot listen on {host} port {port} ({reason})") from None
