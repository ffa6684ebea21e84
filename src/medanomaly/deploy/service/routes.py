"""The HTTP routes of the service (``/v1`` API, the viewer page and its static files)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from starlette.requests import Request

from medanomaly.deploy.service.app import WEB_DIR, bearer, ingest, job_view
from medanomaly.deploy.service.headers import policy_with_script
from medanomaly.deploy.service.ingest import remove_tree
from medanomaly.deploy.service.outputs import DICOM_KINDS
from medanomaly.deploy.service.tokens import TokenEntry
from medanomaly.deploy.service.worker import MAX_FRAME
from medanomaly.jsonio import read_json

__all__ = ["add_routes"]

_UPLOAD_DOC = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "additionalProperties": {"type": "array", "items": {"type": "string", "format": "binary"}},
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"},
                             "description": "DICOM files of one series, a zip of them, one NIfTI/MGH/NRRD/MINC, or a PAR/REC or AFNI pair. A "
                             "multimodal (fusion) model also takes one such field per modality instead, named as "
                             "GET /v1/models lists its modalities (e.g. T1, PD); a modality left out is flagged "
                             "missing"}}}}}}}  # fmt: skip


def _job(request: Request, job_id: str, entry: TokenEntry) -> dict[str, Any]:
    from fastapi import HTTPException

    job = request.app.state.store.get(job_id) if len(job_id) == 32 and job_id.isalnum() else None
    if job is None or (entry.allows(job["model"]) and not entry.sees(job)):  # another client's study: not even there
        raise HTTPException(404, "no such job or study")
    if not entry.allows(job["model"]):
        raise HTTPException(403, f"this token may not use model {job['model']!r}")
    return job


def _study_file(request: Request, study_id: str, entry: TokenEntry, *parts: str) -> Path:
    from fastapi import HTTPException

    job = _job(request, study_id, entry)
    if job["status"] != "done":
        raise HTTPException(409, f"job is {job['status']}" + (f": {job['reason']}" if job["reason"] else ""))
    path = request.app.state.workers[job["model"]].data_dir.joinpath(study_id, *parts)
    if not path.is_file():
        raise HTTPException(404, f"this study has no {'/'.join(parts)}")
    return path


def not_ready_reasons(state: Any) -> list[str]:
    """Why the service would not run an upload now (empty: ready): a model worker stopped (its thread died: jobs would
    queue for ever), the job store does not answer, or the data disk is below the reserve (uploads refused, 507). No
    model name or path: the route takes no token."""
    import shutil

    reasons = []
    workers = list(state.workers.values())
    stopped = sum(not w.alive for w in workers) if state.config.start_workers else 0
    if stopped:
        reasons.append(f"{stopped} of {len(workers)} model worker(s) stopped")
    try:
        state.store.list(limit=1)
    except Exception:  # noqa: BLE001 - any failure of the store is "not ready"
        reasons.append("the job store does not answer")
    try:
        usage = shutil.disk_usage(state.config.data_dir)
    except OSError:  # the folder removed or unmounted under the service
        reasons.append("the data folder cannot be read")
    else:
        if usage.total and usage.free < state.config.limits.min_free_bytes:
            reasons.append("the data disk is below its reserve: uploads are refused")
    return reasons


def _root(request: Request) -> str:
    """The prefix a proxy serves the service under (``serve --root-path``), "" when none."""
    return str(request.scope.get("root_path", "") or "").rstrip("/")


#: Swagger UI's files in ``web/static`` (copied there from npm's swagger-ui-dist by ``make setup``).
SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css")


def add_routes(app: Any) -> None:  # noqa: C901 - one flat list of small routes
    """Add every route to ``app``."""
    from fastapi import Depends, Query
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    auth = Depends(bearer)
    frame_query = Query(None, ge=0, le=MAX_FRAME, description="a cine loop's frame to predict (0-based, as stored); "
                        "a cine is refused without it")  # fmt: skip
    resample_query = Query(False, description="a fusion model's modalities sent one field each, brought onto the "
                           "first's grid by patient coordinates (one DICOM frame of reference only; no registration)")
    register_query = Query(False, description="a fusion model's modalities sent one field each, each other one "
                           "registered onto the first (rigid, mutual information; any frame of reference) and "
                           "resampled there; the transform found is in the result's flags")  # fmt: skip
    modality_query = Query(0, ge=0, le=64, description="a fusion call's modality, its `n` in the result's "
                           "`modalities` (0: the first sent, the image)")  # fmt: skip
    static = WEB_DIR / "static"
    static.mkdir(parents=True, exist_ok=True)
    app.mount("/static", StaticFiles(directory=static), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request) -> Any:
        """The viewer; its URLs are relative to a ``<base>`` at the service's root (``serve --root-path``), so that it
        works at ``https://host/PREFIX`` and ``https://host/PREFIX/`` behind a proxy alike."""
        base = html.escape(_root(request) + "/", quote=True)
        return HTMLResponse((WEB_DIR / "index.html").read_text().replace("<head>", f'<head>\n<base href="{base}">', 1))

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def api_page(request: Request) -> Any:
        """The API page, Swagger UI from the service's own files: FastAPI's default page loads it from a CDN, so
        on a hospital network without internet it stayed blank, and elsewhere every visit told a third party that
        this service exists and who opened it (``redoc`` likewise: not served)."""
        from fastapi.openapi.docs import get_swagger_ui_html

        root = html.escape(_root(request), quote=True)
        if not all((static / name).is_file() for name in SWAGGER_FILES):
            return HTMLResponse("<p>Swagger UI is not installed here: run <code>make setup</code>. The API's "
                                f"description is at <a href='{root}/openapi.json'>openapi.json</a>.</p>", 503)  # fmt: skip
        page = get_swagger_ui_html(openapi_url=root + app.openapi_url, title="medanomaly API",
                                   swagger_js_url=f"{root}/static/{SWAGGER_FILES[0]}",
                                   swagger_css_url=f"{root}/static/{SWAGGER_FILES[1]}", swagger_favicon_url="data:,")  # fmt: skip
        page.headers["content-security-policy"] = policy_with_script(page.body.decode())  # its one inline script
        return page

    @app.get("/health", summary="Liveness: the process answers (no token)")
    def health() -> Any:
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: uploads would be run (no token); 503 with the reasons when not")
    def ready(request: Request) -> Any:
        reasons = not_ready_reasons(request.app.state)
        if reasons:
            return JSONResponse({"status": "not ready", "reasons": reasons}, 503)
        return {"status": "ready"}

    @app.get("/v1/models", summary="Models this token may use")
    def models(request: Request, entry: TokenEntry = auth) -> Any:
        return [{"name": n, "task": w.model.task, "class_names": list(w.model.class_names),
                 "modalities": list(getattr(w.model, "modalities", ())),
                 "explanation": getattr(w.explainer, "method", None),
                 "queued": request.app.state.store.n_queued(n), "queue_size": w.queue_size}
                for n, w in request.app.state.workers.items() if entry.allows(n)]  # fmt: skip

    @app.post("/v1/studies", status_code=202, summary="Upload a study (DICOM files, a zip, or NIfTI/MGH/NRRD/MINC)",
              openapi_extra=_UPLOAD_DOC)  # fmt: skip
    async def upload(request: Request, model: str | None = None, frame: int | None = frame_query,
                     resample_to_first: bool = resample_query, register_to_first: bool = register_query,
                     entry: TokenEntry = auth) -> Any:  # fmt: skip
        from fastapi import HTTPException

        from medanomaly.engine.alignment import alignment_of

        name = model or next(iter(request.app.state.workers))
        if resample_to_first and register_to_first:
            raise HTTPException(400, "resample_to_first and register_to_first: give one (registration resamples too)")
        return await ingest(request, name, entry, frame, alignment_of(resample_to_first, register_to_first))

    @app.get("/v1/jobs", summary="Recent jobs of the models this token may use")
    def jobs(request: Request, entry: TokenEntry = auth) -> Any:
        return [job_view(j) for j in request.app.state.store.list() if entry.sees(j)]

    @app.get("/v1/jobs/{job_id}", summary="One job: queued, running (progress), done or failed (reason)")
    def job(request: Request, job_id: str, entry: TokenEntry = auth) -> Any:
        return job_view(_job(request, job_id, entry))

    @app.get("/v1/studies/{study_id}/results", summary="Findings or classification JSON")
    def results(request: Request, study_id: str, entry: TokenEntry = auth) -> Any:
        return JSONResponse(read_json(_study_file(request, study_id, entry, "result.json")))

    @app.get("/v1/studies/{study_id}/overlays/{n}.png", summary="Axial overlay PNG of finding n")
    def overlay(request: Request, study_id: str, n: int, entry: TokenEntry = auth) -> Any:
        return FileResponse(_study_file(request, study_id, entry, "overlays", f"{n}.png"), media_type="image/png")

    @app.get("/v1/studies/{study_id}/image", summary="The study as NIfTI (for the viewer); a fusion call's other "
             "modalities by their number in the result's `modalities`")
    def image(request: Request, study_id: str, modality: int = modality_query, entry: TokenEntry = auth) -> Any:
        parts = ("modalities", f"{modality}.nii.gz") if modality else ("image.nii.gz",)
        return FileResponse(_study_file(request, study_id, entry, *parts), filename="image.nii.gz")

    @app.get("/v1/studies/{study_id}/masks/{n}", summary="Mask of finding n as NIfTI")
    def mask(request: Request, study_id: str, n: int, entry: TokenEntry = auth) -> Any:
        return FileResponse(_study_file(request, study_id, entry, "masks", f"{n}.nii.gz"), filename="mask.nii.gz")

    @app.get("/v1/studies/{study_id}/contours/{n}", summary="Outline of finding n (per slice) as NIfTI")
    def contour(request: Request, study_id: str, n: int, entry: TokenEntry = auth) -> Any:
        path = _study_file(request, study_id, entry, "contours", f"{n}.nii.gz")
        return FileResponse(path, filename="contour.nii.gz")

    @app.get("/v1/studies/{study_id}/heatmap", summary="The model's voxel map as NIfTI, when it gives one")
    def heatmap(request: Request, study_id: str, entry: TokenEntry = auth) -> Any:
        return FileResponse(_study_file(request, study_id, entry, "heatmap.nii.gz"), filename="heatmap.nii.gz")

    @app.get("/v1/studies/{study_id}/dicom/{kind}", summary="DICOM SEG, RT Structure Set, SR, Spatial Registration or "
             "Parametric Map of a DICOM upload's findings (kind: seg, rtstruct, sr, reg, parametric_map)")  # fmt: skip
    def dicom_object(request: Request, study_id: str, kind: str, entry: TokenEntry = auth) -> Any:
        from fastapi import HTTPException

        written = read_json(_study_file(request, study_id, entry, "result.json")).get("dicom") or {}
        if kind not in DICOM_KINDS or kind not in written or Path(str(written[kind])).name != written[kind]:
            reason = written.get("error") or "none was written (not a DICOM upload, or nothing found)"
            raise HTTPException(404, f"this study has no DICOM {kind}: {reason}")
        return FileResponse(_study_file(request, study_id, entry, "dicom", written[kind]),
                            media_type="application/dicom", filename=f"{kind}.dcm")  # fmt: skip

    @app.delete("/v1/studies/{study_id}", summary="Remove a study, its job and its files")
    def delete(request: Request, study_id: str, entry: TokenEntry = auth) -> Any:
        job = _job(request, study_id, entry)
        request.app.state.store.delete(study_id)
        remove_tree(request.app.state.workers[job["model"]].data_dir / study_id)
        return {"deleted": study_id}
