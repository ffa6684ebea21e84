"""One worker thread per model: it claims queued jobs from the store, predicts, writes the outputs.

The bounded queue is the number of queued jobs of a model in the store (checked at upload, see
:class:`ModelWorker.accepts`). 2D classification models take up to ``batch`` queued jobs at once
and predict them in one ``predict_many`` call (dynamic batching). A job that raises is failed with
a one-line reason; the thread goes on with the next. Logs name jobs by their random id only.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medanomaly.deploy.dicom_reg import registered_series
from medanomaly.deploy.dicom_sr import alignment_parameters, threshold_parameters
from medanomaly.deploy.explanation import explained
from medanomaly.deploy.service.outputs import write_outputs
from medanomaly.deploy.service.store import JobStore
from medanomaly.io.frames import reword_frame_advice
from medanomaly.errors import InputError, MedanomalyError

__all__ = ["MAX_FRAME", "REQUEST_FILE", "ModelWorker", "input_path", "requested_frame", "requested_modalities",
           "requested_alignment"]

log = logging.getLogger("medanomaly.service")
#: What an upload asked beside its files (``{"frame": N}``), in its study folder.
REQUEST_FILE = "request.json"
#: Largest frame number an upload may ask for.
MAX_FRAME = 1_000_000


def input_path(study_dir: Path, modality_folder: str | None = None) -> Path:
    """What to read for a study: its single image file, or its folder of DICOM files (of one modality's folder of
    the study's input, when the upload sent one per modality)."""
    folder = study_dir / "input" / (modality_folder or "")
    from medanomaly.deploy.service.ingest import STORED_IMAGE_NAMES

    for name in STORED_IMAGE_NAMES:
        if (folder / name).is_file():
            return folder / name
    return folder


def requested_frame(study_dir: Path) -> int | None:
    """The cine frame or 4D volume an upload asked for (``POST /v1/studies?frame=N``), or None."""
    from medanomaly.jsonio import read_json

    path = study_dir / REQUEST_FILE
    if not path.is_file():
        return None
    frame = read_json(path, max_bytes=4096).get("frame")
    return frame if isinstance(frame, int) and 0 <= frame <= MAX_FRAME else None


def requested_modalities(study_dir: Path, modalities: tuple[str, ...]) -> dict[str, Path | None] | None:
    """What to read for each modality of a multimodal model (None: not sent), when the upload sent one field per
    modality; None for an upload in field ``files``.

    Raises:
        InputError: the upload named a modality the model does not take (the service restarted with another model
            under this name).
    """
    from medanomaly.jsonio import read_json

    path = study_dir / REQUEST_FILE
    folders = read_json(path, max_bytes=4096).get("modalities") if path.is_file() else None
    if not isinstance(folders, dict):
        return None
    unknown = sorted(set(folders) - set(modalities))
    if unknown or not all(isinstance(f, str) and Path(f).name == f for f in folders.values()):
        takes = f"its modalities are {', '.join(modalities)}" if modalities else "it takes one image"
        raise InputError(f"the upload sent modalities {', '.join(sorted(folders))}, but {takes} (the service was "
                         "restarted with another model of this name?)")  # fmt: skip
    return {name: (input_path(study_dir, folders[name]) if name in folders else None) for name in modalities}


def _other_dicom_headers(paths: dict[str, Path | None], volumes: dict[str, Any], first: str) -> dict[str, list[Any]]:
    """The headers of a fusion upload's DICOM modalities other than ``first`` (sent as a folder of one series), by
    modality, read once: the call SR's evidence, and the Spatial Registration's moved series; a folder whose headers
    cannot be read adds none (the call SR then lists its first series only)."""
    from medanomaly.deploy.dicom_source import series_headers
    from medanomaly.io.dicom_series import list_files

    out: dict[str, list[Any]] = {}
    for name, path in paths.items():
        uid = str((getattr(volumes.get(name), "meta", None) or {}).get("series_uid") or "")
        if name != first and path is not None and path.is_dir() and uid:
            try:
                out[name] = series_headers(list_files(path), uid)
            except InputError as exc:
                log.info("%s: no evidence headers (%s)", name, exc.reason)
    return out


def requested_alignment(study_dir: Path) -> str:
    """How an upload of one field per modality asked for them on the first's grid
    (:data:`medanomaly.engine.alignment.ALIGNMENTS`; a job stored before alignments had names kept
    ``resample_to_first``)."""
    from medanomaly.engine.alignment import ALIGNMENTS
    from medanomaly.jsonio import read_json

    path = study_dir / REQUEST_FILE
    request = read_json(path, max_bytes=4096) if path.is_file() else {}
    alignment = request.get("alignment", "resample" if request.get("resample_to_first") is True else "none")
    return alignment if alignment in ALIGNMENTS else "none"


#: A fusion run's advice for a 4D modality (:func:`medanomaly.io.frames.read_modality`), which a client cannot follow.
_VOLUMES_ADVICE = re.compile(r"set data\.volumes\.(\S+) to one of them")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, MedanomalyError):  # the CLI's option is the API's query parameter here
        reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        reason = _VOLUMES_ADVICE.sub(r"send \1 as one volume (a 3D image)", reason)  # a run's setting, not the client's
        return reword_frame_advice(reason, "upload it with ?frame=N").replace("--frame ", "frame=")
    text = str(exc).strip().splitlines()
    return f"internal error: {type(exc).__name__}" + (f": {text[0][:200]}" if text else "")


#: Seconds a worker waits before asking a job store that failed again.
STORE_RETRY_S = 5.0


class ModelWorker:
    """Serve one loaded model from the job store on a daemon thread.

    Args:
        name: the model's name in the API.
        model: a loaded :class:`~medanomaly.engine.TaskModel`.
        store: the job store.
        data_dir: the folder of study folders.
        queue_size: most queued jobs of this model; more are refused (503 + Retry-After).
        batch: most jobs per ``predict_many`` call for 2D classification models.
        explainer: image -> the explanation map of the model's call on it (:mod:`medanomaly.deploy.explanation`),
            or None.
    """

    def __init__(self, name: str, model: Any, store: JobStore, data_dir: Path, queue_size: int = 32,
                 batch: int = 8, explainer: Callable[[Any], Any] | None = None) -> None:  # fmt: skip
        self.name, self.model, self.store, self.data_dir = name, model, store, Path(data_dir)
        self.queue_size, self.batch, self.explainer = queue_size, batch, explainer
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.seconds_per_job = 5.0

    @property
    def batchable(self) -> bool:
        return self.model.task == "classification" and self.model.info.input.get("spatial_dims") == 2

    def accepts(self) -> bool:
        """True while the model's queue has room."""
        return self.store.n_queued(self.name) < self.queue_size

    def retry_after(self) -> int:
        """Seconds a refused client should wait (a queue's worth of recent job time, at least 1)."""
        return max(1, int(self.seconds_per_job * self.queue_size / max(self.batch if self.batchable else 1, 1)))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"worker-{self.name}", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """Wake the worker: a job was queued."""
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """True while the worker's thread runs (a service's readiness: ``GET /ready``)."""
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                jobs = self.store.claim(self.name, self.batch if self.batchable else 1)
            except Exception as exc:  # noqa: BLE001 - the job store failed (disk error, locked): try again, not die
                log.warning("model %s: the job store failed (%s); trying again in %g s", self.name, _reason(exc),
                            STORE_RETRY_S)  # fmt: skip
                self._stop.wait(STORE_RETRY_S)
                continue
            if not jobs:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self._run(jobs)
            except BaseException as exc:  # noqa: BLE001 - a job never takes the worker down
                self._fail_running(jobs, _reason(exc))

    def _fail_running(self, jobs: list[dict[str, Any]], reason: str) -> None:
        """Mark the jobs still running as failed; a job store that fails meanwhile is logged, not raised (the jobs
        stay "running" and are failed or queued again when the service restarts: :meth:`JobStore.recover`)."""
        try:
            for job in jobs:
                row = self.store.get(job["id"])
                if row and row["status"] == "running":
                    self.store.fail(job["id"], reason)
        except Exception as exc:  # noqa: BLE001 - the worker must outlive the store's failure
            log.warning("model %s: could not record a failed job (%s)", self.name, _reason(exc))

    def _run(self, jobs: list[dict[str, Any]]) -> None:
        from medanomaly.io.frames import read_frame

        start = time.perf_counter()
        if len(jobs) == 1 and self._run_modalities(jobs[0], start):
            return
        volumes, ready = [], []
        for job in jobs:
            try:
                study_dir = self.data_dir / job["id"]
                volume = read_frame(input_path(study_dir), requested_frame(study_dir))
                self.model.check_input(volume)
            except MedanomalyError as exc:
                self._fail(job, exc)
                continue
            self.store.progress(job["id"], 0.2)
            volumes.append(volume)
            ready.append(job)
        if not ready:
            return
        predictions = self.model.predict_many(volumes) if len(ready) > 1 else [self.model.predict(volumes[0])]
        for job, volume, prediction in zip(ready, volumes, predictions, strict=True):
            self._finish(job, volume, prediction, start, input_path(self.data_dir / job["id"]))
        self.seconds_per_job = 0.7 * self.seconds_per_job + 0.3 * (time.perf_counter() - start) / len(ready)

    def _run_modalities(self, job: dict[str, Any], start: float) -> bool:
        """Run a job whose upload sent one field per modality (a fusion model); False when it sent field ``files``.
        The viewer's image, and the series a DICOM SR of the call references, are the first modality sent's."""
        from medanomaly.engine.verbs import explanation_input, predict_modalities

        study_dir = self.data_dir / job["id"]
        try:
            paths = requested_modalities(study_dir, tuple(getattr(self.model, "modalities", ())))
            if paths is None:
                return False
            self.store.progress(job["id"], 0.2)
            volumes, prediction = predict_modalities(self.model, paths, requested_alignment(study_dir))
        except MedanomalyError as exc:
            self._fail(job, exc)
            return True
        name, first = next((n, v) for n, v in volumes.items() if v is not None)
        explain_on = explanation_input(self.model, volumes, "{} was not sent")
        headers = _other_dicom_headers(paths, volumes, name)
        evidence = [ds for series in headers.values() for ds in series]
        self._finish(job, first, prediction, start, paths[name], explain_on, volumes, evidence,
                     registered_series(headers, volumes))  # fmt: skip
        self.seconds_per_job = 0.7 * self.seconds_per_job + 0.3 * (time.perf_counter() - start)
        return True

    def _explain(self, job: dict[str, Any], image: Any, prediction: Any) -> tuple[Any, dict[str, Any]] | None:
        """The call's explanation (:func:`medanomaly.deploy.explanation.explained`: a map that cannot be made fails
        the explanation, not the job, and is logged), or None without ``--explain``."""
        result = explained(self.explainer, image, prediction, _reason)
        if result is not None and "error" in result[1]:
            log.info("job %s: no explanation (%s)", job["id"], result[1]["error"])
        return result

    def _fail(self, job: dict[str, Any], exc: MedanomalyError) -> None:
        self.store.fail(job["id"], _reason(exc))
        log.info("job %s failed: %s", job["id"], _reason(exc))

    def _finish(self, job: dict[str, Any], volume: Any, prediction: Any, start: float, read_from: Path | None,
                explain_on: Any = None, modalities: dict[str, Any] | None = None,
                evidence: list[Any] | None = None, registrations: list[Any] | None = None) -> None:  # fmt: skip
        """Write a job's outputs and mark it done (a study deleted while it ran is left deleted); ``read_from``: what
        ``volume`` was read from, whose DICOM files (a folder) the DICOM outputs reference; ``explain_on``: the image
        the call is explained on when not ``volume`` (a fusion call's modalities as one image), or why it is not;
        ``modalities``: a fusion call's images by modality, for the viewer; ``evidence``: the headers of its other
        DICOM modalities, the call SR's evidence too; ``registrations``: those registered onto the first (a REG)."""
        self.store.progress(job["id"], 0.8)
        study_dir = self.data_dir / job["id"]
        if not study_dir.is_dir():
            return
        dicom_source = read_from if read_from is not None and read_from.is_dir() else None
        parameters = threshold_parameters(getattr(self.model, "info", None)) + alignment_parameters(prediction)
        write_outputs(study_dir, volume, prediction, self.name, self.model.task, dicom_source=dicom_source,
                      parameters=parameters,
                      explanation=self._explain(job, volume if explain_on is None else explain_on, prediction),
                      modalities=modalities, evidence=evidence, registrations=registrations)  # fmt: skip
        seconds = time.perf_counter() - start
        self.store.finish(job["id"], round(seconds, 3))
        log.info("job %s done (%s, %.2f s)", job["id"], self.name, seconds)
