"""Provenance evidence in an image's original bytes: what says it was made by a generator.

Each entry is an `Evidence` (kind, what was found, verified, says_ai):

- `c2pa_manifest`: a C2PA manifest read by c2pa-python: its claim generator, the
  `digitalSourceType` of its `c2pa.actions`, its signer. `verified` when its signature and hash
  bindings check out (validation state Valid or Trusted: no trust list is configured, so a
  signer is named but not vouched for); a manifest whose bytes were changed is Invalid.
- `xmp_digital_source_type`: IPTC's `Iptc4xmpExt:DigitalSourceType` in an XMP packet.
- `png_text`: the text chunks image generators write: `parameters` (AUTOMATIC1111, Forge),
  `prompt` / `workflow` (ComfyUI), `invokeai_metadata` / `sd-metadata` (InvokeAI), `Software`
  `NovelAI` with its `Comment`.
- `generator_software`: EXIF `Software` or XMP `CreatorTool` naming a known generator.

Everything but a valid manifest can be written by anyone, so only the manifest is `verified`.
Malformed metadata is skipped, never fatal: this reads what a client sent.
"""

from __future__ import annotations

import io
import json
import logging
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from PIL import Image

from batchvision.core.types import Evidence

log = logging.getLogger(__name__)

# IPTC digital source types that mean generated (or composited with generated) content.
AI_SOURCE_TYPES = frozenset(
    {"trainedAlgorithmicMedia", "compositeWithTrainedAlgorithmicMedia", "compositeSynthetic"}
)
# Names of image generators as tools write them in Software / CreatorTool / claim generators.
GENERATORS = re.compile(
    r"\b(stable[ -]?diffusion|sdxl|automatic1111|forge|comfyui|invokeai|fooocus|novelai|"
    r"midjourney|dall[-·]?e|firefly|imagen|flux|leonardo\.ai|nightcafe|craiyon|ideogram|"
    r"dreamstudio|image creator|gpt-4o|krea)\b",
    re.IGNORECASE,
)
FOUND_CHARS = 200  # what an entry quotes of the metadata it found
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_LIMIT = 1 << 20  # per chunk, inflated, as Pillow's MAX_TEXT_CHUNK
# All chunks of one image together, inflated: a file of many small zTXt chunks that each inflate
# to the limit must not cost gigabytes. Only the keywords read here are inflated at all.
_PNG_TEXT_TOTAL = 8 << 20
_PNG_KEYWORDS = frozenset(
    {"parameters", "prompt", "workflow", "invokeai_metadata", "sd-metadata", "Software"}
    | {"Comment", "XML:com.adobe.xmp"}
)
_XMP_LIMIT = 4 << 20  # bytes of one XMP packet
_EXIF_SOFTWARE = 0x0131
_MIME = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_MIME |= {"TIFF": "image/tiff", "HEIF": "image/heif", "AVIF": "image/avif", "GIF": "image/gif"}


def read_provenance(data: bytes, image: Image.Image) -> tuple[Evidence, ...]:
    """Every provenance entry in `data`, whose opened (and loaded) image is `image`."""
    text = dict(png_text_chunks(data)) if data.startswith(_PNG_SIGNATURE) else {}
    xmp = text.get("XML:com.adobe.xmp") or _xmp_packet(data)
    readers: list[Callable[[], Iterator[Evidence]]] = [
        partial(_c2pa, data, image.format),
        partial(_xmp_source_type, xmp),
        partial(_generator_text, text),
        partial(_software, image, xmp),
    ]
    found: list[Evidence] = []
    for reader in readers:
        try:
            found.extend(reader())
        except Exception as exc:  # one malformed section never hides the others
            log.debug("ignoring unreadable provenance metadata: %s", exc)
    return tuple(found)


def _quote(value: str) -> str:
    flat = " ".join(value.split())
    return flat if len(flat) <= FOUND_CHARS else flat[: FOUND_CHARS - 1] + "…"


# PNG text chunks, read from the bytes: Pillow keeps only those before the pixel data.


def png_text_chunks(data: bytes) -> Iterator[tuple[str, str]]:
    """(keyword, text) of the tEXt, zTXt and iTXt chunks with the keywords read here, after
    the pixel data too, until their text totals `_PNG_TEXT_TOTAL` characters."""
    offset, budget = len(_PNG_SIGNATURE), _PNG_TEXT_TOTAL
    while offset + 8 <= len(data) and budget > 0:
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        body = data[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"IEND":
            return
        keyword = body.partition(b"\0")[0].decode("latin-1")
        if kind in (b"tEXt", b"zTXt", b"iTXt") and keyword in _PNG_KEYWORDS:
            text = _text_chunk(kind, body)
            if text is not None:
                budget -= len(text)
                yield keyword, text


def _text_chunk(kind: bytes, body: bytes) -> str | None:
    rest = body.partition(b"\0")[2]
    try:
        if kind == b"tEXt":
            return rest.decode("latin-1")
        if kind == b"zTXt":
            return _inflate(rest[1:]).decode("latin-1")
        compressed, rest = rest[:1] == b"\1", rest[2:]  # flag, method
        _, _, rest = rest.partition(b"\0")  # language tag
        _, _, rest = rest.partition(b"\0")  # translated keyword
        return (_inflate(rest) if compressed else rest).decode("utf-8", "replace")
    except (zlib.error, ValueError):
        return None


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, _PNG_TEXT_LIMIT)
    if inflater.unconsumed_tail:
        raise ValueError("PNG text chunk inflates past the limit")
    return out


def _generator_text(text: dict[str, str]) -> Iterator[Evidence]:
    parameters = text.get("parameters", "")
    if "Steps:" in parameters:
        yield _png("parameters (AUTOMATIC1111 / Forge)", parameters)
    for key in ("prompt", "workflow"):
        if _json_object(text.get(key)):
            yield _png(f"{key} (ComfyUI)", text[key])
    for key in ("invokeai_metadata", "sd-metadata"):
        if key in text:
            yield _png(f"{key} (InvokeAI)", text[key])
    if "novelai" in text.get("Software", "").lower():
        yield _png("Software NovelAI, Comment", text.get("Comment", ""))


def _png(what: str, value: str) -> Evidence:
    return Evidence("png_text", _quote(f"{what}: {value}"), verified=False, says_ai=True)


def _json_object(value: str | None) -> bool:
    try:
        return value is not None and isinstance(json.loads(value), dict)
    except ValueError:
        return False


# XMP: IPTC's digital source type and the creator tool.


def _xmp_packet(data: bytes) -> str:
    """The first XMP packet in `data` (one search each way: linear in the bytes, whatever
    they hold), or ''."""
    start = data.find(b"<x:xmpmeta")
    end = data.find(b"</x:xmpmeta>", start, start + _XMP_LIMIT) if start >= 0 else -1
    return data[start:end].decode("utf-8", "replace") if end > 0 else ""


def _xmp_value(xmp: str, name: str) -> str | None:
    # Either an attribute (name="value") or an element (<name>value</name>, maybe in rdf:Alt).
    match = re.search(rf'{name}\s*=\s*"([^"]*)"', xmp) or re.search(
        rf"<{name}>\s*(?:<rdf:Alt>\s*<rdf:li[^>]*>)?([^<]*)<", xmp
    )
    return match.group(1).strip() if match else None


def _xmp_source_type(xmp: str) -> Iterator[Evidence]:
    value = _xmp_value(xmp, "Iptc4xmpExt:DigitalSourceType")
    if value:
        term = value.rstrip("/").rsplit("/", 1)[-1]
        found = _quote(f"DigitalSourceType {term}")
        yield Evidence("xmp_digital_source_type", found, False, term in AI_SOURCE_TYPES)


def _software(image: Image.Image, xmp: str) -> Iterator[Evidence]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        software = image.getexif().get(_EXIF_SOFTWARE)
    named = [("EXIF Software", software), ("XMP CreatorTool", _xmp_value(xmp, "xmp:CreatorTool"))]
    for field, value in named:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str) and GENERATORS.search(value):
            yield Evidence("generator_software", _quote(f"{field} {value}"), False, True)


# C2PA


def _c2pa(data: bytes, image_format: str | None) -> Iterator[Evidence]:
    # The manifest store is a JUMBF box labelled "c2pa": without that label there is none, and
    # the reader (tens of ms) is not started.
    if b"c2pa" not in data or image_format not in _MIME:
        return
    import c2pa  # imported here: only images carrying a manifest pay for loading its library

    try:
        reader = c2pa.Reader(_MIME[image_format], io.BytesIO(data))
        store = json.loads(reader.json())
        state = reader.get_validation_state()
    except c2pa.C2paError as exc:
        if "ManifestNotFound" not in str(exc):
            yield Evidence("c2pa_manifest", _quote(f"unreadable manifest: {exc}"), False, False)
        return
    yield _manifest_evidence(store, state)


def _manifest_evidence(store: dict[str, Any], state: str | None) -> Evidence:
    manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    generator = _claim_generator(manifest)
    sources = sorted(_source_types(manifest))
    signer = manifest.get("signature_info", {})
    parts = [
        f"claim generator {generator or 'unnamed'}",
        f"digitalSourceType {', '.join(sources) or 'none'}",
        f"signed by {signer.get('common_name', '?')} ({signer.get('issuer', '?')})",
        f"validation {state or 'unknown'}",
    ]
    says_ai = bool(AI_SOURCE_TYPES.intersection(sources)) or bool(GENERATORS.search(generator))
    verified = state in ("Valid", "Trusted")
    return Evidence("c2pa_manifest", _quote("; ".join(parts)), verified, says_ai)


def _claim_generator(manifest: dict[str, Any]) -> str:
    infos = manifest.get("claim_generator_info") or []
    named = [" ".join(str(i.get(k, "")) for k in ("name", "version")).strip() for i in infos]
    return ", ".join(n for n in named if n) or str(manifest.get("claim_generator", ""))


def _source_types(manifest: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for assertion in manifest.get("assertions", []):
        if str(assertion.get("label", "")).startswith("c2pa.actions"):
            for action in assertion.get("data", {}).get("actions", []):
                source = str(action.get("digitalSourceType", ""))
                if source:
                    found.add(source.rstrip("/").rsplit("/", 1)[-1])
    return found
