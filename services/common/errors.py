"""One error tree for every service.

Vendor exceptions (google.api_core, grpc, httpx) are translated into these at the edge, by type or
status code. Each error knows the HTTP status and problem type it maps to, so one handler table in
:mod:`services.common.problems` turns any of them into ``application/problem+json``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class FleetError(Exception):
    """Base of every error the project raises on purpose."""

    status_code: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(FleetError):
    status_code = 422
    slug = "invalid-input"
    title = "Invalid input"


class NotFound(FleetError):
    status_code = 404
    slug = "not-found"
    title = "Not found"


class Unauthorized(FleetError):
    status_code = 401
    slug = "unauthorized"
    title = "Missing or malformed token"


class Forbidden(FleetError):
    status_code = 403
    slug = "forbidden"
    title = "Token not accepted"


class Conflict(FleetError):
    status_code = 409
    slug = "conflict"
    title = "Conflict"


class PreconditionFailed(FleetError):
    """A write lost a race (GCS generation mismatch, stale If-Match)."""

    status_code = 412
    slug = "precondition-failed"
    title = "Precondition failed"


class PreconditionRequired(FleetError):
    """A write sent without If-Match: it must say which generation it was based on."""

    status_code = 428
    slug = "precondition-required"
    title = "Precondition required"


class PayloadTooLarge(FleetError):
    status_code = 413
    slug = "payload-too-large"
    title = "Request body too large"


class Unavailable(FleetError):
    """Something exists but cannot answer right now; the caller should retry."""

    status_code = 503
    slug = "unavailable"
    title = "Temporarily unavailable"

    def __init__(self, detail: str, *, retry_after: int = 3, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class BucketError(FleetError):
    """The bucket could not be read or written (after bounded retries)."""

    status_code = 503
    slug = "bucket-error"
    title = "Bucket unavailable"

    def __init__(self, detail: str, *, retryable: bool = True, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retryable = retryable
        self.retry_after = 5


class BucketNotFound(BucketError):
    slug = "bucket-not-found"
    title = "Bucket or object not found"


class BucketPermissionDenied(BucketError):
    slug = "bucket-permission-denied"
    title = "Bucket access denied"


class TFServingError(FleetError):
    """tfserving answered with a non-OK status, or could not be reached."""

    status_code = 502
    slug = "tfserving-error"
    title = "TF Serving error"

    def __init__(self, detail: str, *, code: str = "UNKNOWN", retryable: bool = False, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.code = code
        self.retryable = retryable


class IntegrityError(FleetError):
    """Downloaded bytes do not match what the bucket promised (crc32c, size, generation)."""

    status_code = 502
    slug = "integrity-error"
    title = "Integrity check failed"


class InsufficientStorage(FleetError):
    status_code = 507
    slug = "insufficient-storage"
    title = "Not enough free disk"


class VolumeUnreadable(FleetError):
    """The model volume could not be read (EIO, EACCES, EMFILE, ESTALE, a vanished root): nothing may change."""

    status_code = 503
    slug = "volume-unreadable"
    title = "Model volume unreadable"


class ConfigLintError(InvalidInput):
    """A models.config that would not be safe to hand to tfserving."""

    slug = "config-lint"
    title = "models.config refused"
