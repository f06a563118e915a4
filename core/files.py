"""Writing outputs atomically, with their provenance record embedded.

Images are PNG files with the record as JSON in an iTXt chunk named ``loom``. Audio items are
16-bit WAV or FLAC files with the same JSON in the file's comment text field: in a WAV file the
``ICMT`` entry of a ``LIST``/``INFO`` chunk, in a FLAC file the ``COMMENT`` Vorbis comment.
libsndfile silently drops WAV text fields over about 2,000 characters, so Loom writes the WAV
``LIST`` chunk itself (after the audio data), which holds a record of any size.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import InputError, ProvenanceError

#: The PNG text chunk (iTXt) that holds a Loom provenance record.
PNG_RECORD_KEY = "loom"
#: Audio file formats Loom writes, by suffix (soundfile's format names).
AUDIO_FORMATS = {".wav": "WAV", ".flac": "FLAC"}
#: What names the software in a WAV file's INFO chunk (ISFT) and marks the comment as Loom's.
WAV_SOFTWARE = "Loom"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@contextmanager
def atomic_path(path: "str | Path") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``, on any
    error it is removed, so ``path`` is never left half-written."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"output path {str(path)!r} is a folder; give a file name such as {str(path / 'out.png')!r}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"cannot write {str(path)!r}: folder {str(parent)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp (and some writers, e.g. safetensors) make the file private; give it the usual mode
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def save_png(image, path: "str | Path", record: dict | None = None) -> Path:
    """Save a PIL image as PNG, atomically, with ``record`` as JSON in an iTXt chunk."""
    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"cannot write {str(path)!r}: image outputs are PNG files, use a name ending in .png")
    info = PngInfo()
    if record is not None:
        info.add_itxt(PNG_RECORD_KEY, json.dumps(record, separators=(",", ":"), sort_keys=True), zip=True)
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
        raise InputError(f"cannot write {str(path)!r}: audio outputs are WAV or FLAC files, use a name ending in .wav or .flac")
    pcm = np.asarray(pcm)
    if pcm.dtype != np.int16 or pcm.ndim != 2:
        raise InputError(f"cannot write {str(path)!r}: expected a length×channels int16 array, got {pcm.dtype} {pcm.shape}")
    text = None if record is None else json.dumps(record, separators=(",", ":"), sort_keys=True)
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
                raise ProvenanceError(f"{str(path)!r} is truncated: its {cid.decode('latin-1')!r} chunk runs past the end of the file")
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


def read_record(path: "str | Path") -> dict:
    """The provenance record embedded in a file Loom wrote (a PNG, WAV or FLAC file)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"file {str(path)!r} does not exist")
    with open(path, "rb") as f:
        magic = f.read(12)
    if magic[:4] == b"RIFF" and magic[8:12] == b"WAVE":
        text = _wav_comment(path)
    elif magic[:4] == b"fLaC":
        import soundfile

        try:
            with soundfile.SoundFile(path) as f:
                text = f.comment or None
        except RuntimeError as err:
            raise ProvenanceError(f"{str(path)!r} is not a FLAC file Loom can read: {err}") from None
    elif magic[:8] == _PNG_SIGNATURE or path.suffix.lower() == ".png":
        text = _png_text(path)
    else:
        raise ProvenanceError(f"{str(path)!r} is not a file Loom writes (a PNG image, or a WAV or FLAC clip)")
    if text is None:
        raise ProvenanceError(f"{str(path)!r} carries no Loom provenance record (was it written by Loom?)")
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        if magic[:8] != _PNG_SIGNATURE:  # an audio comment that someone else wrote
            raise ProvenanceError(f"{str(path)!r} carries no Loom provenance record (its comment is not Loom's)") from None
        raise ProvenanceError(f"{str(path)!r}: its Loom record is not valid JSON: {err}") from None
    if not isinstance(record, dict) or (magic[:8] != _PNG_SIGNATURE and "loom_record" not in record):
        raise ProvenanceError(f"{str(path)!r} carries no Loom provenance record (its comment is not Loom's)")
    return record


def _png_text(path: Path) -> str | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.text.get(PNG_RECORD_KEY) if hasattr(im, "text") else None
    except (UnidentifiedImageError, OSError) as err:
        raise ProvenanceError(f"{str(path)!r} is not an image Loom can read: {err}") from None


def read_audio(path: "str | Path"):
    """A WAV or FLAC file as a one-item :class:`~loom.core.data.Audio` (16-bit samples map back to
    the floats Loom wrote, ``pcm / 32767``)."""
    import numpy as np
    import soundfile
    import torch

    from .data import Audio

    path = Path(path)
    if not path.is_file():
        raise InputError(f"file {str(path)!r} does not exist")
    try:
        data, rate = soundfile.read(path, dtype="int16", always_2d=True)
    except RuntimeError as err:
        raise InputError(f"{str(path)!r} is not an audio file Loom can read: {err}") from None
    wave = torch.from_numpy(data.T.astype(np.float32) / 32767.0)
    return Audio(wave[None].contiguous(), int(rate))
