"""The ``ray`` engine of batch jobs: the same items, run by a pool of Ray Data actors.

Each actor loads the chain once and writes its outputs itself (atomically, to the job's folder),
so outputs appear as they are made and only a small row per item travels back to the driver; no
image waits in the object store. Ray restarts an actor that dies and retries its batch on the new
one: a retried item is written again to the same name with the same bytes, so the job ends with
no duplicate and no missing output, and the driver removes the temporary file a killed worker left.

Ray is an optional extra (``pip install 'loom[ray]'``) and is imported only when a job runs here.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Sequence

from loom.batch_items import Item, ItemRunner, manifest_row
from loom.core.errors import InputError, LoomError

#: What to run when Ray is missing.
INSTALL_HINT = "pip install 'loom[ray]'"


def require_ray():
    """The ``ray`` module with Ray Data, or an InputError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise InputError(f"the ray engine needs Ray Data, which is not installed ({err}): {INSTALL_HINT}") from None
    return ray


class RayItemWriter:
    """A Ray Data actor: loads the chain once, then makes and writes each batch of items it is given."""

    def __init__(self, spec: dict, out_dir: str, started: float, threads: int):
        import torch

        torch.set_num_threads(max(1, threads))
        try:  # one loading bar per worker, interleaved in the driver's terminal, says nothing useful
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
        except ImportError:
            pass
        self.runner = ItemRunner(spec, Path(out_dir), started=started).load()

    def __call__(self, batch: dict) -> dict:
        columns = zip(batch["id"], batch["prompt"], batch["seed"], batch["params"], batch["given"])
        items = [
            Item(str(i), str(p), int(s), json.loads(str(q)) if q else None, json.loads(str(g)) if g else None)
            for i, p, s, q, g in columns
        ]
        rows = self.runner.run(items)
        timings = [r["timings"] or {} for r in rows]
        return {
            "id": [r["id"] for r in rows],
            "status": [r["status"] for r in rows],
            "output": [r["output"] or "" for r in rows],
            "error": [r["error"] or "" for r in rows],
            "run_s": [float(t.get("run_s", -1.0)) for t in timings],
            "write_s": [float(t.get("write_s", -1.0)) for t in timings],
            "done_s": [float(t.get("done_s", -1.0)) for t in timings],
            "worker": [r["worker"] or "" for r in rows],
        }


def run_on_ray(job, on_rows) -> None:
    """Run a batch job's items (``job.todo``, a :class:`loom.batch_jobs.BatchJob`) on Ray and pass
    each batch of finished manifest rows to ``on_rows``.

    Uses the Ray session already open in this process if there is one; otherwise joins
    ``job.address`` or, with no address, starts a local cluster for the job (on 127.0.0.1) and
    stops it after."""
    items, address, batch_size = job.todo, job.address, job.batch_size
    worker_cpus, worker_gpus = job.worker_cpus, job.worker_gpus
    ray = require_ray()
    own_session = not ray.is_initialized()
    before = set(descendants()) if own_session and not address else set()
    loopback = _open_session(ray, address) if own_session else None
    data_logger = logging.getLogger("ray.data")
    level = data_logger.level
    try:
        data_logger.setLevel(logging.ERROR)  # Loom shows its own progress bar and summary
        _quiet_ray_data()
        size = job.workers or _default_workers(ray.cluster_resources(), worker_cpus, worker_gpus)
        size = max(1, min(size, -(-len(items) // batch_size)))  # no idle actors loading the chain for nothing
        dataset = _written_items(
            ray, items, job.spec, job.out_dir, batch_size, size, worker_cpus, worker_gpus, job.started_wall
        )
        by_id = {i.id: i for i in items}
        try:
            for result in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                on_rows([_row_of_result(by_id[str(result["id"][k])], result, k) for k in range(len(result["id"]))])
        except ray.exceptions.RayError as err:
            # e.g. a worker could not load the chain (a plugin or weights missing on that node)
            raise LoomError(f"the Ray job stopped: {err}") from None
    finally:
        data_logger.setLevel(level)
        if own_session:
            _close_session(ray, address, before, loopback)


def _open_session(ray, address: str | None) -> tuple | None:
    """Join the cluster at ``address``, or start one for this job; returns what :func:`_loopback`
    must put back."""
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return None
    # A cluster for this job alone needs no network: keep it on loopback (Ray's default on
    # Linux is the machine's network address).
    loopback = _loopback(True)
    try:
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    except BaseException:
        _loopback(False, loopback)
        raise
    return loopback


def _close_session(ray, address: str | None, before: set[int], loopback: tuple | None) -> None:
    """Shut down the session :func:`_open_session` opened, ending what is left of a cluster it started."""
    ours = [p for p in descendants() if p not in before and _is_ray(p)] if not address else []
    ray.shutdown()
    _end(ours)
    _loopback(False, loopback)


def _quiet_ray_data() -> None:
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    context.enable_auto_log_stats = False


def _written_items(
    ray,
    items: Sequence[Item],
    spec: dict,
    out_dir: Path,
    batch_size: int,
    size: int,
    worker_cpus: float,
    worker_gpus: float,
    started: float,
):
    """The Ray dataset of ``items`` mapped through a pool of ``size`` :class:`RayItemWriter` actors."""
    from ray.data import ActorPoolStrategy

    rows = [
        {
            "id": i.id,
            "prompt": i.prompt,
            "seed": i.seed,
            "params": json.dumps(i.params) if i.params else "",
            "given": json.dumps(i.given) if i.given else "",
        }
        for i in items
    ]
    return ray.data.from_items(rows).map_batches(
        RayItemWriter,
        batch_size=batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=size),
        num_cpus=worker_cpus,
        num_gpus=worker_gpus or None,
        fn_constructor_kwargs={
            "spec": spec,
            "out_dir": str(out_dir),
            "started": started,
            "threads": int(max(1, worker_cpus)),
        },
    )


_LOOPBACK_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _loopback(on: bool, saved: tuple | None = None) -> tuple | None:
    """Bind a local cluster to 127.0.0.1 (on Linux Ray binds to the network address by default).

    Ray's switch is the environment variable ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which the
    processes ``ray.init`` starts read when they start, and which this process read once, when it
    imported Ray: so both are set for the session and put back after. When the user has set the
    variable, it is left as they set it. Returns what to put back."""
    if on:
        if _LOOPBACK_VAR in os.environ:
            return None
        from ray._private import ray_constants

        saved = (getattr(ray_constants, "ENABLE_RAY_CLUSTER", None),)
        os.environ[_LOOPBACK_VAR] = "0"
        if saved[0] is not None:
            ray_constants.ENABLE_RAY_CLUSTER = False
        return saved
    if saved is not None:
        from ray._private import ray_constants

        os.environ.pop(_LOOPBACK_VAR, None)
        if saved[0] is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved[0]
    return None


def descendants(root: int | None = None) -> list[int]:
    """The processes below ``root`` (default: this one), from /proc: Linux; elsewhere none."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [os.getpid() if root is None else root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _is_ray(pid: int) -> bool:
    try:
        line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return line.startswith("ray::") or "/ray/" in line


def _end(pids: list[int], wait_s: float = 10.0) -> None:
    """Wait for the processes of the job's own cluster to exit after ``ray.shutdown()``, and end
    those that do not: a worker still busy (importing, loading weights) notices its raylet is
    gone only seconds later, holding its memory and CPU until then."""
    deadline = time.monotonic() + wait_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if _alive(p)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _default_workers(resources: dict, worker_cpus: float, worker_gpus: float) -> int:
    if worker_gpus:
        return max(1, int(resources.get("GPU", 0) // worker_gpus))
    return max(1, int(resources.get("CPU", 1) // max(worker_cpus, 1e-9)))


def _row_of_result(item: Item, result: dict, k: int) -> dict:
    """Item ``item``'s manifest row from row ``k`` of a batch an actor returned."""
    timings = {name: float(result[name][k]) for name in ("run_s", "write_s", "done_s") if float(result[name][k]) >= 0}
    return manifest_row(
        item,
        str(result["status"][k]),
        output=str(result["output"][k]) or None,
        error=str(result["error"][k]) or None,
        timings=timings or None,
        worker=str(result["worker"][k]) or None,
    )
