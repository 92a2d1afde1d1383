"""Golden requests on the node: copied from the bucket for config_manager, and turned into warm-up records.

- :class:`GoldenMirror` keeps ``LOCAL/.fleet/golden/<model>.json`` equal to the valid
  ``_fleet/golden/<model>.json`` objects of the listing (read only when a generation changes; an invalid
  object keeps the last good copy and raises the ``golden-invalid`` alarm; a removed object removes
  the copy, so config_manager stops checking that model).
- :func:`add_generated_warmup` writes ``assets.extra/tf_serving_warmup_requests`` into a staging copy
  that ships none, from the golden requests that fit *this* version's signatures, so TF Serving warms
  the version before it becomes AVAILABLE. The manifest lists the file under ``generated``; drift checks
  never look at it, and config_manager removes it (and retries once without it) if it fails a load.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from google.cloud import storage
from pydantic import ValidationError

from services.common.atomic import atomic_write_bytes, fsync_dir
from services.common.completeness import RemoteObject
from services.common.contracts import Alarm
from services.common.contracts.base import is_valid_model_name, utcnow
from services.common.contracts.golden import GOLDEN_PREFIX, GoldenSet, golden_dir, golden_path
from services.common.gcs import read_object
from services.common.golden import build_requests
from services.common.tfs.savedmodel import SavedModelUnreadable, read_serving_signatures
from services.common.tfs.warmup_records import MAX_RECORDS, WARMUP_PATH, warmup_file_bytes

logger = logging.getLogger(__name__)


class GoldenMirror:
    """The bucket's golden sets → the node's copies (one object read per changed generation)."""

    def __init__(self, *, client: storage.Client, bucket: str, prefix: str, timeout: float, root: Path) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix + GOLDEN_PREFIX
        self.timeout = timeout
        self.root = root
        self.sets: dict[str, GoldenSet] = {}
        self.generations: dict[str, int] = {}
        self.errors: dict[str, str] = {}
        self.reads = 0

    def objects(self, listing: Sequence[RemoteObject]) -> dict[str, RemoteObject]:
        """Model → its golden object in ``listing``."""
        found: dict[str, RemoteObject] = {}
        for obj in listing:
            if obj.name.startswith(self.prefix) and obj.name.endswith(".json"):
                model = obj.name[len(self.prefix) : -len(".json")]
                if is_valid_model_name(model):
                    found[model] = obj
        return found

    async def refresh(self, listing: Sequence[RemoteObject]) -> Mapping[str, GoldenSet]:
        """Bring the node's copies in line with ``listing``; returns the sets in force."""
        wanted = self.objects(listing)
        for model in sorted(set(self.sets) - set(wanted)):
            logger.info("golden set removed from the bucket; new versions of %s are no longer checked", model)
            await asyncio.to_thread(golden_path(self.root, model).unlink, missing_ok=True)
            self.sets.pop(model, None)
            self.generations.pop(model, None)
        self.errors = {m: e for m, e in self.errors.items() if m in wanted}
        for model, obj in sorted(wanted.items()):
            if self.generations.get(model) == obj.generation:
                continue
            await self._read(model, obj)
        return dict(self.sets)

    async def _read(self, model: str, obj: RemoteObject) -> None:
        result = await asyncio.to_thread(read_object, self.client, self.bucket, obj.name, timeout=self.timeout)
        self.reads += 1
        if result is None:
            return  # deleted since the listing: the next pass sees it gone
        data, generation = result
        try:
            golden = GoldenSet.from_json(data)
            if golden.model != model:
                raise ValueError(f"names model {golden.model!r}")
        except (ValidationError, ValueError) as exc:
            self.generations[model] = generation
            self.errors[model] = f"{obj.name} generation {generation} invalid: {str(exc).splitlines()[0]}"
            logger.error("golden set rejected, keeping the last good copy: %s", self.errors[model])
            return
        await asyncio.to_thread(atomic_write_bytes, golden_path(self.root, model), golden.to_json().encode())
        self.sets[model], self.generations[model] = golden, generation
        self.errors.pop(model, None)

    def load_local(self) -> None:
        """At start: the copies on disk are in force until the first listing says otherwise."""
        directory = golden_dir(self.root)
        if not directory.is_dir():
            return
        for path in sorted(directory.glob("*.json")):
            try:
                golden = GoldenSet.read(path)
            except (OSError, ValueError, ValidationError):
                continue
            self.sets[golden.model] = golden

    def alarms(self) -> list[Alarm]:
        return [
            Alarm(kind="golden-invalid", severity="warning", since=utcnow(), model=model, message=message)
            for model, message in sorted(self.errors.items())
        ]


def add_generated_warmup(staged: Path, golden: GoldenSet | None, *, repeat: int) -> str | None:
    """Write the warm-up file into ``staged`` (a version's staging copy) when it ships none.

    Only requests that fit this version's signatures go in (at most 1,000 records). Returns the
    file's path relative to the version directory, or None when nothing was written.
    """
    target = staged / WARMUP_PATH
    if golden is None or not golden.requests or target.exists():
        return None
    try:
        signatures = read_serving_signatures(staged)
    except SavedModelUnreadable as exc:
        logger.info("no generated warm-up: signatures unreadable in %s: %s", staged.name, exc)
        return None
    requests, misfits = build_requests(golden, signatures)
    if misfits:
        logger.info("golden requests left out of the generated warm-up: %s", "; ".join(misfits))
    if not requests:
        return None
    data = warmup_file_bytes([request for _, request in requests], repeat=repeat, limit=MAX_RECORDS)
    target.parent.mkdir(exist_ok=True)
    with open(target, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(target.parent)
    return WARMUP_PATH
