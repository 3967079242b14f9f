"""Stream a multipart/form-data upload to a temp file, counting bytes as they arrive.

Starlette's form parser reads the whole body before a handler runs and has no limit
on file parts; this one stops at the first byte past the limit (whatever the
Content-Length header claims), so an oversize upload costs the server only the limit.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import anyio.to_thread
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

MAX_FIELD_BYTES = 4096
MAX_FIELDS = 16


class UploadError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


@dataclass
class Upload:
    path: Path | None = None          # the file part, on disk; None if the request had none
    filename: str | None = None
    content_type: str | None = None   # of the file part, as the client declared it (lowercase, no parameters)
    size: int = 0
    fields: dict[str, str] = field(default_factory=dict)

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class _Receiver:
    """python-multipart callbacks: the file part goes to disk, the other parts to `fields`."""

    def __init__(self, upload: Upload, dest_dir: Path, max_bytes: int, file_field: str):
        self.upload, self.dest_dir, self.max_bytes, self.file_field = upload, dest_dir, max_bytes, file_field
        self.header_name = self.header_value = b""
        self.disposition = self.part_type = b""
        self.name: str | None = None
        self.value = bytearray()
        self.file = None
        self.pending: list[bytes] = []  # file bytes parsed from the current chunk, written off-loop

    def callbacks(self) -> dict:
        return {"on_part_begin": self.on_part_begin, "on_header_field": self.on_header_field,
                "on_header_value": self.on_header_value, "on_header_end": self.on_header_end,
                "on_headers_finished": self.on_headers_finished, "on_part_data": self.on_part_data,
                "on_part_end": self.on_part_end}

    def on_part_begin(self) -> None:
        self.disposition, self.part_type, self.name, self.value = b"", b"", None, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        elif self.header_name.lower() == b"content-type":
            self.part_type = self.header_value
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if b"name" not in options:
            raise UploadError(422, "a multipart part has no Content-Disposition name")
        self.name = options[b"name"].decode("utf-8", "replace")
        if self.name == self.file_field:
            if self.upload.path is not None:
                raise UploadError(422, f"more than one {self.file_field!r} part; upload one file", self.name)
            fd, tmp = tempfile.mkstemp(dir=self.dest_dir, prefix="upload-")
            self.file = os.fdopen(fd, "wb")
            self.upload.path = Path(tmp)
            if b"filename" in options:
                self.upload.filename = os.path.basename(options[b"filename"].decode("utf-8", "replace"))
            if self.part_type:
                self.upload.content_type = parse_options_header(self.part_type)[0].decode("latin-1").lower()
        elif b"filename" in options:
            raise UploadError(422, f"unexpected file part {self.name!r}; send the dataset as "
                                   f"{self.file_field!r}", self.name)
        elif len(self.upload.fields) >= MAX_FIELDS:
            raise UploadError(422, f"more than {MAX_FIELDS} form fields")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.name == self.file_field:
            self.upload.size += end - start
            if self.upload.size > self.max_bytes:
                raise UploadError(413, f"the file exceeds the upload limit of {self.max_bytes} bytes",
                                  self.file_field)
            self.pending.append(data[start:end])
        else:
            self.value += data[start:end]
            if len(self.value) > MAX_FIELD_BYTES:
                raise UploadError(422, f"form field {self.name!r} is longer than {MAX_FIELD_BYTES} bytes",
                                  self.name)

    def on_part_end(self) -> None:
        if self.name != self.file_field:
            self.upload.fields[self.name] = self.value.decode("utf-8", "replace")

    async def flush(self) -> None:
        if self.pending:
            data, self.pending = b"".join(self.pending), []
            await anyio.to_thread.run_sync(self.file.write, data)


async def receive_upload(request: Request, dest_dir: Path, max_bytes: int, file_field: str = "file") -> Upload:
    """Parse the body into an Upload; raises UploadError (413 past `max_bytes`, 415/422 when malformed)."""
    ctype, params = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise UploadError(415, "expected a multipart/form-data body with the dataset in a "
                               f"{file_field!r} part (curl -F {file_field}=@data.csv)")
    dest_dir.mkdir(parents=True, exist_ok=True)
    upload = Upload()
    receiver = _Receiver(upload, dest_dir, max_bytes, file_field)
    parser = MultipartParser(params[b"boundary"], receiver.callbacks())
    body_limit = max_bytes + MAX_FIELDS * (MAX_FIELD_BYTES + 1024)  # the file plus its fields and headers
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_limit:
                raise UploadError(413, f"the request body exceeds the upload limit of {max_bytes} bytes",
                                  file_field)
            parser.write(chunk)
            await receiver.flush()
        parser.finalize()
    except FormParserError as e:
        upload.discard()
        raise UploadError(422, f"malformed multipart body ({e})") from None
    except BaseException:
        upload.discard()
        raise
    finally:
        if receiver.file is not None:
            receiver.file.close()
    return upload
