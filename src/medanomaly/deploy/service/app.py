"""The FastAPI app: studies in, jobs followed, results and files out, the viewer at ``/``.

Every ``/v1`` route needs ``Authorization: Bearer TOKEN`` (401 without a valid one, 403 when the
token may not use the job's model). Uploads are limited in size (413, see :mod:`.limits`), checked
by content (415, see :mod:`.ingest`), and refused with 503 + ``Retry-After`` when the model's
queue is full. OpenAPI docs at ``/docs``.

Example:
    >>> from fastapi.testclient import TestClient                       # doctest: +SKIP
    >>> app = create_app(ServiceConfig(models={"lung": "runs/lung"}, data_dir="svc", tokens="t.json"))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import shutil
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import Request

from medanomaly.deploy.atomic import atomic_write_json
from medanomaly.deploy.service.ingest import (IngestLimits, UploadRefused, check_free_space, store_modalities,
                                               store_upload)
from medanomaly.deploy.service.audit import AUDIT_FILE, AuditLog, AuditTrail
from medanomaly.deploy.explanation import explainer_for
from medanomaly.deploy.service.headers import SecurityHeaders
from medanomaly.deploy.service.limits import BodyLimit
from medanomaly.deploy.service.store import JobStore
from medanomaly.deploy.service.tokens import TokenEntry, TokenStore
from medanomaly.deploy.service.worker import REQUEST_FILE, ModelWorker

__all__ = ["ServiceConfig", "create_app", "WEB_DIR"]

log = logging.getLogger("medanomaly.service")
WEB_DIR = Path(__file__).resolve().parents[2] / "web"


@dataclass
class ServiceConfig:
    """What ``medanomaly serve`` starts.

    Attributes:
        models: model name -> run folder (or a loaded model).
        data_dir: where the job store (``jobs.sqlite``) and the study folders live.
        tokens: the token file (hashes only).
        limits: upload limits.
        queue_size: most queued jobs per model (more: 503 + Retry-After).
        batch: most jobs per batched call of a 2D classifier.
        start_workers: False only to queue jobs without running them (tests of a restart).
        cors_origins: the web origins (``https://viewer.hospital.org``) whose pages may call the API from a browser
            (a DICOM viewer such as OHIF served elsewhere); none by default (:func:`check_origin`).
        explain: an explainer (``gradcam``, ``occlusion``, ...) whose map of each call is written beside it
            (:mod:`medanomaly.deploy.explanation`); None: none.
        max_active_per_token: most studies one token may have queued or running at once (more: 429 + Retry-After),
            so that one client cannot fill a model's queue for the others; 0: no limit.
    """

    models: dict[str, Any]
    data_dir: Path
    tokens: Path
    limits: IngestLimits = field(default_factory=IngestLimits)
    queue_size: int = 32
    batch: int = 8
    start_workers: bool = True
    cors_origins: tuple[str, ...] = ()
    explain: str | None = None
    max_active_per_token: int = 0


def check_origin(origin: str) -> str:
    """``origin`` when it is a web origin, ``http(s)://host[:port]`` (no path, no ``*``: a page of any site could
    then call the API with a token it holds), else one InputError. The scheme, host, port and no credentials are the
    PACS URL's rules (:func:`medanomaly.deploy.pacs.check_url`); an origin also has no path, query or fragment.

    Example:
        >>> check_origin("https://ohif.hospital.org")
        'https://ohif.hospital.org'
    """
    from urllib.parse import urlsplit

    from medanomaly.deploy.pacs import check_url
    from medanomaly.errors import InputError

    refused = InputError(f"--cors-origin {origin!r}: an origin is http(s)://host[:port], without a path or '*'")
    try:
        check_url(origin)
    except InputError:
        raise refused from None
    parts = urlsplit(origin)
    if parts.path or parts.query or parts.fragment or origin.endswith(("?", "#")):
        raise refused
    return origin


def _load(models: dict[str, Any]) -> dict[str, Any]:
    from medanomaly.engine import load_model

    return {name: (load_model(m) if isinstance(m, (str, Path)) else m) for name, m in models.items()}


def create_app(config: ServiceConfig) -> Any:
    """The ASGI app (FastAPI inside a body-size limit) of ``config``; models are loaded now. The DICOM libraries'
    log messages, which quote header values, are kept out of the service log."""
    from fastapi import FastAPI

    from medanomaly.io.library_logs import quiet_image_libraries

    quiet_image_libraries()
    data_dir = Path(config.data_dir)
    store = JobStore(data_dir / "jobs.sqlite")
    tokens = TokenStore(config.tokens)
    workers = {n: ModelWorker(n, m, store, data_dir / "studies", config.queue_size, config.batch,
                              explainer=explainer_for(m, config.explain, n) if config.explain else None)
               for n, m in _load(config.models).items()}  # fmt: skip
    for name in (n for n, w in workers.items() if config.explain and w.explainer is None):
        log.info("model %s: --explain does not apply (an anomaly model's map is its explanation, a lung nodule "
                 "detector's findings carry their masks)", name)  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: Any):  # noqa: ANN202
        counts = store.recover()
        log.info("job store: %s", counts)
        if config.start_workers:
            for w in workers.values():
                w.start()
        yield
        for w in workers.values():
            w.stop()

    app = FastAPI(title="medanomaly", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Upload a study, follow its job, read the findings. Research use only.")  # fmt: skip
    app.state.store, app.state.workers, app.state.tokens, app.state.config = store, workers, tokens, config
    if config.cors_origins:  # a viewer served from another origin (OHIF) calls the API with its bearer token
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=[check_origin(o) for o in config.cors_origins],
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"],
                           max_age=600)  # fmt: skip
    from medanomaly.deploy.service.routes import add_routes

    add_routes(app)
    trail = AuditTrail(data_dir / AUDIT_FILE)  # outside the body limit: a refused upload is recorded too
    wrapped = SecurityHeaders(AuditLog(BodyLimit(app, config.limits.max_body_bytes), trail))
    wrapped.fastapi = app  # type: ignore[attr-defined]
    return wrapped


#: The bearer scheme, declared in the OpenAPI description so that the API page has an "Authorize" button (its "Try
#: it out" calls were all 401 without one); the token is checked by :func:`bearer`.
BEARER_SCHEME = HTTPBearer(auto_error=False, description="a token from `medanomaly token new --tokens FILE`")


def bearer(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(BEARER_SCHEME)) -> TokenEntry:
    """The caller's token entry, or 401."""
    from fastapi import HTTPException

    token = credentials.credentials if credentials is not None else None
    entry = request.app.state.tokens.check(token)
    if entry is None:
        raise HTTPException(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
    request.state.token_id = entry.id  # the audit trail's "who" (deploy.service.audit)
    return entry


async def ingest(request: Request, model: str, entry: TokenEntry, frame: int | None = None,
                 alignment: str = "none") -> dict[str, Any]:  # fmt: skip
    """Store an upload as a new queued job of ``model`` (the body of ``POST /v1/studies``); ``frame``: the frame of a
    cine loop to predict, kept beside the input (:func:`~medanomaly.deploy.service.worker.requested_frame`);
    ``alignment``: how a fusion upload's modalities are brought onto the first's grid
    (:data:`medanomaly.engine.alignment.ALIGNMENTS`)."""
    from fastapi import HTTPException
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect

    state = request.app.state
    worker = state.workers.get(model)
    if worker is None:
        raise HTTPException(404, f"no model called {model!r} (see GET /v1/models)")
    if not entry.allows(model):
        raise HTTPException(403, f"this token may not use model {model!r}")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(415, "send multipart/form-data with the files in field 'files'")
    if not worker.accepts():
        raise HTTPException(503, f"the queue of model {model!r} is full, retry later",
                            headers={"Retry-After": str(worker.retry_after())})  # fmt: skip
    most = state.config.max_active_per_token
    if most and state.store.n_active(entry.id) >= most:  # before the body is read; again, atomically, at the end
        raise _over_token_limit(most, worker)
    limits: IngestLimits = state.config.limits
    studies = Path(worker.data_dir)
    _room_for(studies, _declared_length(request, limits), limits)
    try:
        form = await request.form(max_files=limits.max_files, max_fields=20)
    except StarletteHTTPException as exc:
        status = 413 if "Too many" in str(exc.detail) else 400
        raise HTTPException(status, f"bad multipart body: {exc.detail}") from None
    except ClientDisconnect:  # the client went away mid-upload, or sent nothing for --body-idle-timeout-s
        log.info("upload not read: the connection closed before its end")
        raise HTTPException(400, "the upload ended before its end (the connection closed)") from None
    except OSError as exc:  # the multipart parser's spool (the system's temporary folder) is full
        log.warning("upload not read: %s", exc.strerror or type(exc).__name__)
        raise HTTPException(507, "the server could not read the upload (no room for it); retry later") from None
    job_id = __import__("uuid").uuid4().hex
    study_dir = studies / job_id
    try:
        parts = upload_parts(form, worker.model, frame, alignment)
        kind, n = await run_in_threadpool(_store, parts, worker.model, study_dir, limits, frame, alignment)
    except (UploadRefused, OSError) as exc:
        shutil.rmtree(study_dir, ignore_errors=True)  # nothing half-stored stays behind
        if isinstance(exc, UploadRefused):
            raise HTTPException(exc.status, exc.reason) from None
        log.warning("job %s upload not stored: %s", job_id, exc.strerror or type(exc).__name__)
        raise HTTPException(507, "the server could not store the upload (disk full or not writable); retry later")
    finally:
        await form.close()
    if state.store.create(model, kind, n, job_id=job_id, token=entry.id, max_active=most) is None:
        shutil.rmtree(study_dir, ignore_errors=True)  # another upload of this token took the last place meanwhile
        raise _over_token_limit(most, worker)
    worker.notify()
    log.info("job %s queued (%s, %d %s file(s))", job_id, model, n, kind)
    return {"job_id": job_id, "study_id": job_id, "status": "queued", "model": model}


def _over_token_limit(most: int, worker: ModelWorker) -> Exception:
    """The 429 of a token that has ``most`` studies queued or running (``serve --max-active-per-token``)."""
    from fastapi import HTTPException

    return HTTPException(429, f"this token has {most} studies queued or running, its limit; retry when one is done",
                         headers={"Retry-After": str(worker.retry_after())})  # fmt: skip


def upload_parts(form: Any, model: Any, frame: int | None, alignment: str = "none") -> dict[str, list[Any]]:
    """The uploaded files by multipart field: ``{"files": [...]}``, or, for a multimodal (fusion) model sent one
    field per modality (``T1``, ``PD``), ``{modality: [...]}`` for the modalities sent (one may be missing).

    Raises:
        UploadRefused: 400 a field that is no modality of the model beside modality fields, ``frame`` with them, or
            an ``alignment`` (``resample_to_first``, ``register_to_first``) without them.
    """
    fields: dict[str, list[Any]] = {}
    for key, value in form.multi_items():
        if hasattr(value, "file"):
            fields.setdefault(key, []).append(value.file)
    names = tuple(getattr(model, "modalities", ()))
    if not fields and len(names) > 1:
        raise UploadRefused(400, f"no file in the upload: send one field per modality ({', '.join(names)}), or one "
                                 "image with them as components in field 'files'")  # fmt: skip
    if not set(fields) & set(names):
        if alignment != "none":
            raise UploadRefused(400, f"{alignment}_to_first brings a fusion model's modalities onto one grid: send one "
                                     f"field per modality ({', '.join(names) or 'this model takes one image'})")  # fmt: skip
        return {"files": fields.get("files", [])}
    others = sorted(set(fields) - set(names))
    if others:
        raise UploadRefused(400, f"field {others[0][:64]!r} is not a modality of this model: send one field per modality "
                                 f"({', '.join(names)}), or one image with them as components in field 'files'")  # fmt: skip
    if frame is not None:
        raise UploadRefused(400, "frame takes one frame of a cine or 4D file, not of a fusion's modalities")
    return fields


def _store(parts: dict[str, list[Any]], model: Any, study_dir: Path, limits: IngestLimits,
           frame: int | None, alignment: str = "none") -> tuple[str, int]:  # fmt: skip
    """Store an upload's files under ``study_dir/input`` and what it asked beside them (:data:`REQUEST_FILE`)."""
    if "files" in parts:
        kind, n = store_upload(parts["files"], study_dir / "input", limits)
        if frame is not None:
            atomic_write_json(study_dir / REQUEST_FILE, {"frame": frame})
        return kind, n
    kind, n, folders = store_modalities(parts, model.modalities, study_dir / "input", limits)
    atomic_write_json(study_dir / REQUEST_FILE, {"modalities": folders, "alignment": alignment})
    return kind, n


def _declared_length(request: Request, limits: IngestLimits) -> int:
    """The body's declared length (the body limit itself when none is declared, as with chunked uploads)."""
    try:
        return min(int(request.headers.get("content-length", "")), limits.max_body_bytes)
    except ValueError:
        return limits.max_body_bytes


def _room_for(studies: Path, upload_bytes: int, limits: IngestLimits) -> None:
    """507 before anything is read when the studies' disk would keep less than its reserve after this upload."""
    from fastapi import HTTPException

    studies.mkdir(parents=True, exist_ok=True)
    try:
        check_free_space(studies, upload_bytes, limits)
    except UploadRefused as exc:
        log.warning("upload refused: the studies' disk is nearly full (reserve %d MiB, upload up to %d MiB)",
                    limits.min_free_bytes >> 20, upload_bytes >> 20)  # fmt: skip
        raise HTTPException(exc.status, exc.reason) from None


def job_view(job: dict[str, Any]) -> dict[str, Any]:
    """The public view of a job row."""
    out = {k: job[k] for k in ("id", "model", "status", "progress", "reason", "attempts", "input_kind", "n_files",
                               "seconds")}  # fmt: skip
    out["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(job["created"]))
    out["study_id"] = job["id"]
    return out
