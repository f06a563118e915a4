"""A ``loom serve`` of your own, for tests and benchmarks: started on a free port of 127.0.0.1, stopped by you.

    from loom.testing.server import LoomServer

    with LoomServer(tmp_path / "data", "--workers", "2") as server:
        job = server.submit(prompt="a red circle", seed=3)
        server.wait(job, lambda j: j["status"] == "finished")
        png = server.output(job, 1)

Talks HTTP through httpx (``pip install httpx``; Loom's test extra has it). The server's own log goes to a file
beside ``data`` (``<data>-<port>.log``), quoted when it fails to start.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import httpx

#: Seconds a server may take to answer its first request (it imports torch and the plugins).
START_TIMEOUT_S = 90


class ServerError(RuntimeError):
    """The server did not start, or answered a call with an unexpected status."""


class LoomServer:
    """``loom serve`` in a subprocess on a free port of 127.0.0.1 with ``--data data`` and further ``options``."""

    def __init__(self, data: "str | Path", *options: str, token: str | None = None) -> None:
        self.data, self.options, self.token = Path(data), options, token
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "LoomServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> "LoomServer":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.data.with_name(self.data.name + f"-{self.port}.log")
        cmd = [sys.executable, "-m", "loom.cli", "serve", "--port", str(self.port), "--data", str(self.data)]
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([*cmd, *self.options], env=env, stdout=out, stderr=subprocess.STDOUT)
        self.client = self.new_client()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"the server exited:\n{self.log_tail()}")
            try:
                if self.client.get("/").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise ServerError(f"the server did not answer in {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def new_client(self) -> httpx.Client:
        """A client of this server (one per thread when several call at once), with the token if there is one."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120, trust_env=False)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self, hard: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with ``hard``) and wait for it."""
        if self.proc is None:
            return
        self.client.close()
        if hard:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    # -- calls
    def submit(self, client: httpx.Client | None = None, **body: Any) -> str:
        """Queue a job (``size`` 64 unless given); its id."""
        response = (client or self.client).post("/v1/jobs", json={"size": 64, **body})
        if response.status_code != 201:
            raise ServerError(f"POST /v1/jobs: {response.status_code} {response.text}")
        return response.json()["id"]

    def job(self, job_id: str) -> dict:
        return self.client.get(f"/v1/jobs/{job_id}").raise_for_status().json()

    def wait(self, job_id: str, until: Callable[[dict], bool], timeout: float = 240) -> dict:
        """The job's status once ``until(status)`` holds (polled every 0.2 s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if until(job):
                return job
            time.sleep(0.2)
        raise ServerError(f"job {job_id} is still {job}")

    def events(self, job_id: str, client: httpx.Client | None = None) -> list[tuple[str, dict]]:
        """Every event of the job, to the stream's end."""
        return [(name, data) for name, data, _ in self.timed_events(job_id, client)]

    def timed_events(self, job_id: str, client: httpx.Client | None = None) -> list[tuple[str, dict, float]]:
        """Every event of the job with the ``time.perf_counter()`` it arrived at, to the stream's end."""
        found, event = [], None
        with (client or self.client).stream("GET", f"/v1/jobs/{job_id}/events") as response:
            if not response.headers["content-type"].startswith("text/event-stream"):
                raise ServerError(f"GET /v1/jobs/{job_id}/events: {response.headers['content-type']}")
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[len("event: ") :]
                elif line.startswith("data: "):
                    found.append((event, json.loads(line[len("data: ") :]), time.perf_counter()))
        return found

    def output(self, job_id: str, n: int, client: httpx.Client | None = None) -> bytes:
        """Output ``n`` (from 1) of the job: the PNG's bytes."""
        response = (client or self.client).get(f"/v1/jobs/{job_id}/outputs/{n}")
        if response.status_code != 200 or response.headers["content-type"] != "image/png":
            raise ServerError(f"output {n} of job {job_id}: {response.status_code} {response.text[:200]}")
        return response.content


@dataclass
class JobRun:
    """One job of :func:`run_jobs`: seconds from its POST to its first ``progress`` event and to its first PNG
    fetched, the PNG, or the error that stopped it."""

    body: dict
    first_progress_s: float | None = None
    result_s: float | None = None
    png: bytes | None = None
    error: str | None = None


def run_jobs(server: LoomServer, bodies: list[dict], clients: int) -> list[JobRun]:
    """Each body as one job, from ``clients`` threads at once (each with its own HTTP client, taking every
    ``clients``-th body): submitted, followed on its event stream to its end, its first output fetched."""
    runs = [JobRun(body) for body in bodies]

    def client_work(k: int) -> None:
        with server.new_client() as client:
            for run in runs[k::clients]:
                start = time.perf_counter()
                try:
                    job_id = server.submit(client, **run.body)
                    events = server.timed_events(job_id, client)
                    if events[-1][0] != "finished":
                        run.error = f"{events[-1][0]}: {events[-1][1]}"
                        continue
                    run.first_progress_s = next(t for name, _, t in events if name == "progress") - start
                    run.png = server.output(job_id, 1, client)
                    run.result_s = time.perf_counter() - start
                except Exception as err:  # kept with its job: the caller reports every failure
                    run.error = f"{type(err).__name__}: {err}"

    threads = [threading.Thread(target=client_work, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return runs
