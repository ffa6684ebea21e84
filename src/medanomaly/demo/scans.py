"""Demo step ``scans``: every embedded real scan of DATA.md, summarised and shown.

Prints one table row per scan (source, modality, shape, spacing, intensity range) and writes
``contact_sheet.png`` (the middle slice of each, CT in a clinical window, volumes reoriented
to LPS so that anterior is up and the patient's left is on the image right, the radiological
convention) and ``scans.json`` (the same summary) into the demo folder.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medanomaly.io.staged import save_figure
from medanomaly.jsonio import write_text_atomic
from medanomaly.preprocess.intensity import WINDOWS as PRESETS
from medanomaly.types import Volume

if TYPE_CHECKING:  # pragma: no cover
    from medanomaly.demo import DemoContext

log = logging.getLogger(__name__)

#: CT display windows (center, width) in HU, from the one window table (``preprocess.intensity.WINDOWS``).
WINDOWS = {name: ((PRESETS[p][0] + PRESETS[p][1]) / 2, PRESETS[p][1] - PRESETS[p][0])
           for name, p in (("lung", "lung"), ("soft", "mediastinum"), ("brain", "brain"), ("bone", "bone"))}


@dataclass(frozen=True)
class EmbeddedScan:
    """One real scan shipped by a package or Debian (see ``medanomaly.data.sources``).

    Attributes:
        name: short label in the table and the sheet.
        key: ``real_data`` key, or ``"skimage/retina"`` for scikit-image's fundus photo.
        modality: modality when the file does not say (NRRD/NIfTI/PNG carry none).
        window: CT window name from :data:`WINDOWS`, or None for a percentile stretch.
        what: one-line description.
    """

    name: str
    key: str
    modality: str | None = None
    window: str | None = None
    what: str = ""


EMBEDDED_SCANS: tuple[EmbeddedScan, ...] = (
    EmbeddedScan("lung1", "pyradiomics/lung1_image.nrrd", "CT", "lung", "chest CT, lung nodule"),
    EmbeddedScan("lung2", "pyradiomics/lung2_image.nrrd", "CT", "lung", "chest CT, lung tumour"),
    EmbeddedScan("breast1", "pyradiomics/breast1_image.nrrd", "MR", None, "breast MRI crop, lesion"),
    EmbeddedScan("brain1", "pyradiomics/brain1_image.nrrd", "MR", None, "brain MRI, lesion"),
    EmbeddedScan("brain2", "pyradiomics/brain2_image.nrrd", "MR", None, "brain MRI, lesion"),
    EmbeddedScan("cranium", "invesalius/cranium.nrrd", "CT", "brain", "head CT (InVesalius)"),
    EmbeddedScan("CT_small", "pydicom/CT_small.dcm", None, "soft", "CT slice"),
    EmbeddedScan("eCT", "pydicom/eCT_Supplemental.dcm", None, "brain", "enhanced multi-frame head CT"),
    EmbeddedScan("MR_small", "pydicom/MR_small.dcm", None, None, "MR slice"),
    EmbeddedScan("MR2 shoulder", "pydicom/MR2_UNCR.dcm", None, None, "shoulder MR"),
    EmbeddedScan("RG1 chest", "pydicom/RG1_UNCR.dcm", None, None, "CR chest PA"),
    EmbeddedScan("RG3 tibia", "pydicom/RG3_UNCR.dcm", None, None, "CR tibia, fibroma"),
    EmbeddedScan("US1", "pydicom/US1_UNCR.dcm", None, None, "ultrasound (RGB)"),
    EmbeddedScan("US palette", "pydicom/OBXXXX1A.dcm", None, None, "ultrasound (palette colour)"),
    EmbeddedScan("echo", "pydicom/color3d_jpeg_baseline.dcm", None, None, "120-frame colour echo (JPEG)"),
    EmbeddedScan("T1 slice", "itk/BrainT1Slice.png", "MR", None, "brain MRI T1 (ITK)"),
    EmbeddedScan("PD slice", "itk/BrainProtonDensitySlice.png", "MR", None, "brain MRI PD (ITK)"),
    EmbeddedScan("ch2", "mricron/ch2.nii.gz", "MR", None, "T1 brain template (MRIcron)"),
    EmbeddedScan(
        "MNI152", "nilearn/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", "MR", None, "MNI152 T1 (nilearn)"
    ),
    EmbeddedScan("retina", "skimage/retina", "OP", None, "fundus photo (scikit-image)"),
)


def load_scan(scan: EmbeddedScan) -> Volume:
    """Read one embedded scan as a Volume, filling in the modality the file lacks."""
    from medanomaly.data.sources import real_data
    from medanomaly.io import read

    if scan.key == "skimage/retina":
        from skimage import data

        vol = Volume(data.retina()[np.newaxis], meta={"source_format": "png", "channels": 3, "photometric": "RGB"})
    else:
        vol = read(real_data(scan.key))
    if scan.modality and vol.modality in ("OT", ""):
        vol = vol.with_meta(modality=scan.modality, **({"units": "HU"} if scan.modality == "CT" else {}))
    return vol


def reorient_lps(vol: Volume) -> Volume:
    """The same voxels with index axes along +L, +P, +S (for display; 3D scalar or RGB)."""
    if vol.is_2d or np.allclose(vol.direction, np.eye(3)):
        return vol
    import SimpleITK as sitk

    image = sitk.DICOMOrient(vol.to_sitk(), "LPS")
    return Volume.from_sitk(image, **vol.meta)


def display_slice(vol: Volume, window: str | None) -> tuple[np.ndarray, float]:
    """(uint8 middle axial slice, pixel aspect y/x) ready for ``imshow``."""
    from medanomaly.io.png import to_uint8

    vol = reorient_lps(vol)
    plane = vol.array[vol.shape[0] // 2]
    if plane.ndim == 3:  # colour
        out = plane if plane.dtype == np.uint8 else to_uint8(plane)
    else:
        out = to_uint8(plane, WINDOWS[window] if window else None)
    return out, vol.spacing[1] / vol.spacing[0]


def summarise(scan: EmbeddedScan, vol: Volume) -> dict[str, Any]:
    """One JSON-able row of the summary table."""
    array = vol.array
    return {
        "name": scan.name,
        "source": scan.key.split("/", 1)[0],
        "what": scan.what,
        "modality": vol.modality,
        "format": vol.meta.get("source_format"),
        "shape": list(vol.shape) + ([vol.n_components] if vol.n_components > 1 else []),
        "spacing_mm": [round(s, 4) for s in vol.spacing],
        "min": float(array.min()),
        "max": float(array.max()),
        "units": vol.meta.get("units"),
    }


def blank_burned_in_text(plane: np.ndarray, vol: Volume) -> np.ndarray:
    """The displayed plane with burned-in text blanked (:mod:`medanomaly.privacy.burned_in`), so
    no identifier printed into an ultrasound frame reaches the contact sheet. For a cine, only
    text that stays still across frames counts (moving anatomy is not text)."""
    from medanomaly.privacy.burned_in import blank_regions, detect_text_regions

    if vol.shape[0] > 1:
        frames = vol.array[:: max(1, vol.shape[0] // 8)]
        return blank_regions(plane, detect_text_regions(np.asarray(frames), multiframe=True))
    for _ in range(3):  # blanking can uncover fainter text next to what it removed: look again
        regions = detect_text_regions(plane)
        if not regions:
            break
        plane = blank_regions(plane, regions)
    return plane


def contact_sheet(items: list[tuple[EmbeddedScan, Volume, dict[str, Any]]], path: Any) -> None:
    """Grid of middle slices with name, modality and shape under each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(items)
    cols = 5
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.5 * rows), facecolor="black")
    for ax in np.ravel(axes):
        ax.set_axis_off()
    for ax, (scan, vol, row) in zip(np.ravel(axes), items, strict=False):
        plane, aspect = display_slice(vol, scan.window)
        redacted = ""
        if row["modality"] == "US":  # ultrasound test files carry burned-in (fake) patient text
            plane = blank_burned_in_text(plane, vol)
            redacted = ", text blanked"
        ax.imshow(plane, cmap=None if plane.ndim == 3 else "gray", aspect=aspect, interpolation="lanczos")
        shape = "x".join(str(s) for s in row["shape"])
        win = f", {scan.window} window" if scan.window else ""
        ax.set_title(f"{scan.name} ({row['modality']}{win}{redacted})\n{scan.what}\n{shape}", color="white",
                     fontsize=8)
    fig.suptitle("medanomaly demo: embedded real scans (middle slice each)", color="white", fontsize=12)
    fig.tight_layout()
    save_figure(fig, path, dpi=110, facecolor="black")


def run(ctx: DemoContext) -> list[dict[str, Any]]:
    """Read every embedded scan, print the table, write ``contact_sheet.png`` and ``scans.json``."""
    from rich.table import Table

    from medanomaly.errors import InputError

    items = []
    table = Table(title="Embedded real scans")
    for column in ("scan", "source", "modality", "shape (z,y,x[,c])", "spacing (x,y,z) mm", "intensity range"):
        table.add_column(column)
    for scan in EMBEDDED_SCANS:
        try:
            vol = load_scan(scan)
        except (InputError, FileNotFoundError) as exc:  # a broken item is reported, the rest go on
            ctx.console.print(f"[red]skipped {scan.name}: {exc}[/red]")
            continue
        row = summarise(scan, vol)
        items.append((scan, vol, row))
        units = f" {row['units']}" if row["units"] else ""
        table.add_row(
            scan.name,
            row["source"],
            row["modality"],
            "x".join(map(str, row["shape"])),
            ", ".join(f"{s:.3g}" for s in row["spacing_mm"]),
            f"{row['min']:.6g} .. {row['max']:.6g}{units}",
        )
    ctx.console.print(table)
    sheet = ctx.out_dir / "contact_sheet.png"
    contact_sheet(items, sheet)
    summary = [row for _, _, row in items]
    write_text_atomic(ctx.out_dir / "scans.json", json.dumps(summary, indent=1))
    ctx.console.print(f"wrote {sheet} ({len(items)} scans) and {ctx.out_dir / 'scans.json'}")
    return summary
