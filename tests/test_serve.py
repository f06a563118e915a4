"""`loom serve`: each test starts the server itself on 127.0.0.1 (a free port, a tmp --data) and stops it.

Outputs are compared with what `loom.generate` writes: the same pixels and the same record, less the timings and
creation time that `loom.generate` records (a job's record leaves them out, so that remaking an output after a
restart gives the same bytes; two jobs with one request are compared byte for byte)."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")

from loom.testing.server import LoomServer as Server  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a small red circle in the top left on a blue background", "a large green square on a white background"]
#: What a job's record leaves out of the record loom.generate writes.
RUN_DEPENDENT = ("timings", "created")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the tests that need no options of their own (two workers)."""
    running = Server(tmp_path_factory.mktemp("serve") / "data", "--workers", "2").start()
    try:
        yield running
    finally:
        running.stop()


# -- what loom.generate makes ------------------------------------------------------------------------
def reference(tmp_path: Path, prompts, seed: int, count: int = 1, generator: str = "vae") -> list[Path]:
    """The files loom.generate writes for this request (in this process: pipelines are cached)."""
    import loom
    from loom.api import output_paths

    out = tmp_path / f"ref-{generator}-{seed}-{count}.png"
    result = loom.generate(prompts, seed, generator=generator, size=64, output=out, count=count, progress=False)
    return output_paths(out, len(result))


def assert_same_output(made: bytes, expected: Path, tmp_path: Path) -> None:
    """``made`` has ``expected``'s pixels and record, but for the record's timings and creation time."""
    import numpy as np
    from PIL import Image

    from loom.outputs import read_record

    assert made[:8] == b"\x89PNG\r\n\x1a\n"
    path = tmp_path / "made.png"
    path.write_bytes(made)
    with Image.open(io.BytesIO(made)) as a, Image.open(expected) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b)), "the pixels differ"
    got, want = read_record(path), read_record(expected)
    for key in RUN_DEPENDENT:
        want.pop(key, None)
        got.pop(key, None)
    assert got == want


# -- tests ------------------------------------------------------------------------------------------------
class Webhook:
    """An HTTP server on 127.0.0.1 that keeps the JSON bodies POSTed to it."""

    def __enter__(self) -> "Webhook":
        import http.server
        import threading

        self.received: list[dict] = []
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:  # quiet
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/done"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.slow
def test_job_streams_events_to_finished_and_serves_loom_generates_output(server, tmp_path):
    with Webhook() as hook:
        job_id = server.submit(prompt=PROMPTS[0], seed=3, webhook=hook.url)
        events = server.events(job_id)
        deadline = time.monotonic() + 10
        while not hook.received and time.monotonic() < deadline:
            time.sleep(0.1)
    assert hook.received == [{"id": job_id, "status": "finished"}]
    names = [name for name, _ in events]
    assert names[:2] == ["queued", "started"] and names[-1] == "finished"
    assert ("item", {"n": 1, "url": f"/v1/jobs/{job_id}/outputs/1"}) in events
    assert any(name == "progress" and data == {"done": 1, "total": 1} for name, data in events)
    assert not any("preview" in data for _, data in events), "previews only when asked for"
    job = server.job(job_id)
    assert (job["status"], job["progress"], job["outputs"], job["total"], job["error"]) == ("finished", 1.0, 1, 1, None)
    made = server.output(job_id, 1)
    assert_same_output(made, reference(tmp_path, PROMPTS[0], 3)[0], tmp_path)
    # the same request again: the same bytes (nothing of the run is recorded)
    again = server.submit(prompt=PROMPTS[0], seed=3)
    server.wait(again, lambda j: j["status"] == "finished")
    assert server.output(again, 1) == made
    # a finished job's stream (read again) says how it ended and ends
    assert server.events(job_id)[-1][0] == "finished"
    for missing in (f"/v1/jobs/{job_id}/outputs/2", f"/v1/jobs/{job_id}/outputs/0", "/v1/jobs/nope/outputs/1"):
        assert server.client.get(missing).status_code == 404
    assert server.client.get("/v1/jobs/nope").status_code == 404


@pytest.mark.slow
def test_progress_events_carry_previews_when_asked_and_the_output_is_unchanged(server, tmp_path):
    import base64

    import numpy as np
    from PIL import Image

    job_id = server.submit(prompt=PROMPTS[1], seed=4, generator="diffusion", preview_every=0.1)
    events = server.events(job_id)
    previews = [data for name, data in events if name == "progress" and "preview" in data]
    assert events[-1][0] == "finished" and len(previews) >= 2, events
    head = "data:image/png;base64,"
    for data in previews:
        assert data["n"] == 1 and data["preview"].startswith(head) and 0 <= data["done"] < 1
        with Image.open(io.BytesIO(base64.b64decode(data["preview"][len(head) :]))) as image:
            assert image.size == (64, 64) and np.asarray(image).std() > 0
    (expected,) = reference(tmp_path, PROMPTS[1], 4, generator="diffusion")
    assert_same_output(server.output(job_id, 1), expected, tmp_path)


@pytest.mark.slow
def test_a_job_starts_from_an_image_as_loom_generate_does(server, tmp_path):
    import base64

    from PIL import Image as PILImage

    import loom

    start = tmp_path / "start.png"
    loom.generate(PROMPTS[0], 1, generator="vae", size=64, output=start, progress=False)
    encoded = "data:image/png;base64," + base64.b64encode(start.read_bytes()).decode()
    job_id = server.submit(prompt=PROMPTS[1], seed=9, count=2, generator="diffusion", image=encoded, strength=0.6)
    assert server.events(job_id)[-1][0] == "finished"
    out = tmp_path / "ref-edit.png"
    loom.generate(
        PROMPTS[1], 9, generator="diffusion", size=64, image=start, strength=0.6, count=2, output=out, progress=False
    )
    for n in (1, 2):
        assert_same_output(server.output(job_id, n), out.with_name(f"ref-edit-{n}.png"), tmp_path)
    # refused before anything is queued, in one line; a small file of too many pixels before it is decoded
    huge = io.BytesIO()
    PILImage.new("1", (5000, 5000)).save(huge, format="PNG")
    for body, says in (
        ({"image": base64.b64encode(huge.getvalue()).decode()}, "(5000 × 5000)"),
        ({"image": "bm90IGFuIGltYWdl"}, "'the image sent' is not an image file Loom can read"),
        ({"image": "not base64!"}, "image is not base64"),
        ({"image": encoded, "generator": "vae"}, "no step of this chain takes 'image'"),
        ({"strength": 0.5}, "no step of this chain takes strength"),
    ):
        response = server.client.post("/v1/jobs", json={"prompt": PROMPTS[0], "size": 64, **body})
        assert response.status_code == 422 and says in response.json()["detail"], response.text
        assert "\n" not in response.json()["detail"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_concurrent_clients_get_every_output_exact(server, tmp_path):
    """A small load test (bench/serve.py --jobs 200 --clients 20 is the big one): 16 jobs from 8 clients at once."""
    from loom.testing.server import run_jobs

    prompts = [PROMPTS[i % 2] for i in range(16)]  # output i gets seed 100 + i, as loom.generate's
    runs = run_jobs(server, [{"prompt": p, "seed": 100 + i} for i, p in enumerate(prompts)], clients=8)
    assert [run.error for run in runs] == [None] * len(prompts)
    import numpy as np
    from PIL import Image

    # one loom.generate call for all 16: each job's pixels are those of its item there (batch invariance); the
    # records differ in batch_size and item only, and the other tests compare records
    expected = reference(tmp_path, prompts, 100)
    for run, path in zip(runs, expected):
        assert 0 < run.first_progress_s <= run.result_s
        with Image.open(io.BytesIO(run.png)) as made, Image.open(path) as want:
            assert np.array_equal(np.asarray(made), np.asarray(want))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_delete_stops_a_running_job_alone(server, tmp_path):
    many = server.submit(prompts=PROMPTS, count=100, seed=10)  # 200 items
    other = server.submit(prompts=PROMPTS, count=1, seed=50)
    queued = server.submit(prompt=PROMPTS[0], seed=70)
    server.wait(many, lambda j: j["status"] == "running" and j["outputs"] >= 1)
    # a queued job cancelled never starts
    assert server.client.delete(f"/v1/jobs/{queued}").json()["status"] == "cancelled"
    server.client.delete(f"/v1/jobs/{many}").raise_for_status()
    stopped = server.wait(many, lambda j: j["status"] == "cancelled", timeout=60)
    assert 1 <= stopped["outputs"] < 200
    assert server.events(many)[-1][0] == "cancelled"
    kept = server.output(many, 1)  # its finished items stay
    assert kept[:8] == b"\x89PNG\r\n\x1a\n"
    done = server.wait(other, lambda j: j["status"] in ("finished", "failed", "cancelled"))
    assert done["status"] == "finished" and done["outputs"] == 2
    for n, expected in enumerate(reference(tmp_path, PROMPTS, 50), start=1):
        assert_same_output(server.output(other, n), expected, tmp_path)
    assert server.job(queued)["status"] == "cancelled" and server.job(queued)["outputs"] == 0
    assert [name for name, _ in server.events(queued)] == ["queued", "cancelled"]
    time.sleep(1)
    assert server.job(many)["outputs"] == stopped["outputs"]  # nothing more was made


@pytest.mark.slow
def test_refusals_name_the_problem_in_one_line(server):
    post = lambda body: server.client.post("/v1/jobs", json=body)  # noqa: E731
    too_many = post({"prompts": PROMPTS, "count": 6000})
    assert too_many.status_code == 422
    assert "12,000" in too_many.json()["detail"] and "items" in too_many.json()["detail"]
    unknown = post({"prompt": "a red circle", "generator": "no-such-generator"})
    assert unknown.status_code == 422 and "'no-such-generator'" in unknown.json()["detail"]
    not_a_generator = post({"prompt": "a red circle", "generator": "resize"})
    assert not_a_generator.status_code == 422 and "not a generator" in not_a_generator.json()["detail"]
    for body in ({"prompt": "a", "prompts": ["b"]}, {}, {"prompt": "  "}, {"prompt": "a", "count": 0}):
        response = post(body)
        assert response.status_code == 422, body
        assert isinstance(response.json()["detail"], str) and "\n" not in response.json()["detail"]
    assert post({"prompt": "a", "size": 100_000}).status_code == 422  # pixels over the limit
    huge = server.client.post(
        "/v1/jobs", content=b'{"prompt": "' + b"x" * 1_100_000 + b'"}', headers={"content-type": "application/json"}
    )
    assert huge.status_code == 413


@pytest.mark.slow
def test_generate_endpoint_gives_what_loom_generate_writes(server, tmp_path):
    from click.testing import CliRunner

    from loom.cli import main

    response = server.client.post("/v1/generate", json={"prompt": PROMPTS[1], "seed": 11, "size": 64})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    out = tmp_path / "out.png"
    args = ["generate", PROMPTS[1], "--seed", "11", "--generator", "vae", "--size", "64", "-o", str(out), "-q"]
    ran = CliRunner().invoke(main, args)
    assert ran.exit_code == 0, ran.output
    assert_same_output(response.content, out, tmp_path)
    assert server.client.post("/v1/generate", json={"prompt": "a", "generator": "nope"}).status_code == 422


@pytest.mark.slow
def test_components_and_committed_openapi(server):
    components = server.client.get("/v1/components").json()
    vae = next(c for c in components if c["name"] == "vae")
    assert (vae["kind"], vae["input_type"], vae["output_type"]) == ("generator", "Embedding", "Image")
    assert "temperature" in vae["config_schema"]["properties"]
    assert {"encoder", "generator", "postprocessor"} <= {c["kind"] for c in components}
    served = server.client.get("/openapi.json").json()
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    assert committed == served, (
        "docs/openapi.json is stale: regenerate it with `python -m loom.serve > docs/openapi.json`"
    )


@pytest.mark.slow
def test_page_is_served_and_names_no_other_host(server):
    for path, kind in (("/", "text/html"), ("/app.js", "text/javascript")):
        response = server.client.get(path)
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
        hosts = re.findall(r"https?://([^/\"'\s)]+)", response.text)
        assert all(h.split(":")[0] in ("127.0.0.1", "localhost") for h in hosts), hosts
    assert "/app.js" in server.client.get("/").text


@pytest.mark.slow
def test_token_and_queue_limit(tmp_path):
    guarded = Server(tmp_path / "data", "--queue-limit", "1", "--token", "s3cret", token="s3cret").start()
    try:
        assert httpx.get(guarded.url + "/v1/components", trust_env=False).status_code == 401
        wrong = httpx.get(guarded.url + "/v1/components", headers={"Authorization": "Bearer nope"}, trust_env=False)
        assert wrong.status_code == 401
        assert httpx.post(guarded.url + "/v1/jobs", json={"prompt": "a"}, trust_env=False).status_code == 401
        long_job = guarded.submit(prompts=PROMPTS, count=100, seed=1)
        full = guarded.client.post("/v1/jobs", json={"prompt": "a red circle", "size": 64})
        assert full.status_code == 429 and int(full.headers["retry-after"]) > 0
        guarded.client.delete(f"/v1/jobs/{long_job}").raise_for_status()
        guarded.wait(long_job, lambda j: j["status"] == "cancelled", timeout=120)
        assert guarded.client.post("/v1/jobs", json={"prompt": "a red circle", "size": 64}).status_code == 201
    finally:
        guarded.stop()


def test_cli_refuses_a_public_host_without_a_token():
    from click.testing import CliRunner

    from loom.cli import main

    ran = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0"], env={"LOOM_SERVE_TOKEN": None})
    assert ran.exit_code != 0
    assert "--token" in ran.output and len(ran.output.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_killed_server_finishes_its_job_on_restart(tmp_path):
    data = tmp_path / "data"
    first = Server(data).start()
    try:
        job_id = first.submit(prompts=PROMPTS, count=30, seed=20)  # 60 items
        first.wait(job_id, lambda j: j["outputs"] >= 2)
    finally:
        first.stop(hard=True)  # kill -9, mid-job
    folder = data / "jobs" / job_id
    assert len(list(folder.glob("*.png"))) < 60
    second = Server(data).start()
    try:
        job = second.wait(job_id, lambda j: j["status"] in ("finished", "failed", "cancelled"))
        assert (job["status"], job["outputs"]) == ("finished", 60), job
        for n, expected in enumerate(reference(tmp_path, PROMPTS, 20, count=30), start=1):
            assert_same_output(second.output(job_id, n), expected, tmp_path)
    finally:
        second.stop()
    assert sorted(p.name for p in folder.iterdir()) == [f"{n:04d}.png" for n in range(1, 61)]  # no leftovers
