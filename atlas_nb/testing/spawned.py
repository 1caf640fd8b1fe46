"""What the conformance suite spawned, and the teardown that removes all of it."""

from __future__ import annotations

import contextlib
import secrets
from typing import Any

import atlas_nb as atlas

from .options import ConformanceOptions

__all__ = ["Spawned"]


class Spawned:
    """Spawns computes and submits jobs for one test, and cleans up after it.

    Every compute gets a name under a per-test prefix (``atlas-conf-<hex>-<n>``), so
    a compute whose spawn call failed after the cloud created it can still be found
    by name and terminated. ``close()`` runs in fixture teardown, also when the test
    failed.
    """

    def __init__(self, provider: Any, options: ConformanceOptions) -> None:
        self.provider = provider
        self.options = options
        self.prefix = f"atlas-conf-{secrets.token_hex(4)}"
        self.compute_ids: list[str] = []
        self.jobs: list[atlas.Job] = []
        self._count = 0
        self._spawn_failed = False

    def spawn(self, **overrides: Any) -> atlas.Compute:
        """``atlas.spawn_compute`` with ``options.spawn`` + ``overrides`` and a fresh name."""
        self._count += 1
        fields = {**self.options.spawn, **overrides, "name": f"{self.prefix}-{self._count}"}
        try:
            compute = atlas.spawn_compute(provider=self.provider, **fields)
        except BaseException:
            self._spawn_failed = True
            raise
        self.compute_ids.append(compute.id)
        return compute

    def run_job(self, endpoint: str, **fields: Any) -> atlas.Job:
        """``atlas.run_job``; the job is cancelled in teardown if it is still running."""
        job = atlas.run_job(provider=self.provider, endpoint=endpoint, **fields)
        self.jobs.append(job)
        return job

    def close(self) -> None:
        """Cancel unfinished jobs (best effort), then terminate every compute.

        Raises ``AssertionError`` listing the computes it could not terminate, because
        those may still be billing.
        """
        for job in self.jobs:
            # A job costs seconds, not hours: a failed cancel is not worth a teardown error.
            with contextlib.suppress(Exception):
                if not atlas.get_job(job, provider=self.provider).done:
                    atlas.cancel_job(job, provider=self.provider)
        ids = list(self.compute_ids)
        if self._spawn_failed:
            # The create may have landed even though the call failed: find it by name.
            with contextlib.suppress(Exception):
                for c in atlas.list_compute(provider=self.provider, name=self.prefix):
                    if c.id not in ids and c.status != "terminated":
                        ids.append(c.id)
        failures = []
        for cid in ids:
            try:
                atlas.terminate(cid, provider=self.provider)
            except Exception as exc:  # any failure here is a possible leak: report them all
                failures.append(f"{cid} ({type(exc).__name__}: {exc})")
        if failures:
            raise AssertionError(
                "conformance teardown could not terminate (they may still be billing; "
                f"terminate them by hand): {', '.join(failures)}"
            )
