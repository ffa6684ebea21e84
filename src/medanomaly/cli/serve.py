"""``medanomaly serve`` (the HTTP service and viewer) and ``medanomaly token new`` (bearer tokens)."""

from __future__ import annotations

from pathlib import Path

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
    ) -> None:
        """Print a new bearer token once; the token file keeps only its SHA-256 hash."""
        from medanomaly.deploy.service.tokens import new_token

        typer.echo(new_token(tokens, models=list(model or [])))

    @app.command("serve")
    def serve(
        runs: list[Path] = typer.Argument(..., help="run folders (or packages) to serve; named by folder name"),
        host: str = typer.Option("127.0.0.1", help="address to bind (default: this machine only)"),
        port: int = typer.Option(8000, help="TCP port"),
        tokens: Path = typer.Option(..., "--tokens", help="token file made by `medanomaly token new`"),
        data: Path = typer.Option(Path("service-data"), "--data", help="job store and study files"),
        max_upload_mb: int = typer.Option(1024, help="largest request body, MiB (413 above)"),
        queue_size: int = typer.Option(32, help="most queued jobs per model (503 + Retry-After above)"),
    ) -> None:
        """Serve models over HTTP: POST /v1/studies, GET /v1/jobs/{id}, results, viewer at /, docs at /docs."""
        import logging

        import uvicorn

        from medanomaly.deploy.service.app import ServiceConfig, create_app
        from medanomaly.deploy.service.ingest import IngestLimits
        from medanomaly.deploy.service.tokens import TokenStore

        if not tokens.exists() or len(TokenStore(tokens)) == 0:
            raise InputError("no tokens yet: run `medanomaly token new --tokens FILE` first", tokens)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        limits = IngestLimits(max_body_bytes=max_upload_mb << 20)
        config = ServiceConfig(models=_model_names(runs), data_dir=data, tokens=tokens, limits=limits,
                               queue_size=queue_size)  # fmt: skip
        if host not in ("127.0.0.1", "localhost", "::1"):
            typer.echo(f"warning: binding {host}: reachable from other machines; put TLS in front", err=True)
        uvicorn.run(create_app(config), host=host, port=port, log_level="info")
