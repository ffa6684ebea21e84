"""The PACS bridge: query studies (QIDO-RS), retrieve series (WADO-RS), run the model, store the
DICOM SEG and SR back into the same study (STOW-RS), and remember what was processed.

Talks DICOMweb through ``dicomweb-client`` to any PACS that serves it (Orthanc with its DICOMweb
plugin in the tests), and DIMSE (C-FIND, C-GET, C-STORE) to one named ``dimse://HOST:PORT/CALLED_AE``
through :class:`medanomaly.deploy.dimse.DimseClient`, which answers the same calls. One poll:

1. QIDO-RS: the studies (optionally filtered, e.g. ``{"ModalitiesInStudy": "CT"}``) and their series;
2. series already in the state file for this model run and these options are skipped without a
   request; our own SEG / SR and other non-image series are recorded as skipped;
3. for the rest, WADO-RS metadata (headers only) decides which series the task runs on (the same
   rules as for an archive: :mod:`medanomaly.deploy.select`); only chosen series are retrieved;
4. the series is processed like an archive series (:func:`medanomaly.deploy.batch.process_series`);
   its SEG and SR (and, with ``store_map``, the Parametric Map) are stored with STOW-RS;
5. the outcome is written to the state file (SQLite): a second poll adds nothing.

A fusion model's series are run in sets, one per study; with ``--pair-by patient`` one per patient, across the
patient's studies in the PACS of any date (:func:`patient_studies`: PatientID and issuer matched exactly, used in that
query only). A set that lacks a modality runs without it at once, or waits for it up to ``pair_wait_s`` from the poll
that first saw it (recorded ``waiting``; a watch's later poll runs it whole when the other study has come), but
not for a modality that ran already without it (:mod:`medanomaly.deploy.pair_wait`).

The SEG/SR UIDs are deterministic in (run, options, source series), so even with a lost state
file a rerun stores the same instances again instead of adding new ones.

Errors: an unreachable PACS or one that refuses (HTTP 401/403/...) is an :class:`InputError` of
one line naming the URL; a bad series is recorded with its reason and the poll goes on.

What the PACS answers is not trusted: QIDO-RS results are read page by page (``offset``) up to
:data:`MAX_QIDO_RESULTS`, and a PACS that ignores the offset (the same page again) or answers
something other than DICOM JSON datasets is one line; every answer is read only up to a limit set
before the request (:mod:`medanomaly.deploy.bounded_http`: a series' announced size plus header room
for a retrieval, 256 MiB for anything else), so a PACS cannot fill memory; only valid DICOM UIDs (digits and dots, at
most 64 characters) go into request URLs, and the local work folder of a series is named by its
file-safe series id, never by a path the PACS sent (``../..`` or ``/`` there once named the
folder that is removed after each series).

Example:
    >>> summary = run_pacs(load_model("runs/lung"), "http://127.0.0.1:8042/dicom-web", "work")  # doctest: +SKIP
    >>> summary.stored                                                                             # doctest: +SKIP
    2
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from medanomaly.deploy.atomic import atomic_save_dataset
from medanomaly.deploy.bounded_http import AnswerTooLarge, BoundedSession, answers_at_most
from medanomaly.deploy.pacs_auth import CREDENTIALS_HINT, PacsAuth
from medanomaly.deploy.batch import process_series, resumable_on_sigterm
from medanomaly.deploy.batch_context import BatchContext, BatchOptions, make_context
from medanomaly.deploy.fusion_sets import with_fusion_sets
from medanomaly.deploy.results import file_safe
from medanomaly.deploy.pacs_state import PacsState
from medanomaly.deploy.pair_wait import waiting_sets
from medanomaly.errors import InputError

__all__ = ["MAX_QIDO_RESULTS", "retrieval_limit", "PacsState", "PacsSummary", "SeriesCounts", "connect",
           "once_per_study", "patient_studies", "poll_once", "recent_filter", "run_pacs", "store_results"]

#: Most results one QIDO-RS query pages through (the studies of a poll, the series of a study).
MAX_QIDO_RESULTS = 100_000
#: Header room per frame of a retrieved series beyond its pixels, bytes (a CT header is 2-10 KB).
HEADER_BYTES_PER_FRAME = 256 * 2**10
#: Fixed room for one retrieval's multipart framing, bytes.
ANSWER_OVERHEAD_BYTES = 16 * 2**20
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
#: What a ``--pair-by patient`` poll asks of each study (QIDO-RS returns PatientID by default; C-FIND what is asked).
PATIENT_FIELDS = ("PatientID", "IssuerOfPatientID")
#: What a QIDO-RS or C-FIND match reads as a wildcard or a value separator: a PatientID holding one matches others.
_NOT_EXACT = re.compile(r"[*?\\]")

T = TypeVar("T")
@dataclass
class SeriesCounts:
    """What a bridge or a node did with series: processed / skipped, instances stored, errors (one line each)."""

    processed: int = 0
    skipped: int = 0
    stored: int = 0
    errors: list[str] = field(default_factory=list)
    waiting: int = 0  # fusion sets waiting for a modality now (--pair-wait), as last counted


@dataclass
class PacsSummary(SeriesCounts):
    """What polls did: :class:`SeriesCounts` and the polls made and studies seen."""

    polls: int = 0
    studies: int = 0


def once_per_study(decision: Any, study_uid: str, state: PacsState, ctx: BatchContext) -> Any:
    """``decision`` (:class:`~medanomaly.deploy.select.Decision`), or a skip when it would run a detection series (a
    fusion model's set) of a study whose detection series (set) was run before: a series that came later; a study keeps
    one set of results."""
    from medanomaly.deploy.fusion_sets import FUSION_SELECTION
    from medanomaly.deploy.select import CT_DETECTION, Decision

    if decision.status != "run" or ctx.selection not in (CT_DETECTION, FUSION_SELECTION):
        return decision
    earlier = [uid for uid in state.series_of_study(study_uid, ctx.fingerprint, "done") if uid != decision.entry.key]
    if not earlier:
        return decision
    what = "detection series" if ctx.selection == CT_DETECTION else "fusion set, in the row of series"
    return Decision(decision.entry, "skipped", f"not selected: the study's {what} {earlier[0]} was run before this "
                    "one came")  # fmt: skip


def _one_line(exc: BaseException, url: str) -> InputError:
    """A DICOMweb / HTTP failure as one line naming the URL (never a traceback)."""
    import requests

    response = getattr(exc, "response", None)
    if isinstance(exc, requests.exceptions.HTTPError) and response is not None:
        reason = f"PACS refused the request (HTTP {response.status_code} {response.reason})"
        if response.status_code in (401, 403):  # it wants credentials, or refused those given
            reason += f": {CREDENTIALS_HINT} (or check those given)"
    elif isinstance(exc, AnswerTooLarge):
        reason = str(exc)
    elif isinstance(exc, requests.exceptions.Timeout):
        reason = "PACS did not answer in time"
    elif isinstance(exc, requests.exceptions.ConnectionError):
        reason = "cannot reach the PACS (connection refused or host unknown)"
    else:
        reason = f"DICOMweb request failed ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
    return InputError(f"{url}: {reason}")  # the URL as text: a Path would fold its "//"


def _call(url: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one DICOMweb request, turning HTTP and network failures into a one-line InputError."""
    import requests

    try:
        return fn(*args, **kwargs)
    except (requests.exceptions.RequestException, OSError) as exc:
        raise _one_line(exc, url) from None


def check_url(url: str) -> None:
    """Refuse, in one line naming it, a DICOMweb root that is not ``http(s)://host[:port]/...``: another scheme, no
    host, a port out of 1..65535 or an unclosed IPv6 bracket (``urlsplit`` raised a ValueError traceback inside
    dicomweb-client for ``http://[::1``; ``:99999`` failed as a request after three tries).

    Example:
        >>> check_url("http://127.0.0.1:8042/dicom-web")
    """
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InputError(f"{url}: not a URL ({exc})") from None
    if not url.startswith(("http://", "https://")) or not parts.hostname:  # dicomweb-client takes lower case only
        raise InputError(f"{url}: a DICOMweb URL starts with http:// or https:// and names a host")
    if port == 0:
        raise InputError(f"{url}: not a URL (port 0)")
    if parts.username is not None or parts.password is not None:  # named here without them: the URL is in errors
        raise InputError(f"{parts.scheme}://{parts.hostname}...: credentials in the URL would be printed with every "
                         f"error; {CREDENTIALS_HINT}")  # fmt: skip


def connect(url: str, *, timeout_s: float = 30.0, headers: dict[str, str] | None = None,
            auth: PacsAuth | None = None, ae_title: str | None = None, tls: Any = None,
            move_to: tuple[str, int] | None = None) -> Any:  # fmt: skip
    """A ``DICOMwebClient`` for ``url`` (e.g. ``http://127.0.0.1:8042/dicom-web``), checked with one QIDO-RS query;
    ``auth``: the PACS's credentials (:class:`~medanomaly.deploy.pacs_auth.PacsAuth`), carried by every request.
    A ``dimse://HOST:PORT/CALLED_AE`` URL gets a :class:`~medanomaly.deploy.dimse.DimseClient` instead, calling as
    ``ae_title`` (default ``MEDANOMALY``), checked with C-ECHO and one C-FIND; ``dimse+tls://`` over DICOM TLS with
    ``tls`` (:class:`~medanomaly.deploy.dicom_tls.DicomTls`: the CA to trust, our certificate); ``move_to`` (host, port):
    retrieve with C-MOVE to a storage SCP of ours there instead of C-GET (a PACS without C-GET).

    Raises:
        InputError: the PACS cannot be reached or refuses the query (one line naming the URL).
    """
    import logging

    from dicomweb_client.api import DICOMwebClient

    if url.startswith(("dimse://", "dimse+tls://")):
        return _connect_dimse(url, timeout_s=timeout_s, auth=auth, ae_title=ae_title, tls=tls, move_to=move_to)
    if move_to is not None:
        raise InputError(f"{url}: --move-port is for a DIMSE PACS (dimse://HOST:PORT/CALLED_AE)")
    if ae_title is not None:
        raise InputError(f"{url}: --ae-title names us to a DIMSE PACS (dimse://HOST:PORT/CALLED_AE); DICOMweb "
                         "has none")  # fmt: skip
    if tls is not None:
        raise InputError(f"{url}: --tls-* options are for a DICOM TLS PACS (dimse+tls://); an https:// DICOMweb "
                         "root trusts the system store, or the CA file named by REQUESTS_CA_BUNDLE")  # fmt: skip
    logging.getLogger("retrying").setLevel(logging.ERROR)  # it logs a traceback per retried attempt
    check_url(url)
    session = BoundedSession()
    if auth is not None:
        auth.apply(session)
    client = DICOMwebClient(url=url.rstrip("/"), session=session, headers=headers, timeout=timeout_s)
    client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=200)
    _call(url, client.search_for_studies, limit=1)
    return client


def _connect_dimse(url: str, *, timeout_s: float, auth: PacsAuth | None, ae_title: str | None, tls: Any,
                   move_to: tuple[str, int] | None) -> Any:  # fmt: skip
    from medanomaly.deploy.dimse import DEFAULT_AE_TITLE, DimseClient

    if auth is not None:  # set in the environment for another PACS: said, never sent in clear
        raise InputError(f"{url}: DIMSE carries no credentials; unset MEDANOMALY_PACS_USER / _PASSWORD / _TOKEN / "
                         "_TOKEN_COMMAND (the PACS knows us by our AE title, --ae-title)")  # fmt: skip
    client = DimseClient(url, ae_title=ae_title or DEFAULT_AE_TITLE, timeout_s=timeout_s, max_results=MAX_QIDO_RESULTS,
                         tls=tls, move_to=move_to)  # fmt: skip
    client.echo()
    client.search_for_studies(limit=1)
    return client


def _value(item: dict, tag: str) -> str:
    """First value of a DICOM JSON attribute (by 8-hex-digit tag), or "" (also for a malformed attribute)."""
    attribute = item.get(tag) if isinstance(item, dict) else None
    values = attribute.get("Value") if isinstance(attribute, dict) else None
    first = values[0] if isinstance(values, list) and values else ""
    return str(first) if isinstance(first, str | int | float) else ""


def _uid(item: dict, tag: str) -> str:
    """The UID at ``tag`` if it is a valid DICOM UID (digits and dots, at most 64 characters), else "": a UID
    the PACS sends goes into the URLs of later requests."""
    value = _value(item, tag)
    return value if len(value) <= 64 and _UID.fullmatch(value) else ""


def _search(url: str, search: Callable[..., Any], *args: Any, **kwargs: Any) -> list[dict]:
    """Every result of a QIDO-RS search, page by page (``offset``), at most :data:`MAX_QIDO_RESULTS`.

    Raises:
        InputError: the PACS answers something other than a list of DICOM JSON datasets, sends a page it sent
            before (it ignores the offset: paging would never end), or has more results than the limit.
    """
    results: list[dict] = []
    pages: set[str] = set()
    while True:
        page = _call(url, search, *args, offset=len(results), **kwargs)
        if not isinstance(page, list) or not all(isinstance(item, dict) for item in page):
            raise InputError(f"{url}: the PACS answered a query with something other than DICOM JSON datasets")
        if not page:
            return results
        digest = hashlib.sha256(json.dumps(page, sort_keys=True, default=str).encode()).hexdigest()
        if digest in pages:
            raise InputError(f"{url}: the PACS sent the same query results again for a later page "
                             "(it ignores the QIDO-RS offset)")  # fmt: skip
        pages.add(digest)
        results.extend(page)
        if len(results) > MAX_QIDO_RESULTS:
            raise InputError(f"{url}: more than {MAX_QIDO_RESULTS:,} results for one query; narrow it "
                             "(--study-filter)")  # fmt: skip


_STUDY_UID, _SERIES_UID, _MODALITY = "0020000D", "0020000E", "00080060"
_PATIENT_ID, _ISSUER = "00100020", "00100021"


def _patient_of(study: dict) -> tuple[str, str] | None:
    """(PatientID, IssuerOfPatientID) of a study answer, or None where it names no patient or one no query matches
    exactly (a wildcard or a backslash in it: ``*`` would match every patient's studies)."""
    patient, issuer = _value(study, _PATIENT_ID).strip(), _value(study, _ISSUER).strip()
    return None if not patient or _NOT_EXACT.search(patient + issuer) else (patient, issuer)


def patient_studies(client: Any, url: str, study: dict, study_uid: str) -> list[str]:
    """``study_uid`` and the UIDs of its patient's other studies in the PACS, of any date or filter (a CT and an MR of
    two visits), for ``--pair-by patient``. PatientID and its issuer are matched exactly (the answers are checked, not
    only the query), go into this query only and are never written or said; a study naming no patient, or one no
    query can match exactly, is alone."""
    patient = _patient_of(study)
    if patient is None:
        return [study_uid]
    filters = {"PatientID": patient[0], **({"IssuerOfPatientID": patient[1]} if patient[1] else {})}
    answers = _search(url, client.search_for_studies, search_filters=filters, fields=list(PATIENT_FIELDS))
    others = {_uid(answer, _STUDY_UID) for answer in answers if _patient_of(answer) == patient}
    return [study_uid, *sorted(others - {"", study_uid})]


def _metadata_entry(client: Any, url: str, study_uid: str, series_uid: str) -> Any:
    """SeriesEntry (or a skip reason) of one series from its WADO-RS metadata (headers, no pixels)."""
    from pydicom import Dataset

    from medanomaly.deploy.archive import entry_from_datasets

    metadata = _call(url, client.retrieve_series_metadata, study_uid, series_uid)
    try:
        datasets = [Dataset.from_json(item, bulk_data_uri_handler=lambda *a: b"") for item in metadata]
        return entry_from_datasets(datasets)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:  # pydicom on malformed JSON
        return f"unreadable series metadata ({type(exc).__name__})"


def retrieval_limit(entry: Any) -> int:
    """Most bytes a WADO-RS retrieval of ``entry`` may bring: the series' announced size (its float32
    volume, :attr:`SeriesEntry.estimated_bytes`, at least the stored pixels) plus
    :data:`HEADER_BYTES_PER_FRAME` per frame and :data:`ANSWER_OVERHEAD_BYTES`."""
    return entry.estimated_bytes + HEADER_BYTES_PER_FRAME * max(entry.n_frames, 1) + ANSWER_OVERHEAD_BYTES


def _retrieve(client: Any, url: str, entry: Any, folder: Path) -> None:
    """WADO-RS retrieve of a series into ``folder`` (one file per instance); sets ``entry.files``. The
    answer is read only up to :func:`retrieval_limit`: a PACS may not send more than its metadata announced."""
    import struct

    from pydicom.errors import InvalidDicomError

    with answers_at_most(client, retrieval_limit(entry)):
        try:
            datasets = _call(url, client.retrieve_series, entry.study_uid, entry.key)
        except InputError:
            raise
        except (InvalidDicomError, ValueError, EOFError, struct.error, KeyError, IndexError, TypeError) as exc:
            # the type only: pydicom's message may quote a header value (PHI)
            raise InputError(f"{url}: the PACS sent a retrieval answer that is not DICOM "
                             f"({type(exc).__name__})") from None  # fmt: skip
    foreign = sum((str(ds.get("SeriesInstanceUID", "")), str(ds.get("StudyInstanceUID", ""))) != (entry.key, entry.study_uid)
                  for ds in datasets)  # fmt: skip
    if foreign:  # run on, its SEG and SR would be filed in the study asked for: another patient's findings there
        raise InputError(f"{url}: the PACS sent {foreign} instance(s) of another series or study than asked; "
                         "nothing run or stored")  # fmt: skip
    entry.files = [atomic_save_dataset(folder / f"{i:06d}.dcm", ds) for i, ds in enumerate(datasets)]
    entry.n_frames = sum(int(ds.get("NumberOfFrames", 1) or 1) for ds in datasets)


def store_results(client: Any, url: str, ctx: BatchContext, record: dict, study_uid: str, store_map: bool) -> list[str]:
    """STOW-RS the SEG, RT Structure Set, SR, a fusion call's REG (and map) of a record into its study; returns the
    stored SOP Instance UIDs."""
    import pydicom

    kinds = ("seg", "rtstruct", "sr", "reg", "parametric_map") if store_map else ("seg", "rtstruct", "sr", "reg")
    datasets = [pydicom.dcmread(ctx.out_dir / record["dicom"][k]) for k in kinds if k in record.get("dicom", {})]
    if not datasets:
        return []
    response = _call(url, client.store_instances, datasets, study_instance_uid=study_uid)
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        raise InputError(f"{url}: PACS did not store {len(failed)} of {len(datasets)} instance(s)")
    return [str(ds.SOPInstanceUID) for ds in datasets]


def _candidates(client: Any, url: str, study_uid: str, state: PacsState, ctx: BatchContext,
                summary: PacsSummary) -> list[Any]:  # fmt: skip
    """The new image series of a study as SeriesEntry objects (others recorded as skipped)."""
    from medanomaly.deploy.archive import NON_IMAGE_MODALITIES

    out = []
    for item in _search(url, client.search_for_series, study_uid):
        series_uid = _uid(item, _SERIES_UID)
        if not series_uid:
            summary.errors.append(f"study {ctx.study_id_of(study_uid)}: a series without a valid SeriesInstanceUID, not retrieved")
            continue
        if state.done(series_uid, ctx.fingerprint):
            continue
        modality = _value(item, _MODALITY).upper()
        entry = None if modality in NON_IMAGE_MODALITIES else _metadata_entry(client, url, study_uid, series_uid)
        if hasattr(entry, "key") and (entry.key != series_uid or entry.study_uid not in (None, study_uid)):
            entry = "its metadata names another series or study than the query did"
        if not hasattr(entry, "key"):
            state.record(series_uid, ctx.fingerprint, study_uid, "skipped", entry or f"non-image series ({modality})")
            summary.skipped += 1
            continue
        entry.study_uid = study_uid
        out.append(entry)
    return out


def _process_series(model: Any, client: Any, url: str, entries: list[Any], state: PacsState, ctx: BatchContext,
                    summary: PacsSummary, store_map: bool, studies: Sequence[str] = ()) -> None:  # fmt: skip
    """Run the new series of a study (with ``--pair-by patient``: of a patient's studies, ``studies``), a fusion
    model's in sets."""
    from medanomaly.deploy.select import select_series

    decisions = select_series(entries, ctx.selection, ctx.options.series_filters, ctx.options.memory_limit)
    decisions, ctx = with_fusion_sets(model, decisions, ctx)  # a fusion model: one set of series per study (patient)
    decisions = [once_per_study(d, d.entry.study_uid, state, ctx) for d in decisions]
    held = waiting_sets(decisions, state, ctx, summary, studies)
    for decision in decisions:
        entry, study_uid = decision.entry, decision.entry.study_uid
        if entry.key in held:
            continue
        if decision.status != "run":
            state.record(entry.key, ctx.fingerprint, study_uid, decision.status, decision.reason)
            summary.skipped += 1
            continue
        members = [m for _, m in ctx.sets[entry.key].members if m is not None] if entry.key in ctx.sets else [entry]
        folders = [ctx.out_dir / "incoming" / file_safe(ctx.series_id(m)) for m in members]  # never a PACS's path
        try:
            for member, folder in zip(members, folders, strict=True):
                _retrieve(client, url, member, folder)
            record = process_series(model, entry, ctx)
            stored = store_results(client, url, ctx, record, study_uid, store_map) if record["status"] == "done" else []
        except InputError as exc:  # retrieve or store failed: not recorded, so the next poll retries
            summary.errors.append(f"series {ctx.series_id(entry)}: {exc}")
            continue
        finally:
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)  # disk stays bounded: one series (or set) at a time
        state.record(entry.key, ctx.fingerprint, study_uid, record["status"], record.get("reason", ""), stored)
        summary.processed += 1
        summary.stored += len(stored)
        if record["status"] == "error":
            summary.errors.append(f"series {ctx.series_id(entry)}: {record['reason']}")


def poll_once(model: Any, client: Any, url: str, state: PacsState, ctx: BatchContext, *,
              search_filters: dict[str, Any] | None = None, store_map: bool = False,
              summary: PacsSummary | None = None) -> PacsSummary:  # fmt: skip
    """Query every study once and process its new series (see the module docstring); with ``--pair-by patient``, a
    study's with its patient's other studies' (:func:`patient_studies`), each patient's once a poll."""
    summary = summary or PacsSummary()
    summary.polls += 1
    summary.waiting = 0  # the sets waiting now, counted again by this poll
    by_patient = ctx.options.pair_by == "patient"
    fields = {"fields": list(PATIENT_FIELDS)} if by_patient else {}
    seen: set[str] = set()
    for study in _search(url, client.search_for_studies, search_filters=search_filters, **fields):
        study_uid = _uid(study, _STUDY_UID)
        if not study_uid:
            summary.errors.append("a study without a valid StudyInstanceUID, not queried")
        elif study_uid not in seen:
            seen.add(study_uid)
            summary.studies += 1
            entries, studies = _candidates(client, url, study_uid, state, ctx, summary), [study_uid]
            if by_patient and entries:  # the patient's other studies are asked for only when this one has news
                studies = patient_studies(client, url, study, study_uid)
                others = [uid for uid in studies[1:] if uid not in seen]
                seen.update(others)
                summary.studies += len(others)
                entries += [e for uid in others for e in _candidates(client, url, uid, state, ctx, summary)]
            _process_series(model, client, url, entries, state, ctx, summary, store_map, studies)
    return summary


def recent_filter(search_filters: dict[str, Any] | None, since_days: int | None,
                  today: datetime.date | None = None) -> dict[str, Any] | None:  # fmt: skip
    """``search_filters`` with ``StudyDate`` from ``since_days`` days before ``today`` on (a DICOM date range, which
    QIDO-RS and C-FIND both match), or as they are when ``since_days`` is None. A watch recomputes it each poll: it
    queried every study of the PACS, and one holding years of them (over :data:`MAX_QIDO_RESULTS`) failed each poll.

    Example:
        >>> recent_filter({"ModalitiesInStudy": "CT"}, 7, datetime.date(2026, 12, 6))
        {'ModalitiesInStudy': 'CT', 'StudyDate': '20261129-'}
    """
    if since_days is None:
        return search_filters
    start = (today or datetime.date.today()) - datetime.timedelta(days=since_days)
    return {**(search_filters or {}), "StudyDate": f"{start:%Y%m%d}-"}


@contextmanager
def _state(path: Path) -> Iterator[PacsState]:
    state = PacsState(path)
    try:
        yield state
    finally:
        state.close()


def run_pacs(
    model: Any,
    url: str,
    work_dir: str | Path,
    *,
    options: BatchOptions | None = None,
    state_path: str | Path | None = None,
    search_filters: dict[str, Any] | None = None,
    watch: bool = False,
    interval_s: float = 30.0,
    max_polls: int | None = None,
    store_map: bool = False,
    key: bytes | None = None,
    timeout_s: float = 30.0,
    on_poll: Callable[[PacsSummary], None] | None = None,
    auth: PacsAuth | None = None,
    client: Any = None,
    since_days: int | None = None,
) -> PacsSummary:
    """Process the PACS' studies once, or keep watching it (``watch``) until interrupted.

    Args:
        model: a loaded model (``medanomaly.engine.load_model``).
        url: the DICOMweb root (Orthanc: ``http://HOST:8042/dicom-web``).
        work_dir: folder for series records, DICOM outputs and (default) the state file.
        options: batch options (filters, memory limit, site); DICOM outputs are always written.
        state_path: SQLite state file (default ``work_dir/pacs_state.sqlite``).
        search_filters: QIDO-RS study filters, e.g. ``{"ModalitiesInStudy": "CT"}``.
        watch: poll every ``interval_s`` seconds until Ctrl-C (or ``max_polls``); SIGTERM (a container's stop)
            ends it with :class:`~medanomaly.errors.Terminated` (the series recorded so far are kept). A poll the
            PACS fails (unreachable, refusing) is recorded in ``errors`` and the next one comes at its time: one
            restart of the PACS ended a watch meant to run for days.
        store_map: also store the Parametric Map (off by default: large float data).
        key: secret for keyed ids in the local series records and the error lines (the PACS always gets real UIDs).
        timeout_s: HTTP timeout per request.
        on_poll: called after each poll with the running summary (the CLI prints a line).
        auth: the PACS's credentials (:meth:`PacsAuth.from_env <medanomaly.deploy.pacs_auth.PacsAuth.from_env>`).
        client: a client :func:`connect` made already (the CLI connects before loading the model), else one is made.
        since_days: only studies of the last ``since_days`` days (and today), the range recomputed each poll
            (:func:`recent_filter`).

    Raises:
        InputError: the PACS is unreachable or refuses (one line).
    """
    options = replace(options or BatchOptions(), dicom=True)
    work_dir = Path(work_dir)
    client = client if client is not None else connect(url, timeout_s=timeout_s, auth=auth)
    ctx = make_context(model, work_dir, options, key)
    summary = PacsSummary()
    with _state(Path(state_path) if state_path else work_dir / "pacs_state.sqlite") as state, resumable_on_sigterm():
        while True:
            try:
                poll_once(model, client, url, state, ctx, search_filters=recent_filter(search_filters, since_days),
                          store_map=store_map, summary=summary)  # fmt: skip
            except InputError as exc:  # the PACS unreachable or refusing during a poll (restarted, a token expired)
                if not watch:
                    raise
                summary.errors.append(f"poll {summary.polls}: {exc} (tried again in {interval_s:g} s)")
            if on_poll is not None:
                on_poll(summary)
            if not watch or (max_polls is not None and summary.polls >= max_polls):
                return summary
            try:
                time.sleep(interval_s)
            except KeyboardInterrupt:  # pragma: no cover - interactive stop
                return summary
