"""Per-format extraction for unstructured ingest: MIME type sniffed from the bytes, then text and media metadata.

:func:`extract` takes a file's first bytes and its body: the bytes themselves for files small enough to sit in
memory, or the path of a local copy for large ones (spooled into the blob store while hashing). A file whose
bytes claim a format they do not hold (a truncated PDF, garbage after a PNG signature) raises
:class:`CorruptFileError` carrying the reject reason. pypdf, Pillow and mutagen are imported on first use only,
so ingesting plain text never pays for them.

Sniffing rules, in order:

1. ``%PDF-`` at offset 0 is ``application/pdf`` (checked first: a hand-written PDF can be pure ASCII).
2. A head free of control bytes whose whole body is valid UTF-8 is text: ``text/html`` when it starts, after
   whitespace and case-insensitively, with ``<!doctype html`` or ``<html``; otherwise ``text/markdown`` when the
   name ends in ``.md``/``.markdown`` and ``text/plain`` for everything else. Markdown has no signature in its
   bytes, so among valid UTF-8 text the extension is the only evidence; it never overrides the bytes.
   Checking text first also stops weak signatures from claiming prose: a note starting "BM25 ..." is not a BMP.
3. Anything else goes to ``filetype`` (magic numbers); unknown bytes are ``application/octet-stream``.
"""

from __future__ import annotations

import io
import json
import logging
import wave
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any

Body = bytes | Path
"""A file's content: its bytes, or the path of a local copy when it is too large to hold in memory."""

SNIFF_BYTES = 8192
KIND_DOCUMENT, KIND_IMAGE, KIND_AUDIO, KIND_OTHER = "document", "image", "audio", "other"
_MARKDOWN_SUFFIXES = (".md", ".markdown")
# Beyond these an audio header is garbage that happened to parse (768 kHz is the highest PCM rate in use).
_MAX_SAMPLE_RATE, _MAX_CHANNELS = 1_000_000, 255
# Bytes that never occur in text: C0 controls except \t \n \v \f \r and ESC (ANSI-coloured logs), and DEL.
_BINARY_BYTES = bytes([*range(0, 9), *range(14, 27), *range(28, 32), 127])


@dataclass(frozen=True, slots=True)
class Extracted:
    """What one file holds: its sniffed MIME type, kind, and whatever its format lets us extract."""

    mime_type: str
    kind: str
    text: str | None = None
    page_count: int | None = None
    width: int | None = None
    height: int | None = None
    exif: str | None = None
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None


class CorruptFileError(Exception):
    """The bytes claim a format (by signature) but cannot be parsed as it; ``reason`` is the reject code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def extract(head: bytes, body: Body, name: str) -> Extracted:
    """Sniff the MIME type of a file from its bytes and extract text or media metadata.

    ``head`` is the first :data:`SNIFF_BYTES` bytes, ``body`` the whole content (see :data:`Body`), ``name``
    the file name (used only to tell markdown from plain text).
    """
    if head.startswith(b"%PDF-"):
        return _pdf(body)
    if len(head.translate(None, _BINARY_BYTES)) == len(head):
        text = _decode(body)
        if text is not None:
            return _text_document(text, name)
    import filetype

    guess = filetype.guess(head)
    mime = guess.mime if guess is not None else "application/octet-stream"
    handler = _HANDLERS.get(mime)
    return handler(mime, body) if handler is not None else Extracted(mime, KIND_OTHER)


# Text and HTML ---------------------------------------------------------------------------------------------
def _decode(body: Body) -> str | None:
    data = body.read_bytes() if isinstance(body, Path) else body
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text[1:] if text.startswith("\ufeff") else text


def _text_document(text: str, name: str) -> Extracted:
    start = text.lstrip()[:14].lower()
    if start.startswith(("<!doctype html", "<html")):
        return Extracted("text/html", KIND_DOCUMENT, text=html_text(text))
    mime = "text/markdown" if name.lower().endswith(_MARKDOWN_SUFFIXES) else "text/plain"
    return Extracted(mime, KIND_DOCUMENT, text=text)


_BLOCK_TAGS = frozenset(
    {
        *("address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption"),
        *("figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav"),
        *("ol", "p", "pre", "section", "table", "td", "th", "title", "tr", "ul"),
    }
)
_HIDDEN_TAGS = frozenset({"script", "style", "template", "noscript", "title"})


class _VisibleText(HTMLParser):
    """Collects the text a page shows: skips script, style, template, noscript and title; breaks at blocks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN_TAGS:
            self.hidden += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.parts.append(data)


def html_text(html: str) -> str:
    """The visible text of an HTML document, one line per block, whitespace collapsed."""
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


# PDF ----------------------------------------------------------------------------------------------------
def _pdf(body: Body) -> Extracted:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError

    # pypdf logs a warning for every damaged file it meets; without a handler of its own they would go to
    # stderr through logging's last resort. A NullHandler keeps them out of the terminal (and out of the
    # progress bar) while they still reach any handler the application configured.
    pypdf_logger = logging.getLogger("pypdf")
    if not pypdf_logger.handlers:
        pypdf_logger.addHandler(logging.NullHandler())

    with _open(body) as stream:
        try:
            reader = PdfReader(stream, strict=False)
            if reader.is_encrypted:
                reader.decrypt("")
            pages = reader.pages
            page_count = len(pages)
            text = "\n".join(page.extract_text() or "" for page in pages)
        except FileNotDecryptedError:  # encrypted with a password: keep the file, extract nothing
            return Extracted("application/pdf", KIND_DOCUMENT)
        except Exception as exc:  # pypdf raises many types on damaged files
            raise CorruptFileError("corrupt_pdf", f"PDF cannot be parsed: {_describe(exc)}") from exc
    if page_count == 0:
        raise CorruptFileError("corrupt_pdf", "PDF has no pages (truncated or damaged page tree)")
    return Extracted("application/pdf", KIND_DOCUMENT, text=text, page_count=page_count)


# Images -------------------------------------------------------------------------------------------------
def _image(mime: str, body: Body) -> Extracted:
    from PIL import Image

    with _open(body) as stream:
        try:
            image = Image.open(stream, formats=["PNG", "JPEG"])
            width, height = image.size
            if image.format == "JPEG":
                # Decoding at 1/8 scale still reads every byte of the entropy-coded data: truncation is
                # caught at a fraction of the cost of a full decode.
                image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
            exif = _exif_json(image.getexif())
        except Exception as exc:  # UnidentifiedImageError, OSError (truncated), DecompressionBombError, ...
            raise CorruptFileError("corrupt_image", f"image cannot be decoded: {_describe(exc)}") from exc
    return Extracted(mime, KIND_IMAGE, width=width, height=height, exif=exif)


def _exif_json(exif: Any) -> str | None:
    """EXIF as JSON: tag name → value, with the Exif sub-IFD merged in and GPS tags nested under GPSInfo."""
    from PIL.ExifTags import GPSTAGS, IFD, TAGS

    tags: dict[str, Any] = {}
    for tag, value in exif.items():
        if tag not in (IFD.Exif, IFD.GPSInfo):
            tags[TAGS.get(tag, str(tag))] = value
    tags.update({TAGS.get(tag, str(tag)): value for tag, value in exif.get_ifd(IFD.Exif).items()})
    gps = exif.get_ifd(IFD.GPSInfo)
    if gps:
        tags["GPSInfo"] = {GPSTAGS.get(tag, str(tag)): value for tag, value in gps.items()}
    plain = {
        name: value for name, value in ((n, _json_value(v)) for n, v in tags.items()) if value is not None
    }
    return json.dumps(plain, sort_keys=True, ensure_ascii=False) if plain else None


def _json_value(value: Any) -> Any:
    if isinstance(value, str):
        return value.rstrip("\x00")
    if isinstance(value, bool | int):
        return value
    if isinstance(value, bytes):  # ASCII tags stored as bytes; opaque blobs (MakerNote) are left out
        text = value.rstrip(b"\x00").decode("ascii", errors="replace")
        return text if len(text) <= 256 and text.isprintable() else None
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    try:
        number = float(value)  # IFDRational and friends
    except (TypeError, ValueError, ZeroDivisionError):
        return str(value)
    return number if number == number else None  # NaN (0/0 rational) → absent


# Audio --------------------------------------------------------------------------------------------------
def _audio(mime: str, body: Body) -> Extracted:
    rate: int | None = None
    channels: int | None = None
    duration: float | None = None
    if mime == "audio/x-wav":
        try:
            with _open(body) as stream, wave.open(stream, "rb") as wav:
                rate, channels, frames = wav.getframerate(), wav.getnchannels(), wav.getnframes()
            duration = frames / rate
        except (wave.Error, EOFError, ZeroDivisionError):
            rate = None  # not PCM (float, A-law, ...) or damaged: mutagen knows more codecs and tells which
    if rate is None:
        rate, channels, duration = _mutagen_audio(mime, body)
    if not (0 < (rate or 0) <= _MAX_SAMPLE_RATE and 0 < (channels or 0) <= _MAX_CHANNELS):
        raise CorruptFileError("corrupt_audio", f"implausible audio header: {rate} Hz, {channels} channel(s)")
    return Extracted(mime, KIND_AUDIO, duration_s=duration, sample_rate=rate, channels=channels)


def _mutagen_audio(mime: str, body: Body) -> tuple[int | None, int | None, float | None]:
    from mutagen import MutagenError
    from mutagen.flac import FLAC
    from mutagen.mp3 import MP3
    from mutagen.wave import WAVE

    parser: Callable[[IO[bytes]], Any] = {"audio/mpeg": MP3, "audio/x-flac": FLAC}.get(mime, WAVE)
    with _open(body) as stream:
        try:
            info = parser(stream).info
        except (MutagenError, EOFError, ValueError) as exc:
            raise CorruptFileError("corrupt_audio", f"audio cannot be parsed: {_describe(exc)}") from exc
    length = getattr(info, "length", None)
    return (
        int(getattr(info, "sample_rate", 0) or 0) or None,
        int(getattr(info, "channels", 0) or 0) or None,
        float(length) if length is not None else None,
    )


_HANDLERS: dict[str, Callable[[str, Body], Extracted]] = {
    "image/png": _image,
    "image/jpeg": _image,
    "audio/x-wav": _audio,
    "audio/mpeg": _audio,
    "audio/x-flac": _audio,
}


def _open(body: Body) -> IO[bytes]:
    return open(body, "rb") if isinstance(body, Path) else io.BytesIO(body)  # noqa: SIM115 - caller closes


def _describe(exc: BaseException) -> str:
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


__all__ = ["SNIFF_BYTES", "Body", "CorruptFileError", "Extracted", "extract", "html_text"]
