"""Provenance evidence read from the bytes of images the tests build: PNG text chunks of the
generators, XMP DigitalSourceType and CreatorTool, EXIF Software, and C2PA manifests signed
with a test certificate (tests/c2pa_signing.py)."""

from __future__ import annotations

import io
import json
import struct
import zlib

import pytest
from PIL import Image, PngImagePlugin

from batchvision.core.types import Evidence
from batchvision.intake.decode import decode_image
from c2pa_signing import sign

PIXELS = 100_000_000
A1111 = (
    "a castle on a hill, golden hour\nNegative prompt: blurry\n"
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Model: sd_xl_base_1.0"
)
COMFY_PROMPT = json.dumps({"3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20}}})
XMP = (
    '<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?>'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
    ' xmlns:xmp="http://ns.adobe.com/xap/1.0/" {attributes}/>'
    '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
)


def _image() -> Image.Image:
    return Image.new("RGB", (96, 64), (30, 120, 200))


def png(**text: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_itxt(key, value, zip=True) if key == "prompt" else info.add_text(key, value)
    buf = io.BytesIO()
    _image().save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def jpeg(**options: object) -> bytes:
    buf = io.BytesIO()
    _image().save(buf, "JPEG", **options)
    return buf.getvalue()


def xmp(**attributes: str) -> bytes:
    named = " ".join(f'{name}="{value}"' for name, value in attributes.items())
    return XMP.format(attributes=named).encode()


def evidence(data: bytes) -> tuple[Evidence, ...]:
    found = decode_image(data, max_pixels=PIXELS, provenance=True).provenance
    assert found is not None
    return found


def test_evidence_is_read_only_when_asked_for() -> None:
    assert decode_image(png(parameters=A1111), max_pixels=PIXELS).provenance is None


def test_a_plain_photo_has_no_evidence() -> None:
    assert evidence(jpeg()) == ()
    assert evidence(png()) == ()


def test_automatic1111_parameters_chunk() -> None:
    (entry,) = evidence(png(parameters=A1111))
    assert entry.kind == "png_text"
    assert entry.found.startswith("parameters (AUTOMATIC1111 / Forge): a castle on a hill")
    assert "Steps: 20" in entry.found
    assert (entry.verified, entry.says_ai) == (False, True)


def test_a_parameters_chunk_without_generation_settings_is_not_evidence() -> None:
    assert evidence(png(parameters="exposure +0.3, from my raw converter")) == ()


def test_comfyui_prompt_and_workflow_chunks() -> None:
    found = evidence(png(prompt=COMFY_PROMPT, workflow=json.dumps({"nodes": []})))
    assert [e.found.split(":")[0] for e in found] == ["prompt (ComfyUI)", "workflow (ComfyUI)"]
    assert all(e.says_ai and not e.verified for e in found)
    assert evidence(png(prompt="not json, just a word")) == ()


def test_invokeai_and_novelai_chunks() -> None:
    (invoke,) = evidence(png(invokeai_metadata=json.dumps({"positive_prompt": "a cat"})))
    assert invoke.found.startswith("invokeai_metadata (InvokeAI)")
    comment = json.dumps({"prompt": "1girl", "steps": 28, "sampler": "k_euler"})
    (novel,) = evidence(png(Software="NovelAI", Comment=comment))
    assert novel.found.startswith("Software NovelAI, Comment: {")
    assert '"steps": 28' in novel.found


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def test_a_text_chunk_after_the_pixel_data_is_read_too() -> None:
    data = png()
    iend = data.rindex(b"IEND") - 4
    data = (
        data[:iend]
        + _chunk(b"zTXt", b"parameters\0\0" + zlib.compress(A1111.encode()))
        + data[iend:]
    )
    (entry,) = evidence(data)
    assert entry.found.startswith("parameters (AUTOMATIC1111 / Forge)")


def test_a_corrupt_compressed_chunk_is_skipped_and_the_image_still_decodes() -> None:
    data = png()
    iend = data.rindex(b"IEND") - 4
    broken = _chunk(b"zTXt", b"parameters\0\0not zlib at all")
    data = data[:iend] + broken + data[iend:]
    image = decode_image(data, max_pixels=PIXELS, provenance=True)
    assert image.provenance == ()
    assert image.width == 96


@pytest.mark.parametrize(
    ("source", "says_ai"),
    [
        ("trainedAlgorithmicMedia", True),
        ("compositeSynthetic", True),
        ("compositeWithTrainedAlgorithmicMedia", True),
        ("digitalCapture", False),
    ],
)
def test_xmp_digital_source_type_in_a_jpeg(source: str, says_ai: bool) -> None:
    value = f"http://cv.iptc.org/newscodes/digitalsourcetype/{source}"
    (entry,) = evidence(jpeg(xmp=xmp(**{"Iptc4xmpExt:DigitalSourceType": value})))
    assert entry.kind == "xmp_digital_source_type"
    assert entry.found == f"DigitalSourceType {source}"
    assert (entry.verified, entry.says_ai) == (False, says_ai)


def test_xmp_creator_tool_in_a_png_names_the_generator() -> None:
    packet = xmp(**{"xmp:CreatorTool": "Adobe Firefly"}).decode()
    (entry,) = evidence(png(**{"XML:com.adobe.xmp": packet}))
    assert (entry.kind, entry.found) == ("generator_software", "XMP CreatorTool Adobe Firefly")
    assert entry.says_ai and not entry.verified


def test_exif_software_naming_a_generator_and_one_that_does_not() -> None:
    exif = Image.Exif()
    exif[0x0131] = "Midjourney v6.1"
    (entry,) = evidence(jpeg(exif=exif))
    assert (entry.kind, entry.found) == ("generator_software", "EXIF Software Midjourney v6.1")
    exif[0x0131] = "GIMP 2.10.36"
    assert evidence(jpeg(exif=exif)) == ()


def test_a_signed_c2pa_manifest_declaring_ai_is_verified() -> None:
    signed = sign(
        jpeg(), "image/jpeg", generator="TestGen 2.0", source_type="trainedAlgorithmicMedia"
    )
    (entry,) = evidence(signed)
    assert entry.kind == "c2pa_manifest"
    assert (entry.verified, entry.says_ai) == (True, True)
    assert "claim generator TestGen 2.0" in entry.found
    assert "digitalSourceType trainedAlgorithmicMedia" in entry.found
    assert "signed by test signer (batchvision tests)" in entry.found
    assert "validation Valid" in entry.found


def test_a_signed_camera_manifest_is_verified_but_does_not_say_ai() -> None:
    signed = sign(png(), "image/png", generator="TestCam 1.0", source_type="digitalCapture")
    (entry,) = evidence(signed)
    assert (entry.kind, entry.verified, entry.says_ai) == ("c2pa_manifest", True, False)


def test_changed_pixels_break_the_manifest_signature() -> None:
    signed = bytearray(
        sign(jpeg(), "image/jpeg", generator="TestGen", source_type="trainedAlgorithmicMedia")
    )
    signed[-200] ^= 0xFF  # inside the entropy-coded image data, after the manifest
    (entry,) = evidence(bytes(signed))
    assert entry.kind == "c2pa_manifest"
    assert "validation Invalid" in entry.found
    assert (entry.verified, entry.says_ai) == (False, True)


@pytest.mark.timeout(20)
def test_many_chunks_that_inflate_to_the_limit_are_bounded() -> None:
    # 40 zTXt chunks of 1 KB that each inflate to almost 1 MiB (under Pillow's own limits,
    # so the image decodes): only the first 8 MiB of wanted keywords are inflated.
    bomb = zlib.compress(b"Steps: " + b"\0" * ((1 << 20) - 1024))
    data = png()
    iend = data.rindex(b"IEND") - 4
    chunks = b"".join(
        _chunk(b"zTXt", key + b"\0\0" + bomb) for key in [b"parameters", b"other"] * 20
    )
    found = evidence(data[:iend] + chunks + data[iend:])
    assert [e.kind for e in found] == ["png_text"]


@pytest.mark.timeout(20)
def test_unclosed_xmp_openings_are_searched_once() -> None:
    # After the image data, where decoders do not look; a quadratic search would compare
    # ~10^11 characters here.
    data = jpeg() + b"<x:xmpmeta " * 300_000
    assert evidence(data) == ()
