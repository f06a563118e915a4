"""Batch jobs on the ray engine, against the local engine: the same bytes, a worker killed mid-run,
a cluster joined by address. Every Ray here runs on 127.0.0.1 with 2 CPUs, and each test stops the
Ray processes it started (and checks that none is left)."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

# Loopback only, no auth token written to ~/.ray, no usage stats, no Ray progress bars (see
# shared/ENVIRONMENT.md); set before Ray is imported or started.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"

ray = pytest.importorskip("ray")

from click.testing import CliRunner  # noqa: E402

from loom.batch_jobs import batch, read_manifest  # noqa: E402
from loom.cli import main  # noqa: E402
from loom.plugins.shapes import OBJECT_COLOURS  # noqa: E402
from loom.plugins.shapes import SHAPES as SHAPE_NAMES  # noqa: E402

pytestmark = pytest.mark.slow

COLOURS, SHAPES = OBJECT_COLOURS, SHAPE_NAMES  # the Shapes world's own words, not copies of them
PROMPTS = [
    f"a {'small' if k % 2 else 'large'} {COLOURS[k % len(COLOURS)]} {SHAPES[k % len(SHAPES)]} in the "
    f"{['top left', 'center', 'bottom right'][k % 3]} on a {['black', 'gray', 'white'][(k // 3) % 3]} background"
    for k in range(36)
]


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).glob("*.png"))}


def ray_processes() -> set[int]:
    """Live Ray processes on this machine (Ray's binaries and workers, from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            line = command_line(int(entry))
            if line.startswith("ray::") or "/site-packages/ray/" in line or line.split(" ")[0].endswith("/ray"):
                found.add(int(entry))
    return found


def parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def ours(pid: int) -> bool:
    """Started by this test process: a descendant, or an orphan of one (re-parented to init)."""
    while pid > 1:
        pid = parent(pid)
        if pid == os.getpid():
            return True
    return pid == 1


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


@pytest.fixture(autouse=True)
def no_ray_left_behind():
    """Every Ray process a test starts is gone when it ends: waited for (a worker busy importing
    notices late that its cluster stopped), then killed, and the test fails."""
    before = ray_processes()
    yield
    deadline = time.time() + 60
    while (left := {p for p in ray_processes() - before if ours(p)}) and time.time() < deadline:
        time.sleep(0.5)
    lines = {pid: command_line(pid)[:80] for pid in left}
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left, f"Ray processes still running after the test: {lines}"


def write_jsonl(path: Path, prompts, extra=()) -> Path:
    lines = [json.dumps({"prompt": p, "seed": k, "id": f"{k + 1:06d}"}) for k, p in enumerate(prompts)]
    path.write_text("\n".join(lines + [json.dumps(e) for e in extra]) + "\n")
    return path


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory):
    """The 36 prompts on the local engine: (prompts file, output folder)."""
    root = tmp_path_factory.mktemp("ray-reference")
    prompts = write_jsonl(root / "prompts.jsonl", PROMPTS)
    report = batch("vae", prompts, root / "out", batch_size=36, progress=False)
    assert report.made == 36
    return prompts, root / "out"


def listening() -> set[str]:
    """Local addresses of listening TCP sockets on this machine (hex, from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                found.add(fields[1])
    return found


LOOPBACK = ("0100007F:", "0000000000000000FFFF00000100007F:", "00000000000000000000000001000000:")


def test_ray_engine_starts_own_cluster_on_loopback_gives_local_bytes_and_stops_it(
    local_reference, tmp_path, monkeypatch
):
    _, ref_dir = local_reference
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS[:20], extra=[{"prompt": " ", "id": "empty"}])
    assert not ray.is_initialized()
    # As in a user's shell: nothing tells Ray to stay on loopback; the job itself must.
    from ray._private import ray_constants

    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", True)
    before, seen, stop = listening(), set(), threading.Event()

    def watch():
        while not stop.is_set():
            seen.update(listening())
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        report = batch("vae", prompts, tmp_path / "out", engine="ray", batch_size=7, workers=2, progress=False)
    finally:
        stop.set()
        watcher.join()
    opened = seen - before
    assert opened, "the job's Ray listened on no port: the check saw nothing"
    assert all(a.startswith(LOOPBACK) for a in opened), f"Ray listened beyond 127.0.0.1: {sorted(opened)}"
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ and ray_constants.ENABLE_RAY_CLUSTER is True
    assert not ray.is_initialized(), "the job's own cluster is stopped after the job"
    assert (report.made, report.failed, report.skipped) == (20, 1, 0)
    ref = digests(ref_dir)
    assert digests(tmp_path / "out") == {n: ref[n] for n in list(ref)[:20]}, "ray and local outputs differ"
    rows = read_manifest(report.manifest)
    assert len(rows) == 21 and rows[-1]["status"] == "failed" and "is empty" in rows[-1]["error"]
    workers = {r["worker"] for r in rows if r["status"] == "ok"}
    assert workers and all(not w.endswith(f":{os.getpid()}") for w in workers), "outputs are written by workers"
    assert all(r["timings"]["done_s"] > 0 for r in rows if r["status"] == "ok")


@pytest.fixture
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray
    finally:
        ray.shutdown()


def test_worker_killed_mid_run_job_completes_without_duplicates_or_gaps(local_reference, local_ray, tmp_path):
    prompts, ref_dir = local_reference
    out = tmp_path / "out"
    killed = {}

    def kill_a_worker():
        deadline = time.time() + 300
        while time.time() < deadline and len(list(out.glob("*.png"))) < 2:
            time.sleep(0.02)
        for pid in sorted(ray_processes()):
            if "RayItemWriter" in command_line(pid) and ours(pid):
                killed["outputs"] = len(list(out.glob("*.png")))
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                return

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    report = batch("vae", prompts, out, engine="ray", batch_size=1, workers=2, progress=False)
    killer.join(timeout=5)
    assert "pid" in killed, "no worker was found to kill"
    assert killed["outputs"] < 36, "the kill landed after the job had finished"
    assert not Path(f"/proc/{killed['pid']}").exists()
    assert (report.made, report.failed) == (36, 0)
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{k:06d}.png" for k in range(1, 37)] + ["manifest.jsonl"])
    assert digests(out) == digests(ref_dir)
    rows = read_manifest(report.manifest)
    assert [r["id"] for r in rows] == [f"{k:06d}" for k in range(1, 37)] and {r["status"] for r in rows} == {"ok"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_joins_a_running_cluster_by_address(local_reference, tmp_path):
    _, ref_dir = local_reference
    port = free_port()
    ray_cmd = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen(
        [
            ray_cmd,
            "start",
            "--head",
            "--block",
            "--port",
            str(port),
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            "2",
            "--include-dashboard",
            "false",
            "--disable-usage-stats",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS[:6])
        res = CliRunner().invoke(
            main,
            [
                "batch",
                "vae",
                "--prompts",
                str(prompts),
                "-o",
                str(tmp_path / "out"),
                "--engine",
                "ray",
                "--address",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "-q",
            ],
        )
        assert res.exit_code == 0, res.output
        assert "6 items: 6 made, 0 failed, 0 skipped (ray" in res.output
        assert not ray.is_initialized(), "the driver disconnects after the job"
        assert head.poll() is None, "a cluster joined by address keeps running after the job"
        ref = digests(ref_dir)
        assert digests(tmp_path / "out") == {n: ref[n] for n in list(ref)[:6]}
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` stops its cluster on SIGTERM
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        # `ray start` notes its cluster for later `ray.init()` calls; that cluster is gone now
        current = Path("/tmp/ray/ray_current_cluster")
        if current.is_file() and current.read_text().strip() == f"127.0.0.1:{port}":
            current.unlink()
