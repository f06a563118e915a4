"""The one table of outputs: which data type becomes which file, and how a file gives its record back.

Every writer of outputs (``loom generate``, ``run``, ``batch``, ``reproduce``, :func:`loom.save`)
goes through :data:`FORMATS`. Each :class:`OutputFormat` names its data type, its file suffixes
(the first is the default), how an item is written with its provenance record embedded, and how a
file is checked whole and its record read back. To write a new data type, add a format here.

Images are PNG files with the record as JSON in an iTXt chunk named ``loom``. Audio items are
16-bit WAV or FLAC files with the same JSON in the file's comment text field: in a WAV file the
``ICMT`` entry of a ``LIST``/``INFO`` chunk, in a FLAC file the ``COMMENT`` Vorbis comment.
libsndfile silently drops WAV text fields over about 2,000 characters, so Loom writes the WAV
``LIST`` chunk itself (after the audio data). Records of any size up to the ``record_bytes`` limit
(:mod:`loom.limits`) round-trip: the PNG chunk is zlib-compressed and read by Loom's own chunk
reader (Pillow stops at 1 MiB of text), and an audio comment over :data:`PACK_OVER` bytes is
stored as ``loom-zlib:`` + base64 of the zlib-compressed JSON (a FLAC comment holds < 16 MiB).

A record is data: reading one never fetches, opens or runs anything it names.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import zlib
from pathlib import Path

from loom.core import Audio, Data, Image, InputError, ProvenanceError
from loom.core.files import atomic_path
from loom.limits import current

#: The PNG text chunk (iTXt) that holds a Loom provenance record.
PNG_RECORD_KEY = "loom"
#: Audio file formats Loom writes, by suffix (soundfile's format names).
AUDIO_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
#: What names the software in a WAV file's INFO chunk (ISFT) and marks the comment as Loom's.
WAV_SOFTWARE = "Loom"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


#: Audio comments longer than this (bytes of JSON) are stored packed (zlib + base64).
PACK_OVER = 1024 * 1024
_PACKED = "loom-zlib:"


def _record_json(record: dict, path: Path) -> str:
    """``record`` as compact JSON, refused (before anything is written) over the ``record_bytes`` limit."""
    text = json.dumps(record, separators=(",", ":"), sort_keys=True)
    current().check("record_bytes", len(text.encode("utf-8")), f"the record for {str(path)!r}")
    return text


def _comment_text(text: str) -> str:
    """The record JSON as an audio comment: itself, or packed when long."""
    if len(text.encode("utf-8")) <= PACK_OVER:
        return text
    return _PACKED + base64.b64encode(zlib.compress(text.encode("utf-8"), 9)).decode("ascii")


def _inflate(packed: bytes, path: Path) -> str:
    """zlib ``packed`` as text, refused once it passes the ``record_bytes`` limit (a small file may
    inflate to gigabytes)."""
    limit = current().record_bytes
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(packed, limit + 1)
    except zlib.error as err:
        raise ProvenanceError(f"{str(path)!r}: its Loom record is damaged ({err})") from None
    if len(data) > limit or inflater.unconsumed_tail:
        current().check("record_bytes", limit + 1, f"the record in {str(path)!r}")
    return data.decode("utf-8", "replace")


def _unpack_comment(text: str, path: Path) -> str:
    if not text.startswith(_PACKED):
        current().check("record_bytes", len(text.encode("utf-8")), f"the record in {str(path)!r}")
        return text
    try:
        packed = base64.b64decode(text[len(_PACKED) :], validate=True)
    except ValueError:
        raise ProvenanceError(f"{str(path)!r}: its packed Loom record is not valid base64") from None
    return _inflate(packed, path)


def _max_stored(limit: int) -> int:
    """Most bytes a stored record (packed or not) of at most ``limit`` bytes of JSON can take:
    base64 of incompressible data is 4/3 of it, plus headers."""
    return limit * 2 + 4096


class OutputFormat:
    """How items of one data type are written as files, and read back."""

    data_type: type[Data] = Data
    #: File suffixes, the default first.
    suffixes: tuple[str, ...] = ()
    #: What the files are called in messages ("PNG", "WAV or FLAC").
    names = ""
    #: What :meth:`values` gives, in messages ("pixels", "samples").
    values_name = ""

    @property
    def suffix(self) -> str:
        return self.suffixes[0]

    def problem(self, data: Data, index: int) -> str | None:
        """Why item ``index`` of ``data`` must not be written (NaN values), or None."""
        return None

    def write(self, data: Data, index: int, path: Path, record: dict | None) -> Path:
        """Write item ``index`` to ``path`` atomically, with ``record`` embedded."""
        raise NotImplementedError

    def verify(self, path: Path) -> dict:
        """The record of a complete output at ``path``, decoding all of it; raises if it is
        truncated, damaged or carries no record."""
        raise NotImplementedError

    def values(self, path: Path):
        """The pixels or samples of the file at ``path`` as a numpy array, as they are stored."""
        raise NotImplementedError

    def item_values(self, data: Data, index: int):
        """The array item ``index`` of ``data`` would be stored as (what :meth:`values` reads back)."""
        raise NotImplementedError


class PngFormat(OutputFormat):
    data_type, suffixes, names, values_name = Image, (".png",), "PNG", "pixels"

    def problem(self, data: Image, index: int) -> str | None:
        import torch

        finite = bool(torch.isfinite(data.pixels[index].sum()))  # a sum: no image-sized mask
        return None if finite else "the chain's output holds NaN or infinite values"

    def write(self, data: Image, index: int, path: Path, record: dict | None) -> Path:
        return save_png(_pil_image(data.pixels[index]), path, record)

    def verify(self, path: Path) -> dict:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - len(_PNG_END)))
            if f.read() != _PNG_END:
                raise ProvenanceError(f"{str(path)!r} is truncated (no PNG end chunk)")
        with open_png(path) as im:
            im.load()  # decodes every pixel: a damaged file raises here
        return read_record(path)

    def values(self, path: Path):
        import numpy as np

        with open_png(path) as im:
            return np.asarray(im)

    def item_values(self, data: Image, index: int):
        import numpy as np

        return np.asarray(data.take([index]).to_pil()[0])


class AudioFormat(OutputFormat):
    data_type, suffixes, names, values_name = Audio, tuple(AUDIO_FORMATS), "WAV or FLAC", "samples"

    def problem(self, data: Audio, index: int) -> str | None:
        import torch

        return (
            None if bool(torch.isfinite(data.clip(index)).all()) else "the chain's output holds NaN or infinite values"
        )

    def write(self, data: Audio, index: int, path: Path, record: dict | None) -> Path:
        return save_audio(pcm16(data, index), data.sample_rate, path, record)

    def verify(self, path: Path) -> dict:
        import soundfile

        if path.suffix.lower() == ".wav":
            chunks = wav_chunks(path)  # raises when a chunk runs past the end of the file (truncated)
            if "data" not in chunks or "fmt " not in chunks:
                raise ProvenanceError(f"{str(path)!r} has no audio data")
        with soundfile.SoundFile(path) as f:
            frames = f.frames
            if len(f.read(dtype="int16")) != frames:  # decodes every sample: a damaged file raises or comes short
                raise ProvenanceError(f"{str(path)!r} holds fewer samples than its header says")
        return read_record(path)

    def values(self, path: Path):
        import soundfile

        return soundfile.read(path, dtype="int16", always_2d=True)[0]

    def item_values(self, data: Audio, index: int):
        return pcm16(data, index)


def _pil_image(pixels):
    """One C×H×W item as a PIL image, converted a block of rows at a time (by ``Image.to_numpy``'s
    rounding): a large image then costs its PIL copy, not float and uint8 copies too."""
    from PIL import Image as PILImage

    height, width = pixels.shape[-2:]
    canvas = PILImage.new("RGB", (width, height))
    for top in range(0, height, 64):
        rows = Image(pixels[None, :, top : top + 64]).to_numpy()[0]
        canvas.paste(PILImage.fromarray(rows), (0, top))
    return canvas


def pcm16(audio: Audio, index: int):
    """Item ``index`` as a length×C int16 array, rounded the same way every time so saved samples
    are reproducible."""
    import torch

    pcm = (audio.clip(index).detach().float().clamp(-1, 1) * 32767.0).round().to(torch.int16)
    return pcm.t().contiguous().cpu().numpy()


#: Every data type Loom writes to files, with its format.
FORMATS: list[OutputFormat] = [PngFormat(), AudioFormat()]


def format_for(output_type: type[Data], path: "str | Path | None" = None) -> OutputFormat:
    """The format a chain giving ``output_type`` is written in; with ``path``, also checks that its
    suffix fits. An InputError says which types and suffixes Loom writes (checked before anything runs)."""
    where = f"cannot write {str(path)!r}" if path is not None else "cannot write files"
    for fmt in FORMATS:
        if issubclass(output_type, fmt.data_type):
            if path is not None and Path(path).suffix.lower() not in fmt.suffixes:
                raise InputError(
                    f"{where}: this chain gives {output_type.kind}, written as {fmt.names} files; "
                    f"use a name ending in {' or '.join(fmt.suffixes)}"
                )
            return fmt
    kinds = " or ".join(f.data_type.kind for f in FORMATS)
    raise InputError(
        f"{where}: this chain gives {output_type.kind}, which Loom does not write to files; "
        f"end the chain in a step that gives {kinds}"
    )


def open_png(path: "str | Path"):
    """``path`` opened by Pillow with its text limit raised deliberately to Loom's ``record_bytes``
    (Pillow refuses a PNG whose text passes 1 MiB, so a large record would make a file unreadable)."""
    from PIL import Image as PILImage
    from PIL import PngImagePlugin

    PngImagePlugin.MAX_TEXT_CHUNK = max(current().record_bytes, 1024 * 1024)
    PngImagePlugin.MAX_TEXT_MEMORY = max(current().record_bytes, 64 * 1024 * 1024)
    return PILImage.open(path)


def difference(path: "str | Path", data: Data, index: int) -> float:
    """Largest absolute difference between the pixels (0–255) or 16-bit samples stored in ``path``
    and item ``index`` of ``data`` as Loom would store it: 0 when they are the same, infinity when
    their shapes differ."""
    import numpy as np

    fmt = format_for(type(data))
    stored, made = fmt.values(Path(path)), fmt.item_values(data, index)
    if stored.shape != made.shape:
        return float("inf")
    return float(np.abs(stored.astype(np.int64) - made.astype(np.int64)).max(initial=0))


def check_output_path(path: "str | Path", output_type: type[Data]) -> Path:
    """``path`` if a chain giving ``output_type`` can be written to it (its suffix fits, its folder
    exists and takes files); otherwise an InputError. Asked before any weights load."""
    format_for(output_type, path)
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"cannot write {str(path)!r}: folder {str(path.parent)!r} does not exist; create it first")
    check_output_folder(path.parent)
    return path


def check_output_folder(folder: "str | Path") -> Path:
    """``folder`` if it exists or can be made, and takes files (a file is made there and removed, so a
    read-only folder or file system fails now, not after a whole run); otherwise an InputError."""
    import tempfile

    folder = Path(folder)
    existing = next(p for p in [folder, *folder.parents] if p.exists())  # nothing is made here
    if not existing.is_dir():
        raise InputError(f"cannot write in {str(folder)!r}: {str(existing)!r} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise InputError(
            f"cannot write in {str(folder)!r} ({err.strerror or err}): choose a folder you can write to"
        ) from None
    return folder


def write(data: Data, index: int, path: "str | Path", record: dict | None = None) -> Path:
    """Write item ``index`` of ``data`` to ``path`` (its suffix picks the file type), atomically,
    with ``record`` embedded."""
    return format_for(type(data), path).write(data, index, Path(path), record)


def save_png(image, path: "str | Path", record: dict | None = None) -> Path:
    """Save a PIL image as PNG, atomically, with ``record`` as JSON in an iTXt chunk."""
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"cannot write {str(path)!r}: image outputs are PNG files, use a name ending in .png")
    info = PngInfo()
    if record is not None:
        info.add_itxt(PNG_RECORD_KEY, _record_json(record, path), zip=True)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return path


def save_audio(pcm, sample_rate: int, path: "str | Path", record: dict | None = None) -> Path:
    """Save a length×channels int16 array as a 16-bit WAV or FLAC file (by ``path``'s suffix),
    atomically, with ``record`` as JSON in the file's comment field."""
    import numpy as np
    import soundfile

    path = Path(path)
    fmt = AUDIO_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            f"cannot write {str(path)!r}: audio outputs are WAV or FLAC files, use a name ending in .wav or .flac"
        )
    pcm = np.asarray(pcm)
    if pcm.dtype != np.int16 or pcm.ndim != 2:
        raise InputError(
            f"cannot write {str(path)!r}: expected a length×channels int16 array, got {pcm.dtype} {pcm.shape}"
        )
    text = None if record is None else _comment_text(_record_json(record, path))
    with atomic_path(path) as tmp:
        with soundfile.SoundFile(tmp, "w", int(sample_rate), pcm.shape[1], "PCM_16", format=fmt) as f:
            if text is not None and fmt == "FLAC":
                f.comment = text  # a Vorbis comment: under 16 MiB, which a packed record fits
            f.write(pcm)
        if text is not None and fmt == "WAV":
            _append_wav_info(tmp, {"ISFT": WAV_SOFTWARE, "ICMT": text})
    return path


def _append_wav_info(path: Path, fields: dict[str, str]) -> None:
    """Append a RIFF ``LIST``/``INFO`` chunk holding ``fields`` (4-letter ids → text) to a WAV
    file and fix the RIFF size. Each text is NUL-terminated and padded to an even length."""
    body = b"INFO"
    for key, value in fields.items():
        data = value.encode("utf-8") + b"\x00"
        body += key.encode("ascii") + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")
    chunk = b"LIST" + struct.pack("<I", len(body)) + body
    with open(path, "r+b") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ProvenanceError(f"{str(path)!r} is not a RIFF/WAVE file")
        f.seek(0, os.SEEK_END)
        if f.tell() % 2:
            f.write(b"\x00")  # chunks start on even offsets
        f.write(chunk)
        size = f.tell() - 8
        f.seek(4)
        f.write(struct.pack("<I", size))


def wav_chunks(path: "str | Path") -> dict[str, list[tuple[int, int]]]:
    """The top-level chunks of a WAV file: id → [(offset of the data, size)]. Raises
    ProvenanceError when the file is not RIFF/WAVE or a chunk runs past the end (truncated)."""
    path = Path(path)
    total = path.stat().st_size
    chunks: dict[str, list[tuple[int, int]]] = {}
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ProvenanceError(f"{str(path)!r} is not a WAV file Loom can read (no RIFF/WAVE header)")
        offset = 12
        while offset + 8 <= total:
            f.seek(offset)
            cid, size = struct.unpack("<4sI", f.read(8))
            if offset + 8 + size > total:
                raise ProvenanceError(
                    f"{str(path)!r} is truncated: its {cid.decode('latin-1')!r} chunk runs past the end of the file"
                )
            chunks.setdefault(cid.decode("latin-1"), []).append((offset + 8, size))
            offset += 8 + size + (size % 2)
    if total - offset > 1:  # one stray pad byte is tolerated
        raise ProvenanceError(f"{str(path)!r} is truncated: it ends inside a chunk header")
    return chunks


def _wav_comment(path: Path) -> str | None:
    """The ICMT text of a WAV file's LIST/INFO chunk that Loom wrote, or None."""
    with open(path, "rb") as f:
        for start, size in wav_chunks(path).get("LIST", []):
            f.seek(start)
            if size > _max_stored(current().record_bytes):  # refused before it is read into memory
                current().check("record_bytes", size, f"the LIST chunk of {str(path)!r}")
            body = f.read(size)
            if body[:4] != b"INFO":
                continue
            fields, pos = {}, 4
            while pos + 8 <= len(body):
                key, n = struct.unpack("<4sI", body[pos : pos + 8])
                fields[key.decode("latin-1")] = body[pos + 8 : pos + 8 + n].rstrip(b"\x00").decode("utf-8", "replace")
                pos += 8 + n + (n % 2)
            if "ICMT" in fields:
                return fields["ICMT"]
    return None


def _flac_comment(path: Path) -> str | None:
    import soundfile

    try:
        with soundfile.SoundFile(path) as f:
            return f.comment or None
    except RuntimeError as err:
        raise ProvenanceError(f"{str(path)!r} is not a FLAC file Loom can read: {err}") from None


def _png_text(path: Path) -> str | None:
    """The text of the PNG's ``loom`` iTXt chunk, or None. Loom reads the chunks itself: Pillow
    refuses text over 1 MiB, and the ``record_bytes`` limit is the one rule for a record's size."""
    with open(path, "rb") as f:
        if f.read(8) != _PNG_SIGNATURE:
            raise ProvenanceError(f"{str(path)!r} is not an image Loom can read (no PNG signature)")
        while True:
            head = f.read(8)
            if len(head) < 8:
                raise ProvenanceError(f"{str(path)!r} is truncated (no PNG end chunk)")
            size, kind = struct.unpack(">I4s", head)
            if kind == b"IEND":
                return None
            start = f.tell()
            if kind == b"iTXt" and f.read(len(PNG_RECORD_KEY) + 1) == PNG_RECORD_KEY.encode() + b"\x00":
                return _itxt_text(_png_chunk_rest(f, size - len(PNG_RECORD_KEY) - 1, path), path)
            f.seek(start + size + 4)  # past the chunk and its CRC


def _png_chunk_rest(f, size: int, path: Path) -> bytes:
    """The rest (``size`` bytes) of the record's chunk, refused unread when over the limit."""
    if size > _max_stored(current().record_bytes):
        current().check("record_bytes", size, f"the record chunk of {str(path)!r}")
    rest = f.read(size)
    if len(rest) < size:
        raise ProvenanceError(f"{str(path)!r} is truncated: its record chunk runs past the end of the file")
    return rest


def _itxt_text(rest: bytes, path: Path) -> str:
    """The text of an iTXt chunk after its keyword: compression flag and method, language tag,
    translated keyword, then the (maybe zlib-compressed) UTF-8 text."""
    compressed = rest[:1] == b"\x01"
    _, _, rest = rest[2:].partition(b"\x00")  # language tag
    _, _, text = rest.partition(b"\x00")  # translated keyword
    if compressed:
        return _inflate(text, path)
    current().check("record_bytes", len(text), f"the record in {str(path)!r}")
    return text.decode("utf-8", "replace")


def _embedded_text(path: Path) -> tuple[str | None, bool]:
    """The record text in ``path`` (by its first bytes, not its name) and whether it is a PNG."""
    with open(path, "rb") as f:
        magic = f.read(12)
    if magic[:4] == b"RIFF" and magic[8:12] == b"WAVE":
        return _wav_comment(path), False
    if magic[:4] == b"fLaC":
        return _flac_comment(path), False
    if magic[:8] == _PNG_SIGNATURE or path.suffix.lower() == ".png":
        return _png_text(path), True
    raise ProvenanceError(f"{str(path)!r} is not a file Loom writes (a PNG image, or a WAV or FLAC clip)")


def read_record(path: "str | Path") -> dict:
    """The provenance record embedded in a file Loom wrote (a PNG, WAV or FLAC file)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file {str(path)!r} does not exist")
    text, png = _embedded_text(path)
    if text is None:
        raise ProvenanceError(f"{str(path)!r} carries no Loom provenance record (was it written by Loom?)")
    if not png:
        text = _unpack_comment(text, path)
    not_loom = ProvenanceError(f"{str(path)!r} carries no Loom provenance record (its comment is not Loom's)")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        if not png:  # an audio comment that someone else wrote
            raise not_loom from None
        raise ProvenanceError(f"{str(path)!r}: its Loom record is not valid JSON: {err}") from None
    if not isinstance(record, dict) or (not png and "loom_record" not in record):
        raise not_loom
    return record


def read_audio(path: "str | Path") -> Audio:
    """A WAV or FLAC file as a one-item :class:`~loom.core.Audio` (16-bit samples map back to
    the floats Loom wrote, ``pcm / 32767``)."""
    import numpy as np
    import soundfile
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"file {str(path)!r} does not exist")
    try:
        data, rate = soundfile.read(path, dtype="int16", always_2d=True)
    except RuntimeError as err:
        raise InputError(f"{str(path)!r} is not an audio file Loom can read: {err}") from None
    wave = torch.from_numpy(data.T.astype(np.float32) / 32767.0)
    return Audio(wave[None].contiguous(), int(rate))


# -- images a request gives (image, mask) ---------------------------------------------------------
#: The given input that is read as a mask (grey, white = repaint), whatever its file's mode.
MASK_INPUT = "mask"


def read_image(path: "str | Path", mask: bool = False) -> Image:
    """An image file (any format Pillow reads) as a one-item :class:`~loom.core.Image`, by one rule for every mode:
    16-bit grey is scaled to 8 bits (÷ 257); palette, grey, CMYK and the rest become RGB; transparency (RGBA, LA, a
    palette's) is composited on white, as a viewer shows it on a white page. A ``mask`` then becomes grey (ITU-R 601
    luma) copied to the three channels: white = repaint. Its size is read from the header and refused over the
    ``pixels`` limit (:mod:`loom.limits`) before anything is decoded; a missing, truncated, damaged or non-image file
    is an InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file {str(path)!r} does not exist")
    with _opened_image(path, str(path)) as im:
        return image_from_pil(im, str(path), mask)


def image_from_bytes(data: bytes, where: str, mask: bool = False) -> Image:
    """An image file's bytes (an upload; ``where`` names it in messages) as :func:`read_image` reads a file, by the
    same rule and limits."""
    import io

    with _opened_image(io.BytesIO(data), where) as im:
        return image_from_pil(im, where, mask)


def image_from_pil(im, where: str, mask: bool = False) -> Image:
    """A PIL image (``where``: its file or name, for messages) as a one-item Image by :func:`read_image`'s rule."""
    import numpy as np
    import torch

    width, height = im.size
    current().check("pixels", width * height, f"image {where!r} ({width} × {height})")
    try:
        im.load()  # decodes every pixel: a truncated or damaged file raises here
        rgb = _as_rgb(im)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error) as err:
        raise InputError(f"{where!r} is a damaged or truncated image ({err}); give a whole image file") from None
    if mask:
        rgb = rgb.convert("L").convert("RGB")
    pixels = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)[None]
    return Image(pixels.float().div_(255.0))


class _opened_image:
    """``source`` (a path or a binary file object; ``where`` names it) opened by Pillow, reading its header only.
    Loom's ``pixels`` limit is the one rule for an image's size, so Pillow's own decompression-bomb check is off
    while the header is read (nothing is decoded yet)."""

    def __init__(self, source: object, where: str) -> None:
        from PIL import Image as PILImage
        from PIL import UnidentifiedImageError

        bomb, PILImage.MAX_IMAGE_PIXELS = PILImage.MAX_IMAGE_PIXELS, None
        try:
            self.image = PILImage.open(source)  # type: ignore[arg-type]
        except UnidentifiedImageError:
            raise InputError(f"{where!r} is not an image file Loom can read (PNG, JPEG, WebP, ...)") from None
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as err:
            raise InputError(f"{where!r} is not an image Loom can read ({err})") from None
        finally:
            PILImage.MAX_IMAGE_PIXELS = bomb

    def __enter__(self):
        return self.image

    def __exit__(self, *exc) -> None:
        self.image.close()


def _as_rgb(im):
    """``im`` as an 8-bit RGB image by :func:`read_image`'s rule."""
    import numpy as np
    from PIL import Image as PILImage

    if im.mode.startswith("I"):  # 16-bit grey (I;16, or I as Pillow opens a 16-bit PNG): scaled to 8 bits
        grey = np.asarray(im).astype(np.float64).clip(0, 65535) / 257.0
        im = PILImage.fromarray(grey.round().astype(np.uint8), "L")
    elif im.mode == "F":
        im = PILImage.fromarray((np.asarray(im).clip(0, 1) * 255).round().astype(np.uint8), "L")
    if im.mode in ("P", "PA", "LA", "La", "RGBA", "RGBa") or "transparency" in im.info:
        im = PILImage.alpha_composite(PILImage.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA"))
    return im.convert("RGB")


def read_images(given: "dict[str, object]") -> "dict[str, Data]":
    """The named inputs of a request (``image=``, ``mask=``) as data batches: a Loom :class:`Data` batch is kept; an
    image path or PIL image, or a list of them (one per input), is read by :func:`read_image` (``mask`` as a mask).
    Images of one input must share one size, and a mask must have its image's size: otherwise an InputError naming
    both. None values are left out."""
    read: dict[str, Data] = {}
    names: dict[str, list[str]] = {}
    for key, value in given.items():
        if value is None or isinstance(value, Data):
            if value is not None:
                read[key], names[key] = value, [f"{key} {i + 1}" for i in range(len(value))]
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if not values:
            raise InputError(f"{key}: no images given")
        current().check("items", len(values), f"{len(values)} {key} images")
        names[key] = [str(v) if isinstance(v, (str, Path)) else f"{key} {i + 1}" for i, v in enumerate(values)]
        items = [_one_image(v, n, key == MASK_INPUT) for v, n in zip(values, names[key])]
        _check_sizes([(n, i) for n, i in zip(names[key], items)], f"the {key} images of one request")
        read[key] = Image.concat(items) if len(items) > 1 else items[0]
    if "image" in read and MASK_INPUT in read and all(isinstance(read[k], Image) for k in ("image", MASK_INPUT)):
        _check_mask(read["image"], read[MASK_INPUT], names["image"], names[MASK_INPUT])
    return read


def _one_image(value, name: str, mask: bool) -> Image:
    """A path or PIL image as a one-item Image (a PIL image by the same rule as a file)."""
    if isinstance(value, (str, Path)):
        return read_image(value, mask)
    if hasattr(value, "mode") and hasattr(value, "size"):  # a PIL image
        return image_from_pil(value, name, mask)
    raise InputError(f"{name}: an image input is a file path, a PIL image or a loom Image, not {type(value).__name__}")


def _check_sizes(items: "list[tuple[str, Image]]", what: str) -> None:
    """An InputError unless every image in ``items`` (name, one-item Image) has the first one's size."""
    first_name, first = items[0]
    for name, item in items[1:]:
        if item.pixels.shape[-2:] != first.pixels.shape[-2:]:
            raise InputError(f"{what} must share one size: {first_name!r} is {_size(first)}, {name!r} is {_size(item)}")


def _check_mask(image: Image, mask: Image, image_names: list[str], mask_names: list[str]) -> None:
    """An InputError unless the masks have their images' size (a batch holds one size)."""
    if image.pixels.shape[-2:] != mask.pixels.shape[-2:]:
        raise InputError(
            f"mask {mask_names[0]!r} is {_size(mask)} but image {image_names[0]!r} is {_size(image)}: "
            "give a mask of its image's size (white = repaint)"
        )


def _size(image: Image) -> str:
    height, width = image.pixels.shape[-2:]
    return f"{width} × {height}"
