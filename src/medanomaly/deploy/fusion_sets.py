"""A multimodal (fusion) model over an archive: the series of one study (or patient) paired into one set, one prediction
per set.

A fusion model takes one image per modality it was trained with (``T1`` and ``PD``; ``CT`` and ``MR``). In an archive
those are series of one study (a brain MR study holds its T1, T2, PD and FLAIR series). Per study:

* **Which series is which modality**: a modality name that is a DICOM Modality (``CT``, ``MR``, ``PT``...; ``MRI``
  and ``PET`` too) matches the series of that Modality; another name (``T1``, ``PD``, ``FLAIR``...) matches the series
  whose SeriesDescription holds it as a word, case-insensitive, a trailing ``W`` or ``WI`` allowed (``t1_mprage_sag``,
  ``AX T1W``, ``T1WI``; not ``T1rho``, not ``PDFS`` unless told), of the Modality the name implies (an MR sequence's
  name matches no CT series described "T1 chest"). ``--modality-series NAME=REGEX`` replaces a name's rule by a case-insensitive
  regular expression searched in the SeriesDescription (``PD=pd_tse|proton``). Localizers never match.
* **One series per modality**: two series that match one modality (a T1 before and after contrast), or one series that
  matches two, make the study an error on each of them, naming the series and the option that tells them apart; a
  series no modality matches is skipped; a modality no series of the study matches is missing (the model's
  ``missing_modality`` flag, as ``MOD=-`` on the command line).
* **One row per series**: the set's prediction is the row of its first present modality's series (in the model's
  order; its ``fusion`` field names each modality's series by its id); the others are skipped, naming that row. A
  member over the memory limit refuses the set. A resumed batch redoes a set whose members changed.
* **One grid**: the model takes its modalities on one grid. ``--resample-to-first`` brings each other modality onto
  the first's grid by patient coordinates, and only when both series share a DICOM frame of reference (the scanner's
  coordinates, no registration); ``--register-to-first`` registers it onto the first (rigid, any frame of reference:
  :mod:`medanomaly.engine.alignment`); otherwise a set on several grids is an error saying so.
* **A patient's studies** (``--pair-by patient``): the series of one patient's studies are paired as one study's are
  (a CT study and an MR study of two visits: by study each ran alone, its other modality missing), the patient told by
  a keyed hash of PatientID and its issuer whose secret is new in each run
  (:func:`medanomaly.deploy.archive.patient_key`: never written, meaningless after the run); a series whose header
  names no patient is paired within its study. Two visits with a CT each are two series that match CT: an error
  naming them, as in one study.

A series description is used only to match; it is never written to a result (it is free text).

Example:
    >>> from medanomaly.deploy.archive import SeriesEntry
    >>> t1 = SeriesEntry("1.1", "9", "dicom", modality="MR", description="AX T1W SE")
    >>> pd = SeriesEntry("1.2", "9", "dicom", modality="MR", description="pd_tse_tra")
    >>> matchers = modality_matchers(("T1", "PD"))
    >>> [name for name, match in matchers.items() if match(t1)], [name for name, match in matchers.items() if match(pd)]
    (['T1'], ['PD'])
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from medanomaly.deploy.archive import SeriesEntry
from medanomaly.deploy.select import Decision
from medanomaly.errors import InputError

__all__ = ["FUSION_SELECTION", "PAIR_BY", "FusionSet", "PartnerReadError", "aligned", "modality_matchers", "pair_studies",
           "parse_modality_series", "partner_headers", "partner_problems", "partner_skips", "read_set",
           "with_fusion_sets"]

#: The selection policy of a fusion model's batch (``deploy.select.selection_policy`` gives the task name).
FUSION_SELECTION = "fusion"
#: Most series a reason names (the rest counted).
MAX_NAMED = 5
#: Longest ``--modality-series`` expression (characters).
MAX_PATTERN = 200
_LOCALIZER = frozenset({"LOCALIZER", "SCOUT", "TOPOGRAM"})
#: Modality names matched by DICOM Modality rather than by description (imaging modalities only: a retired code such
#: as FA, fluorescein angiography, is also a diffusion map's name).
IMAGING_MODALITIES = frozenset("CT MR PT NM US CR DX MG XA RF IO PX OCT OP SM".split())
#: Modality names that are words for a DICOM Modality.
_MODALITY_WORDS = {"mri": "MR", "pet": "PT"}


@dataclass(frozen=True)
class FusionSet:
    """One study's series per modality of the model, in the model's order (None: the study has none)."""

    members: tuple[tuple[str, SeriesEntry | None], ...]

    @property
    def primary(self) -> tuple[str, SeriesEntry]:
        """The first present modality and its series: the set's row, and the series its DICOM results reference."""
        return next((name, entry) for name, entry in self.members if entry is not None)

    def ids(self, series_id: Callable[[SeriesEntry], str]) -> dict[str, str | None]:
        """Each modality's series as results name it (None: missing)."""
        return {name: None if entry is None else series_id(entry) for name, entry in self.members}


def parse_modality_series(rules: Sequence[str], names: Sequence[str] | None) -> dict[str, re.Pattern[str]]:
    """``NAME=REGEX`` rules (``--modality-series``) as compiled case-insensitive patterns, by modality name
    (``names`` None: any name, the form alone checked before the model is loaded).

    Raises:
        InputError: a rule without ``=``, a name the model does not take, a name given twice, an empty, too long or
            invalid expression.
    """
    out: dict[str, re.Pattern[str]] = {}
    for rule in rules:
        name, sep, pattern = str(rule).partition("=")
        name = name.strip()
        if not sep or not pattern:
            raise InputError(f"--modality-series takes NAME=REGEX (e.g. PD=pd_tse), got {rule[:64]!r}")
        if names is not None and name not in names:
            raise InputError(f"--modality-series {name[:64]!r}: the model's modalities are {', '.join(names)}")
        if name in out:
            raise InputError(f"--modality-series {name}: given twice")
        if len(pattern) > MAX_PATTERN:
            raise InputError(f"--modality-series {name}: the expression is over {MAX_PATTERN} characters")
        try:
            out[name] = re.compile(pattern, re.IGNORECASE)
        except re.error as exc:
            raise InputError(f"--modality-series {name}: not a regular expression ({exc})") from None
    return out


def modality_matchers(names: Sequence[str], patterns: Mapping[str, re.Pattern[str]] | None = None,
                      ) -> dict[str, Callable[[SeriesEntry], bool]]:  # fmt: skip
    """For each modality name, whether a series is that modality (see the module docstring)."""
    from medanomaly.fusion.data import EXPECTED_DICOM_MODALITY

    patterns = dict(patterns or {})
    out: dict[str, Callable[[SeriesEntry], bool]] = {}
    for name in names:
        code = name.upper() if name.upper() in IMAGING_MODALITIES else _MODALITY_WORDS.get(name.lower())
        if name in patterns:
            out[name] = lambda e, p=patterns[name]: bool(p.search(e.description))
        elif code:
            out[name] = lambda e, c=code: e.modality == c
        else:
            word = re.compile(rf"(?<![a-z0-9]){re.escape(name)}(?:wi?)?(?![a-z0-9])", re.IGNORECASE)
            implied = EXPECTED_DICOM_MODALITY.get(name.lower())
            out[name] = lambda e, p=word, m=implied: bool(p.search(e.description)) and m in (None, e.modality)
    return out


#: What a fusion set is made within (``--pair-by``): one study's series, or one patient's, across their studies.
PAIR_BY = ("study", "patient")


def pair_studies(decisions: Sequence[Decision], names: Sequence[str],
                 matchers: Mapping[str, Callable[[SeriesEntry], bool]], name_of: Callable[[str], str] = str,
                 by: str = "study") -> tuple[list[Decision], dict[str, FusionSet]]:  # fmt: skip
    """The decisions with each study's (``by="patient"``: each patient's) series paired into one set (see the module
    docstring), and the sets by the key of the series whose row runs them. ``name_of`` names a series in a reason,
    from its key (a keyed id). A series whose header names no patient is paired within its study."""
    groups: dict[tuple[str, str], list[Decision]] = {}
    for d in decisions:
        if d.status in ("run", "refused"):
            patient = d.entry.patient_key if by == "patient" else None
            groups.setdefault(("patient", patient) if patient else ("study", d.entry.study_uid or d.entry.key),
                              []).append(d)  # fmt: skip
    changed: dict[str, Decision] = {}
    sets: dict[str, FusionSet] = {}
    for (kind, _), group in groups.items():
        _pair_study(group, names, matchers, name_of, changed, sets, kind)
    return [changed.get(d.entry.key, d) for d in decisions], sets


def with_fusion_sets(model: Any, decisions: list[Decision], ctx: Any) -> tuple[list[Decision], Any]:
    """For a fusion model, the decisions with each study's (patient's) series paired into sets, and the batch context
    (:class:`medanomaly.deploy.batch_context.BatchContext`) holding them; any other model's as they are."""
    if ctx.selection != FUSION_SELECTION:
        return decisions, ctx
    names = tuple(getattr(model, "modalities", ()))
    matchers = modality_matchers(names, parse_modality_series(ctx.options.modality_series, names))
    decisions, sets = pair_studies(decisions, names, matchers, ctx.series_id_of, ctx.options.pair_by)
    return decisions, replace(ctx, sets=sets)


def _matches(entry: SeriesEntry, names: Sequence[str], matchers: Mapping[str, Callable[[SeriesEntry], bool]]) -> list[str]:
    if _LOCALIZER.intersection(entry.image_type):
        return []
    return [name for name in names if matchers[name](entry)]


def _pair_study(group: Sequence[Decision], names: Sequence[str], matchers: Mapping[str, Callable[[SeriesEntry], bool]],
                name_of: Callable[[str], str], changed: dict[str, Decision], sets: dict[str, FusionSet],
                by: str = "study") -> None:  # fmt: skip
    """Pair one study's (or patient's) series (``changed`` and ``sets`` filled in place)."""
    matched = {d.entry.key: _matches(d.entry, names, matchers) for d in group}
    rule = f"matched by Modality or SeriesDescription, --modality-series NAME=REGEX; the model takes {', '.join(names)}"
    for d in group:
        if not matched[d.entry.key] and d.status != "refused":  # a refusal (too large) stays one, whatever it is
            changed[d.entry.key] = replace(d, status="skipped", reason=f"no modality of the fusion model ({rule})")
    by_name = {name: [d for d in group if name in matched[d.entry.key]] for name in names}
    reason = _ambiguity(by_name, matched, name_of, by)
    if reason:
        for d in group:
            if matched[d.entry.key]:
                changed[d.entry.key] = replace(d, status="error", reason=f"{reason}: tell them apart with "
                                                                          "--modality-series NAME=REGEX")  # fmt: skip
        return
    chosen = {name: (ds[0] if ds else None) for name, ds in by_name.items()}
    fusion = FusionSet(tuple((name, None if d is None else d.entry) for name, d in chosen.items()))
    if fusion.members and all(entry is None for _, entry in fusion.members):
        return
    primary_name, primary = fusion.primary
    refused = next(((n, d) for n, d in chosen.items() if d is not None and d.status == "refused"), None)
    for name, d in chosen.items():
        if d is not None and d.entry.key != primary.key and d.status != "refused":
            changed[d.entry.key] = replace(d, status="skipped", reason=f"{name} of the fusion set in the row of "
                                                                       f"series {name_of(primary.key)}")  # fmt: skip
    if refused is not None:
        changed[primary.key] = replace(chosen[primary_name], status="refused",  # type: ignore[arg-type]
                                       reason=f"{refused[0]}: {refused[1].reason}")  # fmt: skip
    else:
        changed[primary.key] = replace(chosen[primary_name], status="run", reason="")  # type: ignore[arg-type]
        sets[primary.key] = fusion


def _ambiguity(by_name: Mapping[str, Sequence[Decision]], matched: Mapping[str, Sequence[str]],
               name_of: Callable[[str], str], by: str = "study") -> str:  # fmt: skip
    """Why a study's (a patient's) series make no set (a modality matched by several series, a series matching several
    modalities), or "" when they make one."""
    double = [d for ds in by_name.values() for d in ds if len(matched[d.entry.key]) > 1]
    double = list({d.entry.key: d for d in double}.values())  # each such series once
    parts = [f"{len(ds)} series of its {by} match {n} ({_some(ds, name_of)})" for n, ds in by_name.items() if len(ds) > 1]
    parts += [f"series {name_of(d.entry.key)} matches {' and '.join(matched[d.entry.key])}" for d in double[:MAX_NAMED]]
    if len(double) > MAX_NAMED:
        parts.append(f"{len(double) - MAX_NAMED} more series match two")
    return "; ".join(parts)


def _some(decisions: Sequence[Decision], name_of: Callable[[str], str]) -> str:
    """Up to :data:`MAX_NAMED` series named, then how many more (a study of hundreds of series gave each of its rows
    every id)."""
    named = ", ".join(name_of(d.entry.key) for d in decisions[:MAX_NAMED])
    return named + (f" and {len(decisions) - MAX_NAMED} more" if len(decisions) > MAX_NAMED else "")


def aligned(volumes: Mapping[str, Any], first: str, alignment: str) -> dict[str, Any]:
    """The modalities' Volumes, each other one resampled or registered onto ``first``'s grid as ``alignment`` says
    (:func:`medanomaly.engine.alignment.align_to_first`); with ``none`` a member on another grid is an error saying
    how to bring it onto one (the model's own message names `medanomaly register` only).

    Raises:
        InputError: a member on another grid, or of another recorded frame of reference, with ``none``; in another
            frame of reference with ``resample``; one registration cannot align with ``register``.
    """
    from medanomaly.engine.alignment import align_to_first

    if alignment != "none":
        return align_to_first(volumes, alignment)
    reference = volumes[first]
    for name, volume in volumes.items():
        if volume is not None and name != first and not volume.same_grid(reference):
            raise InputError(f"{name} is on another grid than {first} ({_grid(volume)} vs {_grid(reference)}): "
                             "--resample-to-first brings it onto the first's when they share a frame of reference, "
                             "--register-to-first by registration otherwise")  # fmt: skip
    return align_to_first(volumes, "none")  # one grid: one frame of reference too, where they record one


def _grid(volume: Any) -> str:
    size = "x".join(str(n) for n in volume.size_xyz)
    return f"{size} voxels of {' x '.join(f'{s:g}' for s in volume.spacing)} mm"


class PartnerReadError(InputError):
    """A set's other series could not be read: the reason numbers its files (``file 3 of the PD series``); the reader's
    own message (its link names) and the series' key stay with it, for ``problems.csv`` to name that series' files
    (:func:`partner_problems`): the links were named as the row's own series' files, another series' (the PD's gap
    between two of the T1's files)."""

    def __init__(self, reason: str, path: Any, series_key: str, reader_reason: str) -> None:
        super().__init__(reason, path)
        self.series_key = series_key
        self.reader_reason = reader_reason


def read_set(entry: SeriesEntry, ctx: Any, volume: Any = None) -> tuple[dict[str, Any], Any]:
    """Read the set whose row is ``entry``'s series (``volume``: that series, already read).

    Returns:
        ``(each modality's Volume, on one grid with --resample-to-first, or None; the first modality's Volume, what
        the DICOM results reference)``.

    Raises:
        InputError: a member that cannot be read (its modality named) or aligned.
    """
    from medanomaly.deploy.archive import numbered_files, read_series

    fusion: FusionSet = ctx.sets[entry.key]
    first, _ = fusion.primary
    volumes: dict[str, Any] = {}
    for name, member in fusion.members:
        if member is None:
            volumes[name] = None
        elif member.key == entry.key and volume is not None:
            volumes[name] = volume
        else:
            try:
                volumes[name] = read_series(member, ctx.options.memory_limit, ctx.series_id(member))
            except InputError as exc:
                if member.key == entry.key:  # the row's own series: its files are named as any row's are
                    raise InputError(f"{name}: {exc.reason}", exc.path) from None
                numbered = numbered_files(member, exc.reason).replace(" of the series", f" of the {name} series")
                where = " (files named in problems.csv)" if numbered != exc.reason else ""
                raise PartnerReadError(f"{name}: {numbered}{where}", exc.path, member.key, exc.reason) from None
    volumes = aligned(volumes, first, ctx.alignment)
    return volumes, volumes[first]


def partner_skips(fusion: FusionSet, entry: SeriesEntry, volumes: Mapping[str, Any],
                  series_id: Callable[[SeriesEntry], str]) -> dict[str, list[list[str]]]:  # fmt: skip
    """The files the reader skipped in each other series of the set (a copy of an instance, a truncated slice), by
    that series' id: ``{id: [[name, reason], ...]}`` for the record (:func:`partner_problems` names them)."""
    out = {}
    for name, member in fusion.members:
        volume = volumes.get(name)
        if member is None or member.key == entry.key or volume is None:
            continue
        meta = volume.meta
        skipped = [list(pair) for pair in zip(meta.get("skipped_files", ()), meta.get("skipped_reasons", ()),
                                               strict=False)]  # fmt: skip
        if skipped:
            out[series_id(member)] = skipped
    return out


def partner_problems(fusion: FusionSet, record: Mapping[str, Any], root: Any, file_id: Callable[[str], str],
                     series_id: Callable[[SeriesEntry], str]) -> list[Any]:  # fmt: skip
    """The skipped files a set's record lists for its other series (:func:`partner_skips`) as problems naming the
    archive's files, as the row's own series' are (the console said "named in problems.csv", which did not name them);
    and the files of another series that could not be read (:class:`PartnerReadError`, ``partner_error``)."""
    from medanomaly.deploy.archive import Problem, named_files, skipped_problems

    by_id = {series_id(m): m for _, m in fusion.members if m is not None}
    out = [p for sid, skipped in (record.get("skipped_partners") or {}).items() if sid in by_id
           for p in skipped_problems(by_id[sid], skipped, root, file_id)]  # fmt: skip
    error = record.get("partner_error") or {}
    if error.get("series") in by_id:  # only a reason that names a file is a problem of its own
        named = named_files(by_id[error["series"]], error["reason"], root, file_id)
        if named != error["reason"]:
            out.append(Problem(error["series"], named, kind="series"))
    return out


def partner_headers(fusion: FusionSet, entry: SeriesEntry) -> dict[str, list[Any]]:
    """The headers of the set's other DICOM series (not ``entry``'s), by modality, read once: the call SR's evidence
    beside its own series, and the Spatial Registration's moved series."""
    from medanomaly.deploy.dicom_source import series_headers

    return {name: series_headers(member.files, member.key) for name, member in fusion.members
            if member is not None and member.key != entry.key and member.kind == "dicom"}  # fmt: skip
