"""A PACS that speaks DIMSE (C-ECHO, C-FIND, C-GET, C-STORE) as the PACS bridge's client.

Most hospital PACS speak DIMSE, the DICOM network protocol, and many of them nothing else.
:class:`DimseClient` answers the calls :mod:`medanomaly.deploy.pacs` makes of a DICOMweb client with
the DIMSE services, through ``pynetdicom``, so one bridge serves both (``medanomaly pacs RUN --url
dimse://HOST:PORT/CALLED_AE``):

- ``search_for_studies`` / ``search_for_series``: C-FIND (Study Root) at STUDY / SERIES level; the
  answers come back as DICOM JSON datasets, as QIDO-RS sends them. DIMSE has no paging: the whole answer
  is the first page and a later ``offset`` gets none; more than ``max_results`` answers end the query;
- ``retrieve_series_metadata``: C-FIND at IMAGE level asking for the headers that choose a series
  (:data:`medanomaly.deploy.archive.HEADER_KEYWORDS`: size, orientation, kernel, ...); no pixels move. A PACS
  that does not return Rows / Columns at this level has them read from one instance, fetched with C-GET;
- ``retrieve_series``: C-GET at SERIES level on the same association (no port of ours needs to be
  open: C-MOVE would need the PACS to connect back); what arrives is counted as it comes and the
  association is aborted past :attr:`DimseClient.limit` bytes (set per series by the bridge);
- ``store_instances``: C-STORE of the SEG / RTSTRUCT / SR into the PACS, failures reported the way STOW-RS
  reports them (``FailedSOPSequence``).

Each call opens its own association and releases it (a watch runs for days; a PACS restart between
polls costs nothing). The PACS must know our AE title (``--ae-title``, default ``MEDANOMALY``) and
allow it to query and retrieve; a refusal is one line saying so. DIMSE carries no password;
``dimse+tls://HOST:PORT/CALLED_AE`` runs every association over DICOM TLS
(:class:`~medanomaly.deploy.dicom_tls.DicomTls`: the CA to trust, our certificate), ``dimse://`` in the clear.

Example:
    >>> parse_dimse_url("dimse://127.0.0.1:4242/ORTHANC")
    ('127.0.0.1', 4242, 'ORTHANC')
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from medanomaly.deploy.dicom_tls import DicomTls
from medanomaly.errors import InputError

__all__ = ["DEFAULT_AE_TITLE", "DimseClient", "check_ae_title", "parse_dimse_url", "start_storage_scp",
           "transfer_syntaxes"]

#: Our calling AE title when ``--ae-title`` is not given.
DEFAULT_AE_TITLE = "MEDANOMALY"
#: Bytes one retrieval may bring when the bridge sets no limit (it sets one per series).
DEFAULT_LIMIT_BYTES = 2**30
_AE = re.compile(r"[\x20-\x5b\x5d-\x7e]{1,16}")  # DICOM AE: 16 printable characters, no backslash
_PENDING = (0xFF00, 0xFF01)
_SUCCESS, _WARNING = 0x0000, 0xB000
_OUT_OF_RESOURCES = 0xA702


def check_ae_title(title: str, what: str = "AE title") -> str:
    """``title`` if it is a DICOM AE title (1-16 printable ASCII characters, no backslash, not only spaces)."""
    if not _AE.fullmatch(title) or not title.strip():
        raise InputError(f"{what} {title!r}: a DICOM AE title is 1 to 16 printable ASCII characters, no backslash")
    return title.strip()


#: Default ports: DICOM's own, and DICOM over TLS's.
DEFAULT_PORTS = {"dimse": 104, "dimse+tls": 2762}


def parse_dimse_url(url: str) -> tuple[str, int, str]:
    """(host, port, called AE title) of ``dimse://HOST[:PORT]/CALLED_AE`` (port 104, DICOM's own, if none) or
    ``dimse+tls://...`` (DICOM TLS, port 2762 if none).

    Raises:
        InputError: another form, a port out of 1..65535, or an AE title DICOM does not allow (one line).
    """
    from urllib.parse import unquote, urlsplit

    try:
        parts = urlsplit(url)
        port = DEFAULT_PORTS.get(parts.scheme, 104) if parts.port is None else parts.port
    except ValueError as exc:
        raise InputError(f"{url}: not a URL ({exc})") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.query or parts.fragment:
        raise InputError(f"{url}: a DIMSE PACS is named dimse://HOST:PORT/CALLED_AE (e.g. dimse://pacs:104/PACS)")
    if parts.username is not None or parts.password is not None:
        raise InputError(f"dimse://{parts.hostname}...: DIMSE carries no credentials; the PACS knows us by our AE "
                         "title (--ae-title)")  # fmt: skip
    if not 1 <= port <= 65535:
        raise InputError(f"{url}: not a URL (port {port})")
    called = unquote(parts.path.strip("/"))
    if not called:
        raise InputError(f"{url}: name the PACS's AE title as the path (dimse://HOST:PORT/CALLED_AE)")
    return parts.hostname, port, check_ae_title(called, "called AE title")


def transfer_syntaxes() -> list[str]:
    """The transfer syntaxes we accept an image in: those pydicom and its pylibjpeg plugins decode."""
    from pydicom import uid

    return [uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian,
            uid.ExplicitVRBigEndian, uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless,
            uid.JPEGLosslessSV1, uid.JPEGLSLossless, uid.JPEGLSNearLossless, uid.JPEG2000Lossless, uid.JPEG2000,
            uid.RLELossless]  # fmt: skip


class DimseClient:
    """A DIMSE PACS with the calls the PACS bridge makes of a DICOMweb client (see the module docstring)."""

    def __init__(self, url: str, *, ae_title: str = DEFAULT_AE_TITLE, timeout_s: float = 30.0,
                 max_results: int = 100_000, tls: DicomTls | None = None,
                 move_to: tuple[str, int] | None = None) -> None:  # fmt: skip
        self.url = url
        self.host, self.port, self.called_ae = parse_dimse_url(url)
        self.tls = tls_for(url, tls)
        self.ae_title = check_ae_title(ae_title, "--ae-title")
        self.timeout_s = timeout_s
        self.max_results = max_results
        self.limit = DEFAULT_LIMIT_BYTES  # most bytes one retrieval may bring (``answers_at_most`` sets it)
        self.last_retrieval_bytes = 0  # encoded bytes the last retrieval brought
        self.move_to = move_to  # (host, port) our storage SCP listens on for C-MOVE; None: C-GET
        self._tls_client = self.tls.client_context() if self.tls is not None else None  # files read once, here

    # -- associations ---------------------------------------------------------------------------------------
    def _ae(self) -> Any:
        from pynetdicom import AE

        ae = AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout_s
        ae.connection_timeout = self.timeout_s
        return ae

    def _fail(self, reason: str) -> InputError:
        return InputError(f"{self.url}: {reason}")

    @contextmanager
    def _association(self, contexts: Sequence[tuple[str, list[str]]], roles: Sequence[Any] = ()) -> Iterator[Any]:
        """An association with ``contexts`` ((abstract syntax, transfer syntaxes) each), released afterwards."""
        import logging

        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # it logs each refusal with a traceback
        ae = self._ae()
        for abstract, syntaxes in contexts:
            if syntaxes:
                ae.add_requested_context(abstract, syntaxes)
            else:  # pynetdicom's default transfer syntaxes
                ae.add_requested_context(abstract)
        tls_args = (self._tls_client, self.host) if self._tls_client is not None else None
        assoc = ae.associate(self.host, self.port, ae_title=self.called_ae, ext_neg=list(roles) or None,
                             tls_args=tls_args)  # fmt: skip
        if assoc.is_rejected:
            raise self._fail(f"the PACS refused the association: is our AE title {self.ae_title!r} known to it "
                             f"(--ae-title), and is {self.called_ae!r} its own?")  # fmt: skip
        if not assoc.is_established:
            raise self._fail("cannot reach the PACS (connection refused, host unknown or no DICOM answer in time)"
                             + (TLS_HINT if self.tls is not None else ""))  # fmt: skip
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def _query_contexts(self) -> list[tuple[str, list[str]]]:
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

        return [(StudyRootQueryRetrieveInformationModelFind, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]

    def _ended(self, what: str) -> str:
        """Why a query or retrieval ended without an answer: a PACS that does not allow our AE title ends the
        association (Orthanc does), as does one that stays silent past the timeout."""
        return (f"the PACS ended the {what} without an answer: does it allow our AE title {self.ae_title!r} to "
                f"query and retrieve (--ae-title)? (or it did not answer within {self.timeout_s:g} s)")

    def _sent(self, send: Any, query: Any, model: str) -> Iterator[tuple[Any, Any]]:
        """The answers of one C-FIND / C-GET; a query pynetdicom cannot encode (a filter value too long for its
        attribute) is one line."""
        try:
            yield from send(query, model)
        except (ValueError, TypeError, AttributeError) as exc:
            if isinstance(exc, InputError):
                raise
            raise self._fail(f"query not sent ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})") from None

    # -- the calls the bridge makes ---------------------------------------------------------------------------
    def echo(self) -> None:
        """C-ECHO: the PACS answers and accepts our AE title (raises a one-line InputError otherwise)."""
        from pynetdicom.sop_class import Verification

        with self._association([(Verification, [])]) as assoc:
            status = assoc.send_c_echo()
            if not status or status.Status != _SUCCESS:
                raise self._fail("the PACS did not answer C-ECHO")

    def _find(self, level: str, keys: dict[str, Any]) -> list[dict]:
        """C-FIND answers at ``level`` as DICOM JSON datasets (at most ``max_results``)."""
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

        query = _identifier(level, keys)
        answers: list[dict] = []
        with self._association(self._query_contexts()) as assoc:
            for status, identifier in self._sent(assoc.send_c_find, query, StudyRootQueryRetrieveInformationModelFind):
                code = getattr(status, "Status", None)
                if code in _PENDING and identifier is not None:
                    answers.append(_as_json(identifier))
                    if len(answers) > self.max_results:
                        assoc.abort()
                        raise self._fail(f"more than {self.max_results:,} results for one query; narrow it "
                                         "(--study-filter)")  # fmt: skip
                elif code is None:
                    raise self._fail(self._ended("query"))
                elif code != _SUCCESS:
                    raise self._fail(f"the PACS refused the query (C-FIND status 0x{code:04X}): does it allow our "
                                     f"AE title {self.ae_title!r} to query?")  # fmt: skip
        return answers

    def search_for_studies(self, search_filters: dict[str, Any] | None = None, offset: int = 0,
                           limit: int | None = None, fields: Sequence[str] = ()) -> list[dict]:  # fmt: skip
        """The studies matching ``search_filters`` (keyword = value, e.g. ``ModalitiesInStudy=CT``), with the
        attributes ``fields`` names returned too (QIDO-RS's ``includefield``)."""
        if offset:  # DIMSE has no paging: everything came with the first page
            return []
        from pydicom.datadict import dictionary_VR, tag_for_keyword

        keys: dict[str, Any] = {"StudyInstanceUID": "", **dict.fromkeys(fields, "")}
        for keyword, value in (search_filters or {}).items():
            if tag_for_keyword(keyword) is None or dictionary_VR(tag_for_keyword(keyword)) == "SQ":
                raise InputError(f"study filter {keyword!r}: not a DICOM keyword a C-FIND can match")
            keys[keyword] = value
        answers = self._find("STUDY", keys)
        return answers[:limit] if limit else answers

    def search_for_series(self, study_instance_uid: str, offset: int = 0) -> list[dict]:
        """The series of one study, with their modality."""
        if offset:
            return []
        return self._find("SERIES", {"StudyInstanceUID": study_instance_uid, "SeriesInstanceUID": "", "Modality": ""})

    def retrieve_series_metadata(self, study_instance_uid: str, series_instance_uid: str) -> list[dict]:
        """Each instance's choosing headers (IMAGE-level C-FIND; one instance fetched if the PACS omits the size)."""
        from medanomaly.deploy.archive import HEADER_KEYWORDS

        keys = {kw: None for kw in HEADER_KEYWORDS}
        keys.update(StudyInstanceUID=study_instance_uid, SeriesInstanceUID=series_instance_uid, SOPInstanceUID="")
        answers = self._find("IMAGE", keys)
        if answers and not all(_has_value(answers[0], tag) for tag in ("00280010", "00280011")):
            answers = self._with_headers_of_one(answers, study_instance_uid, series_instance_uid)
        return answers

    def _with_headers_of_one(self, answers: list[dict], study_uid: str, series_uid: str) -> list[dict]:
        """``answers`` completed with the choosing headers of one instance, fetched by C-GET."""
        from medanomaly.deploy.archive import HEADER_KEYWORDS

        sop_uid = next((a["00080018"]["Value"][0] for a in answers if _has_value(a, "00080018")), None)
        if sop_uid is None:
            return answers
        (first, *_) = self._get("IMAGE", {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid,
                                           "SOPInstanceUID": sop_uid}) or [None]  # fmt: skip
        if first is None:
            return answers
        header = first.to_json_dict(bulk_data_threshold=0, bulk_data_element_handler=lambda element: "")
        wanted = {f"{first.data_element(kw).tag:08X}" for kw in HEADER_KEYWORDS if kw in first}
        return [{**{t: header[t] for t in wanted if t in header}, **{k: v for k, v in a.items() if _has_value(a, k)}}
                for a in answers]  # fmt: skip

    def retrieve_series(self, study_instance_uid: str, series_instance_uid: str) -> list[Any]:
        """Every instance of a series (C-GET), at most :attr:`limit` bytes in all."""
        return self._get("SERIES", {"StudyInstanceUID": study_instance_uid, "SeriesInstanceUID": series_instance_uid})

    def _get(self, level: str, keys: dict[str, str]) -> list[Any]:
        """The instances matching ``keys`` at ``level``: C-GET on our association, or C-MOVE to our own storage SCP
        when :attr:`move_to` is set (a PACS without C-GET)."""
        if self.move_to is not None:
            return self._move(level, keys)
        from pynetdicom import StoragePresentationContexts, build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as Get

        received = _Received(self.limit)
        storage = [c.abstract_syntax for c in StoragePresentationContexts]  # 120: a request holds 128 at most
        contexts = [(Get, [])] + [(s, transfer_syntaxes()) for s in storage]
        with self._association(contexts, [build_role(s, scp_role=True) for s in storage]) as assoc:
            assoc.bind(evt.EVT_C_STORE, received.on_store)
            final = self._final(assoc, self._sent(assoc.send_c_get, _identifier(level, keys), Get), received)
        return self._checked(final, received, "C-GET")

    def _move(self, level: str, keys: dict[str, str]) -> list[Any]:
        """C-MOVE to our AE title: the PACS connects to :attr:`move_to` (it must know our AE title there) and stores
        the instances into a storage SCP that lives for this retrieval and takes them from the PACS's AE only."""
        from pynetdicom import evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as Move

        received = _Received(self.limit)
        try:
            server = start_storage_scp(self.ae_title, [self.called_ae], self.move_to, [(evt.EVT_C_STORE, received.on_store)],
                                       self.tls, self.timeout_s, purpose=" for C-MOVE")  # fmt: skip
        except InputError as exc:
            raise self._fail(exc.reason) from None
        try:
            with self._association([(Move, [])]) as assoc:
                answers = self._sent(lambda q, m: assoc.send_c_move(q, self.ae_title, m), _identifier(level, keys), Move)
                final = self._final(assoc, answers, received)
        finally:
            server.shutdown()
        return self._checked(final, received, "C-MOVE")

    def _final(self, assoc: Any, answers: Iterator[tuple[Any, Any]], received: _Received) -> int | None:
        """The final status of a retrieval's answers; the association aborted as soon as the limit is passed."""
        final = None
        for status, _ in answers:
            if received.over:
                assoc.abort()
                raise self._over()
            final = getattr(status, "Status", None)
        return final

    def _over(self) -> InputError:
        return self._fail(f"the PACS sent more than the {self.limit / 2**20:,.1f} MiB allowed for this series "
                          "(read no further)")  # fmt: skip

    def _checked(self, final: int | None, received: _Received, service: str) -> list[Any]:
        """The received instances, or a one-line error for how the retrieval ended."""
        self.last_retrieval_bytes = received.bytes
        if received.over:  # the last instance passed it and no pending status followed (they are optional)
            raise self._over()
        if final is None:
            raise self._fail(self._ended("retrieval"))
        if received.unreadable:
            raise self._fail(f"the PACS sent {received.unreadable} instance(s) that are not readable DICOM")
        if final not in (_SUCCESS, _WARNING) or (final == _WARNING and not received.datasets):
            where = " and know where we listen (--move-port)" if service == "C-MOVE" else ""
            raise self._fail(f"the PACS refused the retrieval ({service} status 0x{final:04X}): does it allow our AE "
                             f"title {self.ae_title!r} to retrieve{where}?")  # fmt: skip
        if final == _WARNING:
            raise self._fail(f"the PACS sent only part of the series ({len(received.datasets)} instance(s); "
                             f"{service} warning)")  # fmt: skip
        return received.datasets

    def store_instances(self, datasets: Sequence[Any], study_instance_uid: str | None = None) -> dict:
        """C-STORE each dataset; the SOP Instance UIDs the PACS did not store as STOW-RS reports them."""
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

        contexts: dict[str, list[str]] = {}
        for ds in datasets:
            syntaxes = contexts.setdefault(str(ds.SOPClassUID), [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
            syntax = str(ds.file_meta.TransferSyntaxUID)
            if syntax not in syntaxes:
                syntaxes.insert(0, syntax)
        failed = []
        with self._association(list(contexts.items())) as assoc:
            for ds in datasets:
                try:
                    status = assoc.send_c_store(ds)
                except (ValueError, RuntimeError):  # the PACS accepted no context for its SOP class
                    status = None
                if getattr(status, "Status", None) not in (_SUCCESS, 0xB000, 0xB007, 0xB006):  # warnings: stored
                    failed.append(str(ds.SOPInstanceUID))
        return {"FailedSOPSequence": failed} if failed else {}


class _Received:
    """What one retrieval brings (C-GET on its association, or C-MOVE to our storage SCP): the instances, decoded,
    and their encoded bytes counted against ``limit`` as they arrive (thread-safe: a C-MOVE's stores come from the
    PACS's own associations)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.datasets, self.bytes, self.over, self.unreadable = limit, [], 0, False, 0
        self._lock = threading.Lock()

    def on_store(self, event: Any) -> int:
        with self._lock:
            self.bytes += event.request.DataSet.getbuffer().nbytes  # the encoded instance, before decoding
            if self.bytes > self.limit:
                self.over = True
                return _OUT_OF_RESOURCES
        try:
            dataset = event.dataset  # decoded in the transfer syntax of its presentation context
            dataset.file_meta = event.file_meta
            dataset.SOPInstanceUID  # noqa: B018 - parse the header now, not when the series is read
        except Exception:  # noqa: BLE001 - pydicom on bytes a PACS sent: counted, reported by the caller
            with self._lock:
                self.unreadable += 1
            return 0xC210  # cannot understand
        with self._lock:
            self.datasets.append(dataset)
        return _SUCCESS


def start_storage_scp(ae_title: str, allowed: Sequence[str], address: tuple[str, int], handlers: Sequence[Any],
                      tls: DicomTls | None = None, timeout_s: float | None = None, purpose: str = "") -> Any:
    """A storage SCP serving in its own threads (stop it with ``.shutdown()``): C-ECHO and C-STORE of every storage
    class, in every transfer syntax pydicom decodes (:func:`transfer_syntaxes`), from the calling AE titles
    ``allowed`` only, over TLS when ``tls`` has our certificate. The node's (``listen``) and a C-MOVE's.

    Raises:
        InputError: the address cannot be listened on (``cannot listen on HOST port PORT{purpose} (reason)``).
    """
    from pynetdicom import AE, AllStoragePresentationContexts
    from pynetdicom.sop_class import Verification

    scp = AE(ae_title=ae_title)
    scp.require_calling_aet = list(allowed)
    if timeout_s is not None:
        scp.network_timeout = scp.dimse_timeout = scp.acse_timeout = timeout_s
    scp.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        scp.add_supported_context(context.abstract_syntax, transfer_syntaxes())
    ssl_context = tls.server_context() if tls is not None and tls.cert is not None else None
    try:
        return scp.start_server(address, block=False, evt_handlers=list(handlers), ssl_context=ssl_context)
    except OSError as exc:
        raise InputError(f"cannot listen on {address[0]} port {address[1]}{purpose} ({exc.strerror or exc})") from None


def _identifier(level: str, keys: dict[str, Any]) -> Any:
    """The identifier of a C-FIND or C-GET at ``level`` (STUDY, SERIES, IMAGE) with ``keys`` (keyword: value; an
    empty or None value asks for the attribute)."""
    from pydicom import Dataset

    query = Dataset()
    query.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    return query


def _as_json(identifier: Any) -> dict:
    """A C-FIND answer as a DICOM JSON dataset, as QIDO-RS sends one; an attribute pydicom cannot convert is left
    out (a PACS answered a Japanese study's orientation as ``1.0000¥0.0000...``, its character set's backslash, and
    the whole poll ended in a traceback)."""
    out = {}
    for element in identifier:
        try:
            out[f"{element.tag:08X}"] = element.to_json_dict(None, 1024)
        except (ValueError, TypeError, OverflowError):
            continue
    return out


#: Said when a TLS association fails: the handshake is the likelier cause than the network.
TLS_HINT = ("; or the TLS handshake failed: is the PACS's certificate signed by --tls-ca and does it name the host? "
            "does the PACS want ours (--tls-cert, --tls-key)?")


def tls_for(url: str, tls: DicomTls | None) -> DicomTls | None:
    """The TLS files a ``url`` is used with: ``dimse+tls://`` always uses TLS (the system's trust store unless
    ``tls`` names a CA), ``dimse://`` never, and TLS files given for it are refused (they would go unused)."""
    if url.startswith("dimse+tls://"):
        return tls or DicomTls()
    if tls is not None and tls != DicomTls():
        raise InputError(f"{url}: --tls-* options are for a DICOM TLS PACS: name it dimse+tls://HOST:PORT/AE")
    return None


def _has_value(item: dict, tag: str) -> bool:
    attribute = item.get(tag)
    return isinstance(attribute, dict) and bool(attribute.get("Value"))

