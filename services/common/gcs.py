"""Google Cloud Storage access shared by the puller and master.

A client factory honouring ``STORAGE_EMULATOR_HOST``, the one credentials loader, the CA bundle and the
proxy; a listing helper that asks only for the fields the completeness rule needs, and the translation
of google.api_core / requests exceptions into the project's error tree (by type and status code, never by message).

The google-cloud-storage client is synchronous: async callers run these functions with
``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TypeVar

import requests
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials, Credentials
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY, ConditionalRetryPolicy, is_generation_specified

from services.common.completeness import RemoteObject
from services.common.credentials import READ_ONLY_SCOPE, authorized_session, load_credentials
from services.common.errors import BucketError, BucketNotFound, BucketPermissionDenied, PreconditionFailed
from services.common.network import BucketNetwork
from services.common.settings import BucketSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")
VENDOR_ERRORS = (
    gexc.GoogleAPIError,
    auth_exceptions.GoogleAuthError,
    requests.RequestException,
    ConnectionError,
    TimeoutError,
)

LIST_FIELDS = "items(name,size,generation,updated,crc32c),nextPageToken,prefixes"
FLEET_PREFIX = "_fleet/"
STATE_OBJECT = "_fleet/state.json"
AUDIT_PREFIX = "_fleet/audit/"


def bounded_retry(timeout: float) -> Retry:
    """google-cloud-storage's retry policy, but giving up after ``timeout`` seconds in all.

    The library default retries for 120 s, which would hide a bucket outage from status for two minutes.
    """
    retry: Retry = DEFAULT_RETRY.with_timeout(timeout)
    return retry


def emulator_endpoint(settings: BucketSettings) -> str | None:
    """``STORAGE_EMULATOR_HOST`` as a URL (``http://`` added when it names only host:port), or None."""
    host = settings.storage_emulator_host
    if not host:
        return None
    return host if host.startswith(("http://", "https://")) else "http://" + host


def make_client(settings: BucketSettings, *, scopes: list[str] | None = None) -> storage.Client:
    """A storage client for the configured bucket (the emulator or GCS), with the credentials of
    :func:`~services.common.credentials.load_credentials` and the CA bundle / proxy of the settings.

    ``scopes``: read-only unless given (master asks for read-write)."""
    return client_with(settings, load_credentials(settings, scopes=scopes or [READ_ONLY_SCOPE]))


def client_with(settings: BucketSettings, credentials: Credentials | None) -> storage.Client:
    """A storage client using ``credentials`` (None: anonymous), so one credentials object can serve it
    and the puller's media client alike."""
    endpoint = emulator_endpoint(settings)
    return storage.Client(
        project=settings.gcs_project,
        credentials=credentials or AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": endpoint} if endpoint else None,
        _http=authorized_session(credentials, BucketNetwork.from_settings(settings)),
    )


def translate(exc: BaseException, what: str) -> BaseException:
    """Map a vendor exception to the error tree (others are returned unchanged)."""
    if isinstance(exc, gexc.PreconditionFailed):
        return PreconditionFailed(f"{what}: the object changed since it was read")
    if isinstance(exc, gexc.NotFound):
        return BucketNotFound(f"{what}: not found", retryable=False)
    if isinstance(exc, gexc.Forbidden | gexc.Unauthorized):
        return BucketPermissionDenied(f"{what}: permission denied ({type(exc).__name__})", retryable=False)
    if isinstance(exc, gexc.TooManyRequests | gexc.ServerError | gexc.RetryError):
        return BucketError(f"{what}: bucket unavailable ({type(exc).__name__})")
    if isinstance(exc, gexc.GoogleAPICallError):
        return BucketError(f"{what}: {type(exc).__name__} {exc.code}", retryable=False)
    if isinstance(exc, auth_exceptions.RefreshError):
        return BucketPermissionDenied(f"{what}: token refresh refused ({exc})", retryable=False)
    if isinstance(exc, auth_exceptions.TransportError):
        return BucketError(f"{what}: token endpoint unreachable ({exc})")
    if isinstance(exc, requests.RequestException | ConnectionError | TimeoutError):
        return BucketError(f"{what}: bucket unreachable ({type(exc).__name__})")
    return exc


def call(what: str, fn: Callable[[], T]) -> T:
    """Run one bucket call, translating vendor errors."""
    try:
        return fn()
    except VENDOR_ERRORS as exc:
        raise translate(exc, what) from exc


def _updated(blob: storage.Blob) -> datetime:
    return blob.updated if blob.updated is not None else datetime.fromtimestamp(0, UTC)


def to_remote_object(blob: storage.Blob) -> RemoteObject:
    """The listing fields the completeness rule and the manifests need."""
    return RemoteObject(
        name=blob.name,
        size=int(blob.size or 0),
        generation=int(blob.generation or 0),
        updated=_updated(blob),
        crc32c=blob.crc32c,
    )


class ListingStats:
    """Counts of bucket calls made by a listing (the listing benchmark reads them)."""

    def __init__(self) -> None:
        self.pages = 0
        self.objects = 0


def list_objects(
    client: storage.Client,
    bucket: str,
    prefix: str,
    *,
    timeout: float,
    stats: ListingStats | None = None,
    page_size: int = 1000,
) -> Iterator[RemoteObject]:
    """Every object under ``prefix`` (one call per page of ``page_size``), as RemoteObjects."""
    what = f"list gs://{bucket}/{prefix}"
    iterator = call(
        what,
        lambda: client.list_blobs(
            bucket,
            prefix=prefix,
            fields=LIST_FIELDS,
            page_size=page_size,
            timeout=timeout,
            retry=bounded_retry(timeout),
        ),
    )
    pages = iter(iterator.pages)
    while True:
        try:
            page = next(pages)
        except StopIteration:
            return
        except VENDOR_ERRORS as exc:
            raise translate(exc, what) from exc
        if stats is not None:
            stats.pages += 1
        for blob in page:
            if stats is not None:
                stats.objects += 1
            yield to_remote_object(blob)


def read_object(client: storage.Client, bucket: str, name: str, *, timeout: float) -> tuple[bytes, int] | None:
    """Read a small object: (content, generation), or None when it does not exist."""
    blob = client.bucket(bucket).blob(name)
    try:
        data = call(
            f"read gs://{bucket}/{name}", lambda: blob.download_as_bytes(timeout=timeout, retry=bounded_retry(timeout))
        )
    except BucketNotFound:
        return None
    return data, int(blob.generation or 0)


def write_object(
    client: storage.Client,
    bucket: str,
    name: str,
    data: bytes,
    *,
    if_generation_match: int | None,
    timeout: float,
    content_type: str = "application/json",
) -> int:
    """Write a small object with a generation precondition (0 = create only); returns the new generation."""
    blob = client.bucket(bucket).blob(name)
    call(
        f"write gs://{bucket}/{name}",
        lambda: blob.upload_from_string(
            data,
            content_type=content_type,
            if_generation_match=if_generation_match,
            timeout=timeout,
            retry=_conditional(timeout) if if_generation_match is not None else None,
        ),
    )
    return int(blob.generation or 0)


def delete_object(client: storage.Client, bucket: str, name: str, *, if_generation_match: int, timeout: float) -> None:
    """Delete one object, only at ``if_generation_match`` (412 otherwise; NotFound when absent)."""
    blob = client.bucket(bucket).blob(name)
    call(
        f"delete gs://{bucket}/{name}",
        lambda: blob.delete(if_generation_match=if_generation_match, timeout=timeout, retry=_conditional(timeout)),
    )


def _conditional(timeout: float) -> ConditionalRetryPolicy:
    """Retry a write only when a generation precondition makes it idempotent, within ``timeout``."""
    return ConditionalRetryPolicy(DEFAULT_RETRY.with_timeout(timeout), is_generation_specified, ["query_params"])


def close_client(client: storage.Client) -> None:
    """Release the client's HTTP session."""
    with contextlib.suppress(Exception):
        client.close()
