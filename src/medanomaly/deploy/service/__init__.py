"""The HTTP service: upload a study, follow its job, read the findings (API + viewer).

Modules, one concern each: :mod:`.tokens` (bearer tokens, hashes only), :mod:`.store` (SQLite job
store that survives a restart), :mod:`.ingest` (upload limits, content sniffing, safe zip),
:mod:`.worker` (one worker thread per model), :mod:`.outputs` (what a job leaves on disk),
:mod:`.app` (the FastAPI app). ``medanomaly serve`` (:mod:`medanomaly.cli.serve`) starts it.
See ``docs/service.md``.
"""

from __future__ import annotations

__all__: list[str] = []
