"""The audit log: ``<prefix>_fleet/audit/``, one create-only object per change (who, when, model,
before → after), written by master after each desired-state write."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from google.cloud import storage
from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from services.common import gcs
from services.common.contracts import AuditEntry
from services.common.errors import BucketError

logger = logging.getLogger(__name__)

AUDIT_WRITE_ATTEMPTS = 3
BucketCall = Callable[[str, Callable[[], Any]], Awaitable[Any]]


class AuditLog:
    """Append and read audit entries; ``bucket_call`` runs a blocking call with the store's deadline."""

    def __init__(
        self, *, client: storage.Client, bucket: str, prefix: str, timeout: float, bucket_call: BucketCall
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.timeout = timeout
        self._bucket = bucket_call

    async def append(self, entry: AuditEntry) -> str | None:
        """Write one entry (create-only), retried with backoff; None when it could not be written (logged)."""
        name = self.prefix + entry.object_name()
        data = entry.to_json().encode()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(AUDIT_WRITE_ATTEMPTS),
            wait=wait_random_exponential(multiplier=0.2, max=2.0),
            retry=retry_if_exception_type(BucketError),
            before_sleep=lambda state: logger.warning(
                "audit write attempt %s failed: %s", state.attempt_number, state.outcome and state.outcome.exception()
            ),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._bucket(
                        "write audit entry",
                        lambda: gcs.write_object(
                            self.client, self.bucket, name, data, if_generation_match=0, timeout=self.timeout
                        ),
                    )
        except BucketError:
            logger.error("audit entry lost after %s attempts", AUDIT_WRITE_ATTEMPTS, extra={"model": entry.model})
            return None
        return name

    async def newest(self, *, limit: int, model: str | None = None) -> list[AuditEntry]:
        """The newest ``limit`` audit entries (of one model if given), newest first."""

        def listing() -> list[str]:
            objects = gcs.list_objects(self.client, self.bucket, self.prefix, timeout=self.timeout)
            return sorted(o.name for o in objects)

        names = await self._bucket("list audit log", listing)
        if model is not None:
            names = [n for n in names if audit_model(n[len(self.prefix) :]) == model]
        chosen = list(reversed(names))[:limit]
        found = await asyncio.gather(*(self._read_audit(n) for n in chosen))
        return [entry for entry in found if entry is not None]

    async def _read_audit(self, name: str) -> AuditEntry | None:
        found = await self._bucket(
            f"read {name}", lambda: gcs.read_object(self.client, self.bucket, name, timeout=self.timeout)
        )
        if found is None:
            return None
        try:
            return AuditEntry.from_json(found[0])
        except ValidationError:
            logger.warning("unreadable audit entry %s", name)
            return None


def audit_model(object_name: str) -> str | None:
    """The model of an audit object named ``<stamp>-<model>-<generation>.json`` (stamp has fixed width)."""
    stem = object_name.removesuffix(".json")
    stamp_width = len("20250101T000000.000000Z")
    if len(stem) <= stamp_width + 2 or stem[stamp_width] != "-":
        return None
    rest = stem[stamp_width + 1 :]
    model, _, generation = rest.rpartition("-")
    return model if model and generation.isdigit() else None
