"""``loom serve``: a generation service (FastAPI) with a job queue, live progress, cancellation and a web page.

    loom serve                                   # http://127.0.0.1:8000/ (the page), /openapi.json (the API)
    loom serve --host 0.0.0.0 --token SECRET     # reachable from other machines: a token is required

Jobs live in ``--data DIR``: ``DIR/jobs.sqlite`` (one SQLite file, WAL) holds each job's request, chain, status
and error; ``DIR/jobs/<id>/0001.png`` … its outputs, each written atomically with its provenance record. Worker
threads take queued jobs in order. A server killed mid-job queues its unfinished jobs again when it starts, and
remakes only the outputs that are missing: an output's seed is fixed when the job is queued, and its record leaves
out what depends on how it ran (timings, creation time), so a remade output is the same bytes.

A loaded component keeps a per-call progress listener on itself, so it must not run in two threads at once: runs
are serialised per chain (one lock per cached pipeline); with ``--workers N`` jobs on different chains run in
parallel and jobs on the same chain one at a time. See docs/serve.md.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import secrets
import sqlite3
import tempfile
import threading
import time
import urllib.request
import uuid
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator

from loom.core import Cancelled, CancelToken, Image, InputError, LoomError, get_registry
from loom.core.seeding import MAX_SEED, item_seeds

log = logging.getLogger("loom.serve")

#: Largest request body accepted (bytes); a larger one gets 413 before it is parsed.
MAX_BODY = 1_000_000
#: Seconds a client told 429 (queue full) is asked to wait.
RETRY_AFTER_S = 5
#: Seconds a webhook may take before it is given up on.
WEBHOOK_TIMEOUT_S = 5
#: Least seconds between two progress events of one job (item events come as each output is written).
PROGRESS_EVERY_S = 0.25
#: Least seconds between two previews a job may ask for (each costs a decode and a PNG of the run's time).
MIN_PREVIEW_EVERY_S = 0.1
ENDED = ("finished", "failed", "cancelled")
WEB = Path(__file__).parent / "web"
Status = Literal["queued", "running", "finished", "failed", "cancelled"]


# -- the API's models ---------------------------------------------------------------------------------
class JobRequest(BaseModel):
    """A job: ``prompt`` or ``prompts`` (one of them), each made ``count`` times; output *i* gets seed ``seed + i``
    (as ``loom.generate(prompts, seed, count=count)``)."""

    model_config = ConfigDict(extra="forbid")
    prompt: str | None = None
    prompts: list[str] | None = None
    generator: str | None = Field(None, description="A registered generator (default: Loom's default, vae).")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Base seed (default: random, fixed when queued).")
    count: int = Field(1, ge=1)
    size: int | None = Field(256, ge=8, description="Longer side of the images in pixels; null: no resize.")
    webhook: str | None = Field(None, description="An http(s) URL told {id, status} by POST when the job ends.")
    image: str | None = Field(
        None,
        description="An image to start from, for a generator that edits (diffusion): a PNG or JPEG, base64 or a "
        "data: URL; one for every output, as `loom generate --image`.",
    )
    mask: str | None = Field(None, description="Where to repaint (white), as image; needs image.")
    strength: float | None = Field(
        None, gt=0, le=1, description="How far an edit may move from its image (the generator's strength option)."
    )
    preview_every: float | None = Field(
        None,
        ge=MIN_PREVIEW_EVERY_S,
        le=60,
        description="Seconds between previews (the image so far, a PNG data URL) in progress events, for a "
        "generator that reports them (diffusion); null: none.",
    )

    @field_validator("webhook")
    @classmethod
    def _http_only(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError("a webhook is an http:// or https:// URL")
        return url

    def prompt_list(self) -> list[str]:
        return [self.prompt] if self.prompt is not None else list(self.prompts or [])

    def items(self) -> list[str]:
        """The prompt of each output, in order: the prompts, ``count`` times over (as ``loom.generate``)."""
        return self.prompt_list() * self.count

    def given(self, n: int, pipeline: Any) -> dict:
        """The request's images (``image``, ``mask``) as ``pipeline.run`` takes them for ``n`` outputs, read and checked
        as ``loom.generate`` reads them (sizes, limits, the chain takes them); a LoomError in one line if not."""
        from loom.outputs import read_images

        images = {"image": self.image, "mask": self.mask}
        return pipeline.check_given(read_images({k: decoded_image(k, v) for k, v in images.items() if v}), n)


class GenerateRequest(BaseModel):
    """One prompt, one image, made while the client waits."""

    model_config = ConfigDict(extra="forbid")
    prompt: str
    generator: str | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    size: int | None = Field(256, ge=8)


class JobCreated(BaseModel):
    id: str
    status: Literal["queued"]


class JobStatus(BaseModel):
    id: str
    status: Status
    progress: float = Field(description="0 … 1: items made, in fractions while an item is being made.")
    outputs: int = Field(description="Outputs written so far: GET /v1/jobs/{id}/outputs/1 … this number.")
    total: int = Field(description="Outputs the job makes: prompts × count.")
    error: str | None = None
    request: JobRequest


class ComponentInfo(BaseModel):
    name: str
    qualified_name: str
    plugin: str
    kind: str = Field(description="encoder, generator or postprocessor")
    input_type: str
    output_type: str
    description: str
    config_schema: dict[str, Any] = Field(description="JSON Schema of the component's config.")


class Problem(BaseModel):
    detail: str = Field(description="What was wrong, in one line.")


def one_line(err: BaseException) -> str:
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def output_name(n: int) -> str:
    return f"{n:04d}.png"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- checking a request before it is queued --------------------------------------------------------
def decoded_image(name: str, text: str) -> Image:
    """A request's base64 image (or ``data:…;base64,`` URL) as a one-item Image, read as ``loom generate --image``
    reads a file (the same rule and pixel limit, checked before anything is decoded); an InputError naming ``name``
    if it is not one. Nothing of a request is written where a path could name it."""
    import base64
    import binascii

    from loom.outputs import image_from_bytes

    data = text.split(",", 1)[1] if text.startswith("data:") and "," in text else text
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise InputError(f"{name} is not base64 ({one_line(err)}): send the image file's bytes, base64") from None
    return image_from_bytes(raw, f"the {name} sent", mask=name == "mask")


def checked_spec(
    prompts: list[str],
    count: int,
    generator: str | None,
    size: int | None,
    strength: float | None = None,
    edit: bool = False,
) -> dict:
    """The chain for a request, built and type-checked (no weights load), or a LoomError in one line: a
    request over Loom's limits, an empty prompt, an unknown generator, one that makes no images, a strength for
    one that takes none."""
    from loom.api import DEFAULT_GENERATOR, check_request, default_spec, with_strength
    from loom.core import Pipeline, UnknownComponentError

    if not prompts:
        raise LoomError("no prompt: give prompt, or prompts (a non-empty list)")
    for i, prompt in enumerate(prompts, start=1):
        if not prompt.strip():
            raise LoomError(f"prompt {i} is empty: give some text to generate from")
    check_request(prompts, None, size, count)  # loom.generate's limits: items and pixels
    name = generator or DEFAULT_GENERATOR
    # a registered name only: a generator may also be a folder for loom.generate, but no client names a path here
    entry = get_registry().get(name)
    if entry.cls.role != "generator":
        raise UnknownComponentError(f"{name!r} is a {entry.cls.role}, not a generator")
    spec = default_spec(name, size, edit=edit)
    if strength is not None:
        spec = with_strength(spec, strength)
    pipeline = Pipeline.from_spec(spec)
    if not issubclass(pipeline.output_type, Image):
        raise LoomError(f"generator {name!r} makes {pipeline.output_type.kind}; this service serves images")
    return spec


# -- where jobs are kept ----------------------------------------------------------------------------
class JobStore:
    """Jobs in one SQLite file (WAL: readers never wait for the writer). One connection, used under a lock."""

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT UNIQUE NOT NULL,
        request TEXT NOT NULL,
        spec TEXT NOT NULL,
        status TEXT NOT NULL,
        outputs INTEGER NOT NULL DEFAULT 0,
        total INTEGER NOT NULL,
        error TEXT,
        created REAL NOT NULL
    )"""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(self.SCHEMA)

    def add(self, request: JobRequest, spec: dict, queue_limit: int) -> str | None:
        """Queue a job; its id, or None when ``queue_limit`` jobs are already queued or running."""
        job_id = uuid.uuid4().hex
        with self.lock:
            if self.count("queued", "running") >= queue_limit:
                return None
            self.db.execute(
                "INSERT INTO jobs (id, request, spec, status, total, created) VALUES (?, ?, ?, 'queued', ?, ?)",
                (
                    job_id,
                    request.model_dump_json(),
                    json.dumps(spec, sort_keys=True),
                    len(request.items()),
                    time.time(),
                ),
            )
        return job_id

    def count(self, *statuses: str) -> int:
        marks = ", ".join("?" * len(statuses))
        with self.lock:
            return self.db.execute(f"SELECT COUNT(*) FROM jobs WHERE status IN ({marks})", statuses).fetchone()[0]

    def get(self, job_id: str) -> sqlite3.Row | None:
        with self.lock:
            return self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()

    def claim(self, busy: set[str]) -> sqlite3.Row | None:
        """Mark the oldest queued job whose chain is not ``busy`` running, and return it."""
        with self.lock:
            for row in self.db.execute("SELECT * FROM jobs WHERE status = 'queued' ORDER BY seq").fetchall():
                if row["spec"] not in busy:
                    self.set(row["id"], status="running")
                    return self.get(row["id"])
        return None

    def set(self, job_id: str, **fields: Any) -> None:
        names = ", ".join(f"{name} = ?" for name in fields)
        with self.lock:
            self.db.execute(f"UPDATE jobs SET {names} WHERE id = ?", (*fields.values(), job_id))

    def cancel_queued(self, job_id: str) -> bool:
        """Cancel the job if it is still queued (it will never start); whether it was."""
        with self.lock:
            changed = self.db.execute(
                "UPDATE jobs SET status = 'cancelled' WHERE id = ? AND status = 'queued'", (job_id,)
            )
            return changed.rowcount == 1

    def requeue_unfinished(self) -> list[str]:
        """Queue again the jobs a stopped or killed server left running; the ids of every job to do, in order."""
        with self.lock:
            self.db.execute("UPDATE jobs SET status = 'queued' WHERE status = 'running'")
            return [r["id"] for r in self.db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq")]


# -- what clients of /events see --------------------------------------------------------------------
class EventLog:
    """Each job's events since this server started, in order, for any number of readers (a reader that connects
    late, or again with Last-Event-ID, gets them from where it asks). Thread-safe: workers add, the loop reads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[str, list[tuple[str, dict]]] = {}

    def add(self, job_id: str, event: str, **data: Any) -> None:
        with self.lock:
            self.events.setdefault(job_id, []).append((event, data))

    def since(self, row: sqlite3.Row, start: int) -> list[tuple[str, dict]]:
        """Events of job ``row`` from number ``start``; a job this server has not touched (one that ended before
        it started) gets the events its stored status implies."""
        with self.lock:
            if row["id"] not in self.events:
                self.events[row["id"]] = self._implied(row)
            return self.events[row["id"]][start:]

    @staticmethod
    def _implied(row: sqlite3.Row) -> list[tuple[str, dict]]:
        status, ended = row["status"], {"id": row["id"], "outputs": row["outputs"], "error": row["error"]}
        if status in ENDED:
            return [(status, ended)]
        return [("queued", {"id": row["id"]})] + ([("started", {"total": row["total"]})] if status == "running" else [])


def sse(number: int, event: str, data: dict) -> str:
    return f"id: {number}\nevent: {event}\ndata: {json.dumps(data)}\n\n"


# -- running jobs ---------------------------------------------------------------------------------------
class Service:
    """The queue, the worker threads and the pipelines they share. Nothing touches the disk before :meth:`start`."""

    def __init__(self, data: "str | Path", workers: int = 1, queue_limit: int = 64) -> None:
        self.data, self.workers, self.queue_limit = Path(data), workers, queue_limit
        self.events = EventLog()
        self.lock = threading.Lock()  # guards the dicts below
        self.tokens: dict[str, CancelToken] = {}  # running jobs' tokens
        self.cancelled: set[str] = set()  # running jobs a client cancelled (not the server stopping)
        self.progress: dict[str, float] = {}  # running jobs' items done, in fractions
        self.busy: set[str] = set()  # chains a worker is running
        self.chain_locks: dict[str, threading.Lock] = {}
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    @property
    def jobs_dir(self) -> Path:
        return self.data / "jobs"

    def start(self) -> None:
        self.store = JobStore(self.data / "jobs.sqlite")
        for job_id in self.store.requeue_unfinished():
            self.events.add(job_id, "queued", id=job_id)
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"loom-worker-{i + 1}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        """Stop the workers; a job they were running stops at its next step and is queued again for the next start."""
        self.stopping.set()
        self.wake.set()
        with self.lock:
            for token in self.tokens.values():
                token.cancel()
        for thread in self.threads:
            thread.join(timeout=30)

    # -- requests
    def submit(self, request: JobRequest) -> str | None:
        """Queue a checked request (seed fixed now, so that a rerun makes the same outputs); None if the queue is full."""
        from loom.api import pipeline_for

        spec = checked_spec(
            request.prompt_list(),
            request.count,
            request.generator,
            request.size,
            request.strength,
            edit=request.image is not None,
        )
        request.given(len(request.items()), pipeline_for(spec))  # the images, checked before the job is queued
        if request.seed is None:
            request = request.model_copy(update={"seed": item_seeds(None, 1)[0]})
        job_id = self.store.add(request, spec, self.queue_limit)
        if job_id is not None:
            self.events.add(job_id, "queued", id=job_id)
            self.wake.set()
        return job_id

    def status(self, row: sqlite3.Row) -> JobStatus:
        done = self.progress.get(row["id"], row["outputs"])
        return JobStatus(
            id=row["id"],
            status=row["status"],
            progress=1.0 if row["status"] == "finished" else round(done / max(row["total"], 1), 4),
            outputs=row["outputs"],
            total=row["total"],
            error=row["error"],
            request=JobRequest.model_validate_json(row["request"]),
        )

    def cancel(self, job_id: str) -> None:
        """Cancel one job: a queued one never starts; a running one stops at its next item or step."""
        if self.store.cancel_queued(job_id):
            row = self.store.get(job_id)
            self.events.add(job_id, "cancelled", id=job_id, outputs=row["outputs"] if row else 0)
            return
        with self.lock:
            token = self.tokens.get(job_id)
            if token is not None:
                self.cancelled.add(job_id)
                token.cancel()

    @contextmanager
    def chain_lock(self, spec_key: str) -> Iterator[None]:
        """Hold the lock of one chain: its components are not safe to call from two threads at once."""
        with self.lock:
            lock = self.chain_locks.setdefault(spec_key, threading.Lock())
        with lock:
            yield

    def generate_png(self, request: GenerateRequest) -> bytes:
        """The PNG ``loom generate PROMPT --seed S --generator G --size N -o out.png`` writes (the same writer)."""
        from loom.api import generate

        spec = checked_spec([request.prompt], 1, request.generator, request.size)
        with (
            tempfile.TemporaryDirectory(prefix="loom-serve-") as tmp,
            self.chain_lock(json.dumps(spec, sort_keys=True)),
        ):
            path = Path(tmp) / "out.png"
            generate(
                request.prompt,
                request.seed,
                generator=request.generator,
                size=request.size,
                output=path,
                progress=False,
            )
            return path.read_bytes()

    # -- workers
    def _work(self) -> None:
        while not self.stopping.is_set():
            with self.lock:
                row = self.store.claim(self.busy)
                if row is not None:
                    self.busy.add(row["spec"])
                    self.tokens[row["id"]] = CancelToken()
            if row is None:
                self.wake.wait(timeout=0.5)
                self.wake.clear()
                continue
            try:
                self._run(row)
            finally:
                with self.lock:
                    self.busy.discard(row["spec"])
                    self.tokens.pop(row["id"], None)
                    self.cancelled.discard(row["id"])
                    self.progress.pop(row["id"], None)
                self.wake.set()  # a job on this chain may be waiting

    def _run(self, row: sqlite3.Row) -> None:
        """Run one claimed job to its end, and tell its events, the store and its webhook how it ended."""
        job_id = row["id"]
        request = JobRequest.model_validate_json(row["request"])
        self.events.add(job_id, "started", id=job_id, total=row["total"])
        error = None
        try:
            self._make_outputs(row, request)
            status = "finished"
        except Cancelled:
            status = "queued" if self.stopping.is_set() and job_id not in self.cancelled else "cancelled"
        except Exception as err:  # a LoomError or a bug: this job fails, the server goes on
            if not isinstance(err, LoomError):
                log.exception("job %s failed", job_id)
            status, error = "failed", one_line(err)
        outputs = self.store.get(job_id)["outputs"]
        self.store.set(job_id, status=status, error=error)
        if status == "queued":
            return  # the server is stopping: the next start runs it again
        self.events.add(job_id, status, id=job_id, outputs=outputs, error=error)
        if request.webhook:
            notify(request.webhook, {"id": job_id, "status": status})

    def _make_outputs(self, row: sqlite3.Row, request: JobRequest) -> None:
        """Make the job's missing outputs a chunk at a time (as loom.generate does), each written as soon as made."""
        from loom.api import chunk_items, pipeline_for
        from loom.outputs import write

        job_id, prompts = row["id"], request.items()
        seeds = item_seeds(request.seed, len(prompts))
        folder = self.jobs_dir / job_id
        folder.mkdir(parents=True, exist_ok=True)
        for leftover in folder.glob(".*.tmp"):  # a killed writer's temporary file
            leftover.unlink(missing_ok=True)
        paths = [folder / output_name(i + 1) for i in range(len(prompts))]
        todo = [i for i, path in enumerate(paths) if not path.is_file()]  # a file with its final name is whole
        token = self.tokens[job_id]
        pipeline = pipeline_for(json.loads(row["spec"]))
        given = request.given(len(prompts), pipeline)
        with self.chain_lock(row["spec"]):
            token.check("before loading")
            pipeline.load(progress=False)
            size = chunk_items(pipeline, len(prompts))
            for start in range(0, len(todo), size):
                idx = todo[start : start + size]
                report = self._reporter(job_id, len(prompts) - len(todo) + start, len(idx), len(prompts))
                part = pipeline.run(
                    [prompts[i] for i in idx],
                    [seeds[i] for i in idx],
                    progress=report,
                    cancel=token,
                    **self._previews(job_id, request, idx),
                    **{name: data.take(idx) for name, data in given.items()},
                )
                for j, i in enumerate(idx):
                    write(part.output, j, paths[i], stable_record(part, j, i, len(prompts)))
                    made = len(prompts) - len(todo) + start + j + 1
                    self._item_written(job_id, i + 1, made, len(prompts))

    def _reporter(self, job_id: str, before: int, chunk: int, total: int):
        """A progress callback for one chunk that tells events at most every PROGRESS_EVERY_S."""
        last = [0.0]

        def report(done: float, of: float, note: str) -> None:
            items = before + chunk * done / max(of, 1e-9)
            with self.lock:
                self.progress[job_id] = items
            if time.monotonic() - last[0] >= PROGRESS_EVERY_S:
                last[0] = time.monotonic()
                self.events.add(job_id, "progress", done=round(items, 3), total=total)

        return report

    def _previews(self, job_id: str, request: JobRequest, idx: list[int]) -> dict:
        """``Pipeline.run``'s preview options for a job that asks for them (the chunk of outputs ``idx``): each preview
        is a progress event with the first item's image so far, as a PNG data URL."""
        if request.preview_every is None:
            return {}

        def preview(data: Any, items: list[int]) -> None:
            if isinstance(data, Image):
                done = self.progress.get(job_id, 0.0)
                image = png_data_url(data.take([0]).to_numpy()[0])  # the first item only, not the chunk
                self.events.add(
                    job_id,
                    "progress",
                    done=round(done, 3),
                    total=len(request.items()),
                    preview=image,
                    n=idx[items[0]] + 1,
                )

        return {"preview": preview, "preview_every": request.preview_every}

    def _item_written(self, job_id: str, n: int, outputs: int, total: int) -> None:
        """Output ``n`` is written: ``outputs`` of ``total`` are now."""
        self.store.set(job_id, outputs=outputs)
        with self.lock:
            self.progress[job_id] = float(outputs)
        self.events.add(job_id, "item", n=n, url=f"/v1/jobs/{job_id}/outputs/{n}")
        self.events.add(job_id, "progress", done=outputs, total=total)


def png_data_url(pixels: Any) -> str:
    """An H×W×3 uint8 image as a ``data:image/png;base64,…`` URL (a preview, small: no record)."""
    import base64
    import io

    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def stable_record(result: Any, index: int, item: int, batch_size: int) -> dict:
    """Output ``index``'s record as ``loom.generate`` writes it (item ``item`` of ``batch_size``), less its timings
    and creation time: those depend on the run, and a job's output must be the same bytes when it is made again."""
    from loom.batch_items import item_record

    return {**item_record(result, index), "item": item, "batch_size": batch_size}


def notify(url: str, payload: dict) -> None:
    """POST ``payload`` as JSON to ``url``; best effort: a failure is logged, never raised."""
    body = json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
            response.read(1024)
    except Exception as err:  # the job's outcome stands whatever the receiver does
        log.warning("webhook %s for job %s failed: %s", url, payload.get("id"), one_line(err))


# -- the HTTP app ---------------------------------------------------------------------------------------
class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 before any handler reads it (a stated
    Content-Length at once; a chunked body once it passes the limit)."""

    def __init__(self, app: Any, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        stated = dict(scope["headers"]).get(b"content-length")
        if stated is not None and stated.isdigit() and int(stated) > self.limit:
            return await self._too_large(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            body, more = body + message.get("body", b""), message.get("more_body", False)
            if len(body) > self.limit:
                return await self._too_large(scope, receive, send)
        replayed = [False]

        async def replay() -> dict:
            if replayed[0]:
                return await receive()
            replayed[0] = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: dict, receive: Any, send: Any) -> None:
        response = JSONResponse({"detail": f"request body over {self.limit:,} bytes"}, status_code=413)
        await response(scope, receive, send)


def bearer_check(token: str | None):
    """A dependency: with a token, every request must send ``Authorization: Bearer <token>`` (401 otherwise)."""
    scheme = HTTPBearer(auto_error=False, description="Needed when the server was started with --token.")

    def check(credentials: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:
        given = credentials.credentials if credentials else ""
        if token is not None and not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401, "missing or wrong token: send Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"}
            )

    return check


def _job_routes(service: Service, token: str | None) -> APIRouter:
    answers: dict[int | str, dict[str, Any]] = {401: {"model": Problem}, 422: {"model": Problem}}
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(bearer_check(token))], responses=answers)

    def job_row(job_id: str) -> sqlite3.Row:
        row = service.store.get(job_id)
        if row is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return row

    @v1.post(
        "/jobs",
        status_code=201,
        response_model=JobCreated,
        responses={413: {"model": Problem}, 429: {"model": Problem}},
    )
    def create_job(request: JobRequest) -> JobCreated:
        """Queue a job. Refused with 422 (one line) when it is over Loom's limits or names an unknown generator,
        with 429 (and Retry-After) when the queue is full."""
        if (request.prompt is None) == (request.prompts is None):
            raise HTTPException(422, "give prompt or prompts (one of them)")
        try:
            job_id = service.submit(request)
        except LoomError as err:
            raise HTTPException(422, one_line(err)) from None
        if job_id is None:
            raise HTTPException(
                429,
                f"the queue is full ({service.queue_limit} jobs): try again later",
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        return JobCreated(id=job_id, status="queued")

    @v1.get("/jobs/{job_id}", response_model=JobStatus, responses={404: {"model": Problem}})
    def get_job(job_id: str) -> JobStatus:
        return service.status(job_row(job_id))

    @v1.delete("/jobs/{job_id}", response_model=JobStatus, responses={404: {"model": Problem}})
    def cancel_job(job_id: str) -> JobStatus:
        """Cancel this job alone: a queued one never starts; a running one stops at its next item or denoising step
        (its status turns ``cancelled`` then; watch /events). Its finished outputs stay."""
        job_row(job_id)
        service.cancel(job_id)
        return service.status(job_row(job_id))

    @v1.get(
        "/jobs/{job_id}/events",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, 404: {"model": Problem}},
    )
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        """Server-Sent Events: queued, started, progress {done, total}, item {n, url}, then finished, failed or
        cancelled, after which the stream ends. Resumes after the ``Last-Event-ID`` header's event."""
        row = job_row(job_id)
        last = request.headers.get("last-event-id", "")
        start = int(last) + 1 if last.isdigit() else 0
        return StreamingResponse(
            _stream(service, row, start), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @v1.get(
        "/jobs/{job_id}/outputs/{n}",
        response_class=FileResponse,
        responses={200: {"content": {"image/png": {}}}, 404: {"model": Problem}},
    )
    def job_output(job_id: str, n: int) -> FileResponse:
        """Output ``n`` (from 1) as written: a PNG with its provenance record inside."""
        row = job_row(job_id)
        # the path is made from the stored id and a number, never from text the client sent
        path = service.jobs_dir / row["id"] / output_name(n)
        if not 1 <= n <= row["total"] or not path.is_file():
            raise HTTPException(404, f"job {job_id!r} has no output {n} (yet)")
        return FileResponse(
            path, media_type="image/png", filename=f"{row['id']}-{output_name(n)}", content_disposition_type="inline"
        )

    @v1.post(
        "/generate", response_class=Response, responses={200: {"content": {"image/png": {}}}, 413: {"model": Problem}}
    )
    def generate_now(request: GenerateRequest) -> Response:
        """One image while the client waits: the PNG ``loom generate PROMPT --seed S --generator G --size N`` writes."""
        try:
            return Response(service.generate_png(request), media_type="image/png")
        except LoomError as err:
            raise HTTPException(422, one_line(err)) from None

    @v1.get("/components", response_model=list[ComponentInfo])
    def components() -> list[ComponentInfo]:
        """Every registered component: its kind, data types and config JSON Schema."""
        return [
            ComponentInfo(
                name=e.name,
                qualified_name=e.qualified_name,
                plugin=e.plugin,
                kind=e.cls.role,
                input_type=e.cls.input_type.kind,
                output_type=e.cls.output_type.kind,
                description=e.cls.description,
                config_schema=e.cls.Config.model_json_schema(),
            )
            for e in get_registry().components()
        ]

    return v1


async def _stream(service: Service, row: sqlite3.Row, start: int):
    """A job's events as SSE text from event number ``start``, ending after the last one."""
    number = start
    while True:
        for event, data in service.events.since(row, number):
            yield sse(number, event, data)
            number += 1
            if event in ENDED:
                return
        await asyncio.sleep(0.1)  # workers are threads: checking often is simpler than waking the loop from them


def _page_routes() -> APIRouter:
    page = APIRouter(include_in_schema=False)

    @page.get("/")
    def index() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")

    @page.get("/app.js")
    def script() -> FileResponse:
        return FileResponse(WEB / "app.js", media_type="text/javascript")

    return page


async def _one_line_422(request: Request, err: RequestValidationError) -> JSONResponse:
    """A malformed request body as one line, as every other refusal ({"detail": "..."})."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"][1:]) or "body"
    return JSONResponse({"detail": f"{where}: {first['msg']}"}, status_code=422)


def create_app(
    data: "str | Path" = "loom-serve", token: str | None = None, workers: int = 1, queue_limit: int = 64
) -> FastAPI:
    """The service's app; its queue and outputs live in ``data``, created when the app starts."""
    from loom import __version__

    service = Service(data, workers, queue_limit)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        yield
        service.stop()

    app = FastAPI(
        title="Loom",
        version=__version__,
        description="Generation jobs on Loom chains: queue, watch, cancel, download. See docs/serve.md.",
        lifespan=lifespan,
        # FastAPI's /docs and /redoc pages load their scripts from a CDN: Loom serves nothing from another host
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.add_middleware(BodyLimit)
    app.add_exception_handler(RequestValidationError, _one_line_422)
    app.include_router(_job_routes(service, token))
    app.include_router(_page_routes())
    return app


def openapi_text() -> str:
    """The API's OpenAPI schema as docs/openapi.json holds it (``python -m loom.serve > docs/openapi.json``)."""
    return json.dumps(create_app().openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(openapi_text(), end="")
