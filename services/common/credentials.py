"""GCP credentials for every bucket client: one loader, and a token source for the media client.

:func:`load_credentials` is the only place credentials are built. It uses google-auth's own loaders, so
every file type a GCP user has works: a service-account key, an ``authorized_user`` file as
``gcloud auth application-default login`` writes it (the runbook's
``$CLOUDSDK_CONFIG/application_default_credentials.json`` usually is one), an ``external_account``
(workload identity federation) file, an ``impersonated_service_account`` file, and without a file
google-auth's ADC chain (gcloud's well-known file, then the metadata server on GCE/GKE/Cloud Run).

The google-cloud-storage client (listing, master's writes, the ``sdk`` download engine) gets the
credentials object in an ``AuthorizedSession``, which refreshes before expiry and once on a 401; the
media client takes its tokens from the same object through :class:`TokenSource`, with the same two rules.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import google.auth
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import Credentials
from google.auth.transport.requests import AuthorizedSession, Request

from services.common.errors import BucketError, BucketPermissionDenied, FleetError
from services.common.network import BucketNetwork, PinnedCaSession
from services.common.settings import BucketSettings

logger = logging.getLogger(__name__)

READ_ONLY_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
READ_WRITE_SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"


class CredentialsError(FleetError):
    """No usable credentials: a missing or malformed file, or no ADC source at all."""

    status_code = 503
    slug = "credentials-error"
    title = "GCP credentials unusable"


def load_credentials(settings: BucketSettings, *, scopes: list[str]) -> Credentials | None:
    """The credentials the bucket clients use, or None for anonymous access (the emulator).

    ``FLEET_GCS_AUTH=anonymous``, or ``auto`` against ``STORAGE_EMULATOR_HOST`` without a credentials
    file: None. Otherwise the file (``GOOGLE_APPLICATION_CREDENTIALS``, else
    ``$CLOUDSDK_CONFIG/application_default_credentials.json``) of any type google-auth reads, else
    google-auth's ADC chain. Raises :class:`CredentialsError` with the path and the reason.
    """
    creds_file = settings.credentials_file()
    if settings.gcs_auth == "anonymous" or (
        settings.gcs_auth == "auto" and settings.storage_emulator_host and creds_file is None
    ):
        return None
    try:
        if creds_file is not None:
            credentials, _project = google.auth.load_credentials_from_file(  # type: ignore[no-untyped-call]
                str(creds_file), scopes=scopes
            )
            source = str(creds_file)
        else:
            credentials, _project = google.auth.default(scopes=scopes)
            source = "application default credentials"
    except (auth_exceptions.GoogleAuthError, OSError, ValueError) as exc:
        where = creds_file or "application default credentials"
        logger.error("cannot load GCP credentials from %s: %s", where, exc)
        raise CredentialsError(f"cannot load GCP credentials from {where}: {exc}") from exc
    if settings.gcs_token_uri and hasattr(credentials, "with_token_uri"):
        credentials = credentials.with_token_uri(settings.gcs_token_uri)
    logger.info("GCP credentials loaded", extra={"source": source, "type": type(credentials).__name__})
    return credentials  # type: ignore[no-any-return]


def authorized_session(credentials: Credentials | None, network: BucketNetwork) -> AuthorizedSession:
    """The HTTP session of the google-cloud-storage client: tokens from ``credentials`` (refreshed before
    expiry and once on a 401 by google-auth), TLS against the configured CA bundle, token endpoints too."""
    if credentials is None:
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
    session = _PinnedCaAuthorizedSession(credentials, auth_request=Request(network.session()))  # type: ignore[no-untyped-call]
    session.pinned_ca = str(network.ca_file) if network.ca_file is not None else None
    return session


class _PinnedCaAuthorizedSession(AuthorizedSession, PinnedCaSession):
    """google-auth's session with the configured CA bundle pinned (:class:`PinnedCaSession`)."""


def _utcnow() -> datetime:
    # google-auth keeps ``expiry`` as a naive UTC datetime.
    return datetime.now(UTC).replace(tzinfo=None)


class TokenSource:
    """Bearer tokens for the media client, from the same credentials object (thread-safe).

    A token is refreshed when it is missing or within ``margin`` of its expiry, so a request never
    leaves with a token about to lapse; after a 401 the caller hands back the rejected token and the
    first thread to do so refreshes (the others then get the new token without a second refresh).
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        network: BucketNetwork,
        margin_seconds: float,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.credentials = credentials
        self.margin = timedelta(seconds=margin_seconds)
        self.refreshes = 0
        self._request = Request(network.session())
        self._clock = clock
        self._lock = threading.Lock()

    def token(self) -> str:
        """A token good for at least ``margin`` more (refreshing first when it is not)."""
        with self._lock:
            credentials = self.credentials
            expiry = credentials.expiry
            if credentials.token is None or (expiry is not None and expiry - self._clock() <= self.margin):
                self._refresh("expiring" if credentials.token else "first use")
            return str(self.credentials.token)

    def rejected(self, token: str) -> None:
        """The server answered 401 to ``token``: refresh, unless another thread already has."""
        with self._lock:
            if self.credentials.token == token:
                self._refresh("rejected with 401")

    def _refresh(self, reason: str) -> None:
        try:
            self.credentials.refresh(self._request)  # type: ignore[no-untyped-call]
        except auth_exceptions.RefreshError as exc:
            logger.error("GCP token refresh refused (%s): %s", reason, exc)
            raise BucketPermissionDenied(f"token refresh refused: {exc}", retryable=False) from exc
        except auth_exceptions.TransportError as exc:
            logger.warning("GCP token endpoint unreachable (%s): %s", reason, exc)
            raise BucketError(f"token endpoint unreachable: {exc}") from exc
        self.refreshes += 1
        logger.info("GCP access token refreshed (%s)", reason, extra={"expiry": str(self.credentials.expiry)})
