"""Store files sent to the browser: the disk's own file where the store is local, else
streamed from the bucket through the API.

Streamed rather than redirected to presigned URLs: every file passes the same access check
and answers the same ETag/304 as before; pages keep their Content-Security-Policy (images
from 'self' only); the bucket's endpoint need not be reachable from browsers (MinIO on an
internal network); and no page holds a URL that expires while it is open. Bytes go through
in 1 MiB chunks, never whole in memory; thumbnails, most of what is read, are a few kB.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

from fastapi import HTTPException, status
from fastapi.responses import FileResponse, Response, StreamingResponse

from core.store import ImageStore


def store_response(
    store: ImageStore,
    key: str,
    media_type: str,
    missing: str,
    filename: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The file under ``key``; 404 with ``missing`` as the detail when there is none."""
    path = store.local_path(key)
    if path is not None:
        return FileResponse(path, media_type=media_type, filename=filename, headers=headers)
    try:
        chunks, size = store.open_stream(key)
    except FileNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, missing) from exc
    response = StreamingResponse(chunks, media_type=media_type, headers=headers)
    response.headers["content-length"] = str(size)
    if filename is not None:
        # The header FileResponse writes for an attachment, non-ASCII names encoded.
        quoted = quote(filename)
        response.headers["content-disposition"] = (
            f'attachment; filename="{filename}"'
            if quoted == filename
            else f"attachment; filename*=utf-8''{quoted}"
        )
    return response
