"""The one table of outputs: which data type becomes which file, and how a file gives its record back.

Every writer of outputs (``loom generate``, ``run``, ``batch``, ``reproduce``, :func:`loom.save`)
goes through :data:`FORMATS`. Each :class:`OutputFormat` names its data type, its file suffixes
(the first is the default), how an item is written with its provenance record embedded, and how a
file is checked whole and its record read back. To write a new data type, add a format here.

Images are PNG files with the record as JSON in an iTXt chunk named ``loom``. Audio items are
16-bit WAV or FLAC files with the same JSON in the file's comment text field: in a WAV file the
``ICMT`` entry of a ``LIST``/``INFO`` chunk, in a FLAC file the ``COMMENT`` Vorbis comment.
libsndfile silently drops WAV text fields over about 2,000 characters, so Loom writes the WAV
``LIST`` chunk itself (after the audio data), which holds a record of any size.

A record is data: reading one never fetches, opens or runs anything it names.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from loom.core import Audio, Data, Image, InputError, ProvenanceError
from loom.core.files import atomic_path

#: The PNG text chunk (iTXt) that holds a Loom provenance record.
PNG_RECORD_KEY = "loom"
#: Audio file formats Loom writes, by suffix (soundfile's format names).
AUDIO_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
#: What names the software in a WAV file's INFO chunk (ISFT) and marks the comment as Loom's.
WAV_SOFTWARE = "Loom"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _record_json(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"), sort_keys=True)


class OutputFormat:
    """How items of one data type are written as files, and read back."""

    data_type: type[Data] = Data
    #: File suffixes, the default first.
    suffixes: tuple[str, ...] = ()
    #: What the files are called in messages ("PNG", "WAV or FLAC").
    names = ""

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


class PngFormat(OutputFormat):
    data_type, suffixes, names = Image, (".png",), "PNG"

    def problem(self, data: Image, index: int) -> str | None:
        import torch

        return (
            None
            if bool(torch.isfinite(data.pixels[index]).all())
            else "the chain's output holds NaN or infinite values"
        )

    def write(self, data: Image, index: int, path: Path, record: dict | None) -> Path:
        return save_png(data.take([index]).to_pil()[0], path, record)

    def verify(self, path: Path) -> dict:
        from PIL import Image as PILImage

        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - len(_PNG_END)))
            if f.read() != _PNG_END:
                raise ProvenanceError(f"{str(path)!r} is truncated (no PNG end chunk)")
        with PILImage.open(path) as im:
            im.load()  # decodes every pixel: a damaged file raises here
        return read_record(path)


class AudioFormat(OutputFormat):
    data_type, suffixes, names = Audio, tuple(AUDIO_FORMATS), "WAV or FLAC"

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


def check_output_path(path: "str | Path", output_type: type[Data]) -> Path:
    """``path`` if a chain giving ``output_type`` can be written to it; otherwise an InputError."""
    format_for(output_type, path)
    return Path(path)


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
        info.add_itxt(PNG_RECORD_KEY, _record_json(record), zip=True)
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
    text = None if record is None else _record_json(record)
    with atomic_path(path) as tmp:
        with soundfile.SoundFile(tmp, "w", int(sample_rate), pcm.shape[1], "PCM_16", format=fmt) as f:
            if text is not None and fmt == "FLAC":
                f.comment = text  # a Vorbis comment: no size limit that matters here
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
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(path) as im:
            return im.text.get(PNG_RECORD_KEY) if hasattr(im, "text") else None
    except (UnidentifiedImageError, OSError) as err:
        raise ProvenanceError(f"{str(path)!r} is not an image Loom can read: {err}") from None


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
