"""This session's serverless jobs, as submitted from the magics and panels (thread safe)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from ..models import Job

__all__ = ["JOBS", "JobEntry", "JobLog"]


@dataclass(frozen=True)
class JobEntry:
    """One job as last seen, with when it was submitted and when it was seen finished."""

    job: Job
    submitted_at: datetime
    finished_at: datetime | None = None
    chunks: int = 0


class JobLog:
    """Jobs keyed by ``(provider, endpoint, id)``, in submission order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str, str], JobEntry] = {}

    def record(self, job: Job, *, chunks: int | None = None) -> JobEntry:
        """Add a job, or update it with a fresher state."""
        key = (job.provider, job.endpoint, job.id)
        now = datetime.now(UTC)
        with self._lock:
            old = self._entries.get(key)
            entry = old or JobEntry(job=job, submitted_at=job.created_at or now)
            finished = entry.finished_at or (now if job.done else None)
            entry = replace(entry, job=job, finished_at=finished,
                            chunks=entry.chunks if chunks is None else chunks)
            self._entries[key] = entry
            return entry

    def entries(self) -> list[JobEntry]:
        """Every job, oldest first."""
        with self._lock:
            return list(self._entries.values())

    def clear(self) -> None:
        """Forget every job (the remote jobs are not touched)."""
        with self._lock:
            self._entries.clear()


JOBS = JobLog()
"""The process-wide log (a kernel is one session)."""
