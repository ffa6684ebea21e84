"""A DICOM node that receives: series pushed to it (C-STORE) are run when complete, their results sent on.

Most hospitals route studies to an AI node rather than let it query the PACS: a routing rule in the PACS (or a
modality) sends each new CT to an AE title, and the node sends its DICOM SEG / RT Structure Set / SR back.
``medanomaly listen RUN --port 11112 --allow-ae PACS [--store-to dimse://pacs:104/PACS]`` is that node:

1. a storage SCP (pynetdicom) accepts C-ECHO and C-STORE of every storage class, in every transfer syntax pydicom
   decodes, from the calling AE titles named with ``--allow-ae`` only (an association from another is rejected);
2. each received image instance is written, whole or not at all, into ``OUT/incoming/<series UID>/`` (non-image
   objects, such as our own SEG and SR routed back, are accepted and set aside); a series is refused (status "out of
   resources", its files removed) once its bytes pass ``--memory-limit`` or the disk its reserve, and a series whose
   sender's association was aborted is dropped: neither is ever run on in part;
3. a study none of whose series has had an instance for ``--idle`` seconds is complete (DICOM has no end-of-series
   or end-of-study signal): its series are indexed and selected together like an archive's
   (:mod:`medanomaly.deploy.select`: one thin axial CT per study for detection), each chosen one run
   (:func:`medanomaly.deploy.batch.process_series`), its outputs sent to ``--store-to`` (a DIMSE or DICOMweb PACS,
   :func:`medanomaly.deploy.pacs.store_results`), recorded in ``OUT/listener_state.sqlite`` and the files removed; a
   series recorded before (same run and options) is not run again, nor a detection series of a study whose detection
   series was run before it came (one set of results per study); a fusion model's series are run in sets (per study,
   or with ``--pair-by patient`` per patient), and with ``--pair-wait`` a set that lacks a modality is held, its files
   kept in the inbox and recorded ``waiting``, until the patient's other study comes or the wait is over (not for a
   modality that ran without it in a study received since the node started: :mod:`medanomaly.deploy.pair_wait`);
4. series left in ``incoming`` by a stopped node are taken up when it starts again if a sender had ended its
   association normally after sending to them (:data:`SENT_WHOLE`); others may be partial (the node was killed while
   they arrived) and are recorded as refused, to be sent again.

Example:
    >>> ListenerOptions(allowed=("PACS",)).allowed
    ('PACS',)
"""

from __future__ import annotations

import itertools
import logging
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medanomaly.jsonio import atomic_write
from medanomaly.deploy.dicom_tls import DicomTls
from medanomaly.deploy.batch import process_series, resumable_on_sigterm
from medanomaly.deploy.batch_context import BatchContext, BatchOptions, make_context
from medanomaly.deploy.fusion_sets import with_fusion_sets
from medanomaly.deploy.dimse import DEFAULT_AE_TITLE, check_ae_title, start_storage_scp
from medanomaly.deploy.pacs import SeriesCounts, connect, once_per_study, store_results
from medanomaly.deploy.pair_wait import waiting_sets
from medanomaly.deploy.pacs_state import WAITING, PacsState
from medanomaly.deploy.pacs_auth import PacsAuth
from medanomaly.errors import InputError, unexpected_reason

__all__ = ["DEFAULT_PORT", "Inbox", "ListenerOptions", "ListenerSummary", "association_key", "check_options",
           "connect_store_to", "run_listener"]

log = logging.getLogger(__name__)
#: The port DICOM nodes commonly listen on when not root (104 needs privileges).
DEFAULT_PORT = 11112
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
#: Marker in a series' incoming folder: an association that sent to it ended normally (hidden: not read as DICOM).
SENT_WHOLE = ".sent-whole"
#: With ``--pair-by patient --pair-wait``: the patients (the most recent) whose received studies the node remembers,
#: so that a late partner need not wait (a node runs for months; a few hundred bytes each, some 50 MB at most).
MAX_PATIENTS_KEPT = 100_000
_SUCCESS, _OUT_OF_RESOURCES, _CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000


@dataclass(frozen=True)
class ListenerOptions:
    """Where and whom the node listens to, and where results go.

    Attributes:
        host, port: the address to listen on (127.0.0.1 unless the PACS is on another machine).
        ae_title: our AE title, which the sender calls.
        allowed: calling AE titles that may send (required: a node that accepts anyone's images runs anyone's work).
        store_to: where SEG / RTSTRUCT / SR go (``dimse://HOST:PORT/AE`` or a DICOMweb root); None: kept in OUT only.
        idle_s: seconds without a new instance after which a series is complete.
        min_free_bytes: free disk space the incoming folder keeps.
        store_map: also send the Parametric Map (an anomaly map, or a call's explanation with ``--explain``).
        tls: DICOM TLS (:class:`~medanomaly.deploy.dicom_tls.DicomTls`): with a certificate the node listens over TLS
            (a sender's certificate required when a CA is named); a ``dimse+tls://`` ``store_to`` uses it as client.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    ae_title: str = DEFAULT_AE_TITLE
    allowed: tuple[str, ...] = ()
    store_to: str | None = None
    idle_s: float = 10.0
    min_free_bytes: int = 512 * 2**20
    store_map: bool = False
    tls: DicomTls | None = None


@dataclass
class ListenerSummary(SeriesCounts):
    """What the node did: :class:`~medanomaly.deploy.pacs.SeriesCounts`, instances received and series refused."""

    received: int = 0
    refused: int = 0


@dataclass
class _Series:
    study_uid: str
    last: float
    n_bytes: int = 0
    refused: str = ""  # why the series will not be run (its files are gone)
    associations: set[int] = field(default_factory=set)
    writing: int = 0  # instances being written now: the series is not complete while any is


class Inbox:
    """Received instances on disk, one folder per series, with when the last arrived (thread-safe: pynetdicom calls
    :meth:`accept` from one thread per association)."""

    def __init__(self, folder: Path, series_limit_bytes: int, min_free_bytes: int) -> None:
        self.folder, self.series_limit, self.min_free = folder, series_limit_bytes, min_free_bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        self._series: dict[str, _Series] = {}
        self._lock = threading.Lock()
        self.received = 0  # image instances offered, counted under the lock (one thread per association)
        for left in sorted(p for p in self.folder.iterdir() if p.is_dir() and _UID.fullmatch(p.name)):  # a restart
            self._series[left.name] = series = _Series("", 0.0, sum(f.stat().st_size for f in left.iterdir()))
            if not (left / SENT_WHOLE).is_file():  # the node stopped while it arrived: it may be incomplete
                self._refuse(left.name, series, "the node stopped while the series arrived (no sender had ended its "
                             "association normally since); not run: send it again")  # fmt: skip

    def accept(self, series_uid: str, study_uid: str, sop_uid: str, data: bytes, association: int) -> int:
        """Write one instance; the C-STORE status to answer."""
        with self._lock:
            series = self._series.setdefault(series_uid, _Series(study_uid, time.monotonic()))
            series.last = time.monotonic()
            series.associations.add(association)
            self.received += 1
            if series.refused:
                return _OUT_OF_RESOURCES
            series.n_bytes += len(data)
            if series.n_bytes > self.series_limit:
                self._refuse(series_uid, series, f"larger than --memory-limit ({self.series_limit / 2**20:,.0f} MiB) "
                             "as it arrived; not run")  # fmt: skip
                return _OUT_OF_RESOURCES
            if shutil.disk_usage(self.folder).free - len(data) < self.min_free:
                self._refuse(series_uid, series, "the disk reached its reserve while the series arrived; not run")
                return _OUT_OF_RESOURCES
            series.writing += 1
            (self.folder / series_uid / SENT_WHOLE).unlink(missing_ok=True)  # more is coming: whole when released
        try:  # a patient's image: readable by its owner only
            atomic_write(self.folder / series_uid / f"{sop_uid}.dcm", lambda fh: fh.write(data), private=True)
        except OSError:
            with self._lock:
                self._refuse(series_uid, series, "an instance could not be written (disk); not run")
            return _OUT_OF_RESOURCES
        finally:
            with self._lock:
                series.writing -= 1
                series.last = time.monotonic()  # idle counts from the end of the last write
        return _SUCCESS

    def released(self, association: int) -> None:
        """The sender ended its association normally: what it sent of each series is whole, marked on disk so that
        a node stopped before the series is run takes it up at its next start (an unmarked one may be partial)."""
        with self._lock:
            for uid, series in self._series.items():
                if association in series.associations and not series.refused and (self.folder / uid).is_dir():
                    (self.folder / uid / SENT_WHOLE).touch()

    def aborted(self, association: int) -> None:
        """The sender's association ended in an abort: its series may be incomplete, so none of them is run."""
        with self._lock:
            for uid, series in self._series.items():
                if association in series.associations and not series.refused:
                    self._refuse(uid, series, "the sender aborted while sending it (incomplete); not run")

    def _refuse(self, uid: str, series: _Series, reason: str) -> None:
        series.refused = reason
        shutil.rmtree(self.folder / uid, ignore_errors=True)

    def complete(self, idle_s: float) -> list[tuple[str, str, str]]:
        """(series UID, study UID, refusal reason or "") of every series of the studies complete now, taken out of the
        inbox: a study is complete when none of its series has had an instance for ``idle_s`` or is being written
        (its series are then chosen among together; series left by a stopped node are judged as one group)."""
        now = time.monotonic()
        with self._lock:
            busy = {s.study_uid for s in self._series.values() if now - s.last < idle_s or s.writing}
            done = [uid for uid, s in self._series.items() if s.study_uid not in busy]
            return [(uid, self._series[uid].study_uid, self._series.pop(uid).refused) for uid in done]


_KEYS = itertools.count(1)
_KEYS_LOCK = threading.Lock()


def association_key(assoc: Any) -> int:
    """A number of its own for each association, kept on it: ``id()`` is reused once an object is freed, so a later
    association's abort dropped a series an earlier one had sent whole (and ending-event order cannot be relied on
    to forget ids: pynetdicom signals the abort and the closed connection from different threads)."""
    with _KEYS_LOCK:
        if getattr(assoc, "_medanomaly_key", None) is None:
            assoc._medanomaly_key = next(_KEYS)
        return int(assoc._medanomaly_key)


def _on_store(inbox: Inbox) -> Callable[[Any], int]:
    from medanomaly.deploy.archive import NON_IMAGE_MODALITIES, NON_IMAGE_SOP_PREFIXES

    def handle(event: Any) -> int:
        try:
            header = event.dataset
            uids = [str(header.get(k, "")) for k in ("SeriesInstanceUID", "StudyInstanceUID", "SOPInstanceUID")]
            modality, sop_class = str(header.get("Modality", "")).upper(), str(header.get("SOPClassUID", ""))
        except Exception:  # noqa: BLE001 - pydicom on bytes a sender sent
            return _CANNOT_UNDERSTAND
        if not all(len(u) <= 64 and _UID.fullmatch(u) for u in uids):
            return _CANNOT_UNDERSTAND  # a UID names a folder and a file: only digits and dots
        if modality in NON_IMAGE_MODALITIES or sop_class.startswith(NON_IMAGE_SOP_PREFIXES):
            return _SUCCESS  # our own SEG / SR routed back, a report: accepted, set aside
        return inbox.accept(uids[0], uids[1], uids[2], event.encoded_dataset(include_meta=True),
                            association_key(event.assoc))  # fmt: skip

    return handle


def _server(options: ListenerOptions, inbox: Inbox) -> Any:
    """The node's storage SCP (:func:`~medanomaly.deploy.dimse.start_storage_scp`), its events feeding ``inbox``."""
    from pynetdicom import evt

    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    handlers = [(evt.EVT_C_STORE, _on_store(inbox)), (evt.EVT_ABORTED, lambda e: inbox.aborted(association_key(e.assoc))),
                (evt.EVT_RELEASED, lambda e: inbox.released(association_key(e.assoc)))]  # fmt: skip
    return start_storage_scp(options.ae_title, options.allowed, (options.host, options.port), handlers, options.tls)


def check_options(options: ListenerOptions) -> None:
    """One line, before the model loads, for options no node can use."""
    if not options.allowed:
        raise InputError("name the AE titles that may send (--allow-ae PACS, repeatable): a node that takes anyone's "
                         "images runs anyone's work")  # fmt: skip
    for title in (options.ae_title, *options.allowed):
        check_ae_title(title, "AE title")
    if not 1 <= options.port <= 65535:
        raise InputError(f"--port must be 1..65535, got {options.port}")
    if not 0.5 <= options.idle_s <= 3600:
        raise InputError(f"--idle must be 0.5..3600 seconds, got {options.idle_s:g}")
    if options.tls is not None and options.tls.cert is not None:
        options.tls.server_context()  # the files load (one line naming the one that does not)
    elif options.tls is not None and not (options.store_to or "").startswith("dimse+tls://"):
        raise InputError("--tls-ca alone: the node would listen in the clear; give --tls-cert and --tls-key to listen "
                         "over DICOM TLS")  # fmt: skip


def _record(state: PacsState, ctx: BatchContext, uid: str, study: str, status: str, reason: str,
            summary: ListenerSummary, stored: list[str] | None = None) -> None:  # fmt: skip
    state.record(uid, ctx.fingerprint, study, status, reason, stored or [])
    if status in ("skipped", "refused"):
        setattr(summary, status, getattr(summary, status) + 1)
    if status in ("refused", "error"):
        summary.errors.append(f"series {ctx.series_id_of(uid)}: {reason}")


def _index_study(folders: list[Path], study_uid: str, state: PacsState, ctx: BatchContext,
                 summary: ListenerSummary) -> list[Any]:  # fmt: skip
    """The DICOM series of a complete study's folders (a folder that holds none is recorded as an error)."""
    from medanomaly.deploy.archive import lasting_patient_secret, walk_archive

    secret = lasting_patient_secret(ctx.key) if ctx.key else None  # with --keyed-ids: patient keys that last
    entries = []
    for folder in folders:
        try:
            found = [e for e in walk_archive(folder, secret).series if e.kind == "dicom"]
        except InputError as exc:  # the folder unreadable as an archive: recorded, the study's others go on
            _record(state, ctx, folder.name, study_uid, "error", exc.reason, summary)
            continue
        if not found:
            _record(state, ctx, folder.name, study_uid, "error", "no readable DICOM image in it", summary)
        for entry in found:
            entry.study_uid = entry.study_uid or study_uid
        entries += found
    return entries


def _run_group(model: Any, entries: list[Any], state: PacsState, ctx: BatchContext, client: Any,
               options: ListenerOptions, summary: ListenerSummary, studies: Sequence[str] = ()) -> set[str]:  # fmt: skip
    """Select among a study's series (with ``--pair-by patient``: a patient's studies') as the archive batch and the
    bridge do (one detection series per study: the thin axial CT; a fusion model's set), run and send on each chosen
    one. A series of a study whose detection series (set) was run before (it came later) is skipped, so a study gets
    one set of results. Returns the keys of the series held for a fusion set that waits for a modality
    (``--pair-wait``): not run, not recorded but as ``waiting`` (not when its other modality ran without it in one of
    ``studies``, or with ``--keyed-ids`` in a lone set of the patient before a restart:
    :func:`~medanomaly.deploy.pair_wait.waiting_sets`)."""
    from medanomaly.deploy.select import select_series

    decisions = select_series(entries, ctx.selection, ctx.options.series_filters, ctx.options.memory_limit)
    decisions, ctx = with_fusion_sets(model, decisions, ctx)  # a fusion model: one set of series per study (patient)
    decisions = [once_per_study(d, d.entry.study_uid, state, ctx) for d in decisions]
    lasting = ctx.key is not None and ctx.options.pair_by == "patient"  # the patient key outlives a restart
    patient = next((e.patient_key for e in entries), None) if lasting else None
    held = waiting_sets(decisions, state, ctx, summary, studies, patient)
    held_studies = {d.entry.study_uid for d in decisions if d.entry.key in held}
    for decision in decisions:
        entry, study = decision.entry, decision.entry.study_uid
        if study in held_studies:  # the study waits whole: its other series are judged with it later
            held.add(entry.key)
            continue
        if decision.status != "run":
            _record(state, ctx, entry.key, study, decision.status, decision.reason, summary)
            continue
        try:
            _run_series(model, entry, study, state, ctx, client, options, summary)
        except Exception as exc:  # noqa: BLE001 - one series must not end a node that runs for months
            log.debug("series %s failed", entry.key, exc_info=True)
            _record(state, ctx, entry.key, study, "error", unexpected_reason(exc), summary)
    return held


def _run_series(model: Any, entry: Any, study: str, state: PacsState, ctx: BatchContext, client: Any,
                options: ListenerOptions, summary: ListenerSummary) -> None:  # fmt: skip
    """Run one chosen series, send its results on, record it."""
    record = process_series(model, entry, ctx)
    summary.processed += 1
    stored: list[str] = []
    if record["status"] == "done" and client is not None:
        try:
            stored = store_results(client, options.store_to or "", ctx, record, study, options.store_map)
        except InputError as exc:  # the outputs stay in OUT/dicom; the series is recorded with the reason
            record = {**record, "status": "error", "reason": f"results not stored: {exc}"}
    summary.stored += len(stored)
    _record(state, ctx, entry.key, study, record["status"], record.get("reason", ""), summary, stored)


def _take_up(model: Any, inbox: Inbox, state: PacsState, ctx: BatchContext, client: Any, options: ListenerOptions,
             summary: ListenerSummary, held: dict[str, Any] | None = None,
             patients: dict[str, set[str]] | None = None) -> int:  # fmt: skip
    """Run the studies that are complete now (:meth:`Inbox.complete`), each with the series ``held`` (by key) for a
    fusion set of the same study or patient that waits for a modality; how many series came complete, plus the held
    groups judged again because their wait is over (so the caller reports that round too). ``held`` is updated in
    place: the series that wait now, their files kept in the inbox; ``patients`` (with ``--pair-by patient``): the
    studies received of each patient (keyed) since the node started, updated in place."""
    held = {} if held is None else held
    complete = inbox.complete(options.idle_s)
    studies: dict[str, list[tuple[str, str]]] = {}
    for uid, study_uid, refused in complete:
        studies.setdefault(study_uid, []).append((uid, refused))
    fresh: list[Any] = []
    for study_uid, series in studies.items():
        folders = []
        for uid, refused in series:
            if refused:
                _record(state, ctx, uid, study_uid, "refused", refused, summary)
            elif state.status(uid, ctx.fingerprint) in ("done", "skipped"):
                summary.skipped += 1  # sent again: run before with this model and these options (an error is retried)
            elif (inbox.folder / uid).is_dir():  # (an instance come after its series was taken up has no folder left)
                folders.append(inbox.folder / uid)
        fresh += _index_study(folders, study_uid, state, ctx, summary)
    waited = {key: entry for key, entry in held.items() if key not in {e.key for e in fresh}}
    held.clear()
    waiting = expired = 0
    for group, judge, studies_of_group in _groups(fresh, waited, ctx, state, {} if patients is None else patients):
        keep = {e.key for e in group}  # a held group with nothing new, its wait not over, waits on as it is
        if judge:
            expired += all(e.key in waited for e in group)
            keep = _judged(model, group, state, ctx, client, options, summary, studies_of_group)
        waiting += bool(keep)
        held.update({e.key: e for e in group if e.key in keep})
        for entry in group:
            if entry.key not in keep:
                shutil.rmtree(inbox.folder / entry.key, ignore_errors=True)
    summary.waiting = waiting
    for uid, _ in (pair for series in studies.values() for pair in series):
        if uid not in held:  # refused, sent again, unreadable: nothing of it is kept
            shutil.rmtree(inbox.folder / uid, ignore_errors=True)
    return len(complete) + expired


def _judged(model: Any, group: list[Any], state: PacsState, ctx: BatchContext, client: Any, options: ListenerOptions,
            summary: ListenerSummary, studies: Sequence[str] = ()) -> set[str]:  # fmt: skip
    """:func:`_run_group` of one group, whose failure is the error of its series not recorded yet (one study must not
    end a node that runs for months); the keys of the series held."""
    try:
        return _run_group(model, group, state, ctx, client, options, summary, studies)
    except Exception as exc:  # noqa: BLE001 - recorded per series
        log.debug("study failed", exc_info=True)
        for entry in group:
            if state.status(entry.key, ctx.fingerprint) in (None, WAITING):
                _record(state, ctx, entry.key, entry.study_uid, "error", unexpected_reason(exc), summary)
        return set()


def _groups(fresh: list[Any], waited: dict[str, Any], ctx: BatchContext, state: PacsState,
            patients: dict[str, set[str]]) -> list[tuple[list[Any], bool, list[str]]]:  # fmt: skip
    """The series to judge together (a study's; with ``--pair-by patient`` a patient's), each group with whether it is
    to be judged now (it has a series new this round, or its wait, ``--pair-wait``, is over) and the studies whose
    fusion sets it may pair with: its own, and with ``--pair-by patient`` those of the patient received before
    (``patients``, updated in place, at most :data:`MAX_PATIENTS_KEPT`; the patient keys are the run's own, so it
    is forgotten at a restart: with ``--keyed-ids`` the lone sets carry a patient key that lasts, :func:`_run_group`)."""
    by_patient = ctx.options.pair_by == "patient"
    groups: dict[tuple[str, str], list[Any]] = {}
    for entry in [*fresh, *waited.values()]:
        key = ("patient", entry.patient_key) if by_patient and entry.patient_key else ("study", entry.study_uid or "")
        groups.setdefault(key, []).append(entry)
    out = []
    for group in groups.values():
        new = any(e.key not in waited for e in group)
        since = None if new else state.waiting_since([e.key for e in group], ctx.fingerprint)
        studies = {e.study_uid or "" for e in group} - {""}
        if by_patient and group[0].patient_key and ctx.options.pair_wait_s > 0:
            studies |= patients.pop(group[0].patient_key, set())
            patients[group[0].patient_key] = studies  # the most recent last
            while len(patients) > MAX_PATIENTS_KEPT:
                del patients[next(iter(patients))]
        out.append((group, new or since is None or time.time() - since >= ctx.options.pair_wait_s, sorted(studies)))
    return out


@contextmanager
def _serving(options: ListenerOptions, inbox: Inbox) -> Iterator[None]:
    server = _server(options, inbox)
    try:
        yield
    finally:
        server.shutdown()


def run_listener(
    model: Any,
    out_dir: str | Path,
    options: ListenerOptions,
    batch: BatchOptions | None = None,
    *,
    stop: threading.Event | None = None,
    on_series: Callable[[ListenerSummary], None] | None = None,
    auth: PacsAuth | None = None,
    client: Any = None,
    key: bytes | None = None,
) -> ListenerSummary:
    """Receive, run and send on until ``stop`` is set, Ctrl-C or SIGTERM (see the module docstring).

    Args:
        model: a loaded model (``medanomaly.engine.load_model``).
        out_dir: records, DICOM outputs, the incoming folder and ``listener_state.sqlite``.
        options: address, AE titles, where results go, completion time.
        batch: filters, memory limit (also each series' most bytes as it arrives), site; DICOM outputs always.
        stop: set it to end the node (a test, an embedding program).
        on_series: called after each round that ran series, with the running summary (the CLI prints a line).
        auth: credentials for a DICOMweb ``store_to`` (:class:`~medanomaly.deploy.pacs_auth.PacsAuth`).
        client: the ``store_to`` client :func:`connect_store_to` made already (the CLI connects before loading the
            model), else one is made.
        key: secret for keyed ids in the series records and the error lines (what is sent on keeps real UIDs).

    Raises:
        InputError: bad options, a port that cannot be listened on, or a ``store_to`` PACS that does not answer.
    """
    check_options(options)
    batch = replace(batch or BatchOptions(), dicom=True)
    out_dir = Path(out_dir)
    client = client if client is not None else connect_store_to(options, auth)
    ctx = make_context(model, out_dir, batch, key)
    inbox = Inbox(out_dir / "incoming", batch.memory_limit, options.min_free_bytes)
    summary = ListenerSummary()
    stop = stop or threading.Event()
    state = PacsState(out_dir / "listener_state.sqlite")
    held: dict[str, Any] = {}  # series of fusion sets that wait for a modality (--pair-wait), by key
    patients: dict[str, set[str]] = {}  # with --pair-by patient: the studies received of each patient (keyed)
    try:
        with _serving(options, inbox), resumable_on_sigterm():
            while not stop.is_set():
                ran = _take_up(model, inbox, state, ctx, client, options, summary, held, patients)
                summary.received = inbox.received
                if ran and on_series is not None:
                    on_series(summary)
                stop.wait(min(0.5, options.idle_s / 2))
    except KeyboardInterrupt:  # pragma: no cover - interactive stop
        pass
    finally:
        state.close()
        summary.received = inbox.received
    return summary


def connect_store_to(options: ListenerOptions, auth: PacsAuth | None = None) -> Any:
    """A client of ``options.store_to`` (checked: it answers), or None when results stay in OUT.

    Raises:
        InputError: the PACS does not answer or refuses (one line naming it).
    """
    if not options.store_to:
        return None
    tls = options.tls if options.store_to.startswith("dimse+tls://") else None
    return connect(options.store_to, ae_title=_own_title(options), auth=auth, tls=tls)


def _own_title(options: ListenerOptions) -> str | None:
    """Our AE title towards a DIMSE ``store_to`` (None for DICOMweb, which has none)."""
    return options.ae_title if (options.store_to or "").startswith(("dimse://", "dimse+tls://")) else None
