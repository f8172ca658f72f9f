"""A multipart/form-data body read as it arrives, as events: a plain field, a file's start,
its data, its end.

Starlette's `request.form()` spools a whole file before a route sees any of it; an upload
route that streams its file into Redis needs the bytes as they come instead. This wraps the
streaming parser Starlette itself uses (`python-multipart`'s `MultipartParser`): its callbacks
are synchronous, so they only collect events, which the route then handles (awaiting Redis)
after each chunk. A chunk's events hold at most that chunk's bytes; plain fields are small and
capped (`MAX_FIELD_BYTES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

# Largest plain (non-file) field: the upload's are a purpose and an expiry.
MAX_FIELD_BYTES = 64 * 1024


class FormError(Exception):
    """Raised when the body is not the multipart form it claims to be (a 400)."""


@dataclass(frozen=True, slots=True)
class Field:
    """A plain field, whole."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class FileStart:
    """A file field begins (its bytes follow as `FileData`)."""

    name: str
    filename: str


@dataclass(frozen=True, slots=True)
class FileData:
    data: bytes


@dataclass(frozen=True, slots=True)
class FileEnd:
    pass


FormEvent = Field | FileStart | FileData | FileEnd


def _text(raw: bytes | bytearray) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def is_multipart(content_type: str | None) -> bool:
    kind, _ = parse_options_header(content_type)
    return kind == b"multipart/form-data"


class FormStream:
    """Feed it the body's chunks in order (`feed`), then `finish`; each returns the events
    those bytes completed. `FormError` for a body that is not a well-formed form."""

    def __init__(self, content_type: str) -> None:
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise FormError("Missing boundary in multipart.")
        callbacks: MultipartCallbacks = {
            "on_part_begin": self._on_part_begin,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_end": self._on_end,
        }
        try:
            self._parser = MultipartParser(boundary, callbacks)
        except FormParserError as error:
            raise FormError(str(error)) from None
        self._events: list[FormEvent] = []
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition: bytes | None = None
        self._name = ""
        self._is_file = False
        self._value = bytearray()
        self._ended = False

    def feed(self, chunk: bytes) -> list[FormEvent]:
        try:
            self._parser.write(chunk)
        except FormParserError as error:
            raise FormError(f"Invalid multipart data: {error}") from None
        return self._take()

    def finish(self) -> list[FormEvent]:
        """The body is over: `FormError` if it ended before the form's closing boundary."""
        self._parser.finalize()
        if not self._ended:
            raise FormError("Invalid multipart data: the body ended before the form did.")
        return self._take()

    def _take(self) -> list[FormEvent]:
        events, self._events = self._events, []
        return events

    def _on_part_begin(self) -> None:
        self._disposition = None
        self._is_file = False
        self._value.clear()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise FormParserError('The Content-Disposition header field "name" must be provided.')
        self._name = _text(options[b"name"])
        self._is_file = b"filename" in options
        if self._is_file:
            self._events.append(FileStart(self._name, _text(options[b"filename"])))

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self._events.append(FileData(data[start:end]))
            return
        if len(self._value) + end - start > MAX_FIELD_BYTES:
            raise FormParserError(f"Field {self._name!r} over {MAX_FIELD_BYTES} bytes.")
        self._value += data[start:end]

    def _on_part_end(self) -> None:
        self._events.append(FileEnd() if self._is_file else Field(self._name, _text(self._value)))

    def _on_end(self) -> None:
        self._ended = True
