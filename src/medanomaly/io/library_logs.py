"""Quiet the image libraries' own log messages: the DICOM libraries quote header values, nibabel adds lines.

pydicom logs every value it finds invalid (``Invalid value for VR DA: '<a birth date>'``, a patient name too
long for PN) through the ``pydicom`` logger as well as through ``warnings``, and highdicom logs what it copies from
source datasets. A service that logs at INFO (``medanomaly serve``) would write those values, which may be PHI,
into its log. nibabel prints the header fixes it makes (``qfac (pixdim[0]) should be 1``) through a stderr handler
of its own, a second line beside the CLI's one-line error. medanomaly reports what matters itself, one line per file
with a fixed reason, so the CLI and the service raise these loggers' level to CRITICAL (none of them logs at that
level) and ignore pydicom's ``UserWarning``s (multi-line, quoting the same values); so do Ray's worker processes,
which start without the CLI.

Example:
    >>> import logging
    >>> quiet_image_libraries()
    >>> logging.getLogger("pydicom").isEnabledFor(logging.WARNING)
    False
"""

from __future__ import annotations

import logging

__all__ = ["QUIETED_LIBRARY_LOGGERS", "quiet_image_libraries"]

#: Loggers whose messages may quote DICOM header values, and nibabel's, whose own stderr handler printed the header
#: fixes it makes (``qfac (pixdim[0]) should be 1 (default) or -1``) as a second line beside the reader's own.
QUIETED_LIBRARY_LOGGERS = ("pydicom", "highdicom", "nibabel.global")


def quiet_image_libraries() -> None:
    """Raise the image libraries' loggers (:data:`QUIETED_LIBRARY_LOGGERS`) to CRITICAL and ignore pydicom's
    ``UserWarning``s about odd-but-readable headers, for this process (see the module docstring)."""
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")
    for name in QUIETED_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
