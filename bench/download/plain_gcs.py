"""Peer: plain google-cloud-storage, ``download_to_filename`` per object, one after the other.

python bench/download/plain_gcs.py EMULATOR_URL BUCKET PREFIX DEST
"""

from __future__ import annotations

import sys
from pathlib import Path

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage


def main() -> None:
    url, bucket, prefix, dest = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    client = storage.Client(project="bench", credentials=AnonymousCredentials(), client_options={"api_endpoint": url})
    for blob in client.list_blobs(bucket, prefix=prefix):
        target = dest / blob.name[len(prefix) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        blob.download_to_filename(str(target))


if __name__ == "__main__":
    main()
