"""Reading an uploaded image from a request, in memory, within a size limit."""
from __future__ import annotations

import asyncio

__all__ = ["UploadError", "read_upload", "UPLOAD_IDLE_TIMEOUT_S", "MAX_PARTS"]

# Multipart framing (boundaries, part headers) around the file; allowed on top of the file limit.
_MULTIPART_SLACK = 64 * 1024
# A client that sends nothing for this long is cut off (408): a stalled upload holds its body in memory
# and one of the server's places for uploads.
UPLOAD_IDLE_TIMEOUT_S = 15.0
# A form with more parts than this is not an image upload; parsing stops there (400).
MAX_PARTS = 16


class UploadError(Exception):
    """A request whose body is not an acceptable image upload; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_upload(request, max_bytes: int, idle_timeout: float = UPLOAD_IDLE_TIMEOUT_S) -> tuple[bytes, str]:
    """The image bytes and a name for them: a multipart form's file field, or a raw image body.

    The body is read into memory and never written to disk; reading stops as soon as it passes
    ``max_bytes`` (answer 413), and a ``Content-Length`` over the limit is refused before reading.
    A client that sends nothing for ``idle_timeout`` seconds is refused (408).
    """
    content_type = request.headers.get("content-type", "")
    kind = content_type.lower()  # the boundary parameter is case-sensitive: only the type is compared lowercased
    multipart = kind.startswith("multipart/form-data")
    if not (multipart or kind.startswith("image/") or kind.startswith("application/octet-stream")):
        raise UploadError(415, f"content type {content_type or 'none'!r}: expected multipart/form-data with a "
                               f"file field, or a raw image body (image/png, image/jpeg, ...)")
    limit = max_bytes + (_MULTIPART_SLACK if multipart else 0)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise UploadError(413, f"the upload is {int(length) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:g} MB")
    body = bytearray()
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), timeout=idle_timeout)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise UploadError(408, f"the upload stalled: nothing arrived for {idle_timeout:g} s") from None
        body += chunk
        if len(body) > limit:
            raise UploadError(413, f"the upload is over the limit of {max_bytes / 2**20:g} MB")
    if multipart:  # parsing is CPU work: off the event loop, so /healthz and other requests go on
        data, name = await asyncio.to_thread(_file_part, bytes(body), content_type)
    else:
        data, name = bytes(body), "the uploaded image"
    if len(data) > max_bytes:
        raise UploadError(413, f"{name} is {len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:g} MB")
    if not data:
        raise UploadError(400, f"{name} is empty; expected the bytes of an image file")
    return data, name


def _file_part(body: bytes, content_type: str) -> tuple[bytes, str]:
    """The first file field of a multipart/form-data body, parsed in memory by python-multipart."""
    from python_multipart import FormParser
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import parse_options_header

    mime, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError(400, "multipart/form-data without a boundary parameter")
    files: list = []
    parts = [0]

    def count(part=None) -> None:
        parts[0] += 1
        if parts[0] > MAX_PARTS:
            raise UploadError(400, f"the multipart form has more than {MAX_PARTS} parts; send one image file")

    def on_file(upload) -> None:
        count()
        files.append(upload)

    # every part stays in memory: the limit on memory-held files is above the whole body
    parser = FormParser(mime.decode(), on_field=count, on_file=on_file, boundary=boundary,
                        config={"MAX_MEMORY_FILE_SIZE": len(body) + 1, "UPLOAD_KEEP_FILENAME": False})
    try:
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError) as exc:
        raise UploadError(400, f"the multipart body cannot be parsed ({exc})") from None
    if not files:
        raise UploadError(400, "the multipart form has no file field; send the image as a file (e.g. field 'file')")
    upload = files[0]
    stream = upload.file_object
    stream.seek(0)
    name = (upload.file_name or b"the uploaded image").decode("utf-8", "replace")
    return stream.read(), name
