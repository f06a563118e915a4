"""Cancelling a run (issue 35, part 1): a :class:`loom.core.CancelToken` stops ``Pipeline.run`` at
the next item or reported unit of work (a denoising step) with :class:`loom.core.Cancelled`, from
the running thread or another one; ``await pipeline.arun(...)`` runs the chain in a worker thread
and cancelling the awaiting task cancels the run. A cancelled run leaves the pipeline as it was."""

import asyncio
import threading
import time

import pytest
import torch
from fakes import HashEncoder

from loom.core import Cancelled, CancelToken, ComponentConfig, Embedding, Generator, Image, Pipeline, Registry, hookimpl


class Denoiser(Generator):
    """Reports each of its ``steps`` "denoising steps" (sleeping ``pause`` s in each) and counts them."""

    class Config(ComponentConfig):
        steps: int = 10
        pause: float = 0.0

    input_type = Embedding
    output_type = Image
    micro_batch = 2
    ran: list[int] = []  # steps run, over every instance

    def run(self, inputs, generators):
        x = torch.stack([torch.rand(3, 4, 4, generator=g) for g in generators])
        for step in range(self.config.steps):
            time.sleep(self.config.pause)
            x = (x * 0.9 + 0.05).clamp(0, 1)
            Denoiser.ran.append(step)
            self.report_progress(step + 1, self.config.steps, "denoising step")
        return Image(x)


def chain(**options) -> Pipeline:
    registry = Registry()

    class Plugin:
        @hookimpl
        def loom_register_components(self, register):
            register("hash", HashEncoder)
            register("denoiser", Denoiser)

    registry.add_plugin(Plugin(), "cancel-fakes")
    Denoiser.ran = []
    return Pipeline.from_spec(
        {"steps": [{"component": "hash"}, {"component": "denoiser", "config": options}]}, registry
    )


PROMPTS = ["a", "b", "c", "d"]


def test_a_cancel_during_a_denoising_step_stops_at_the_next_one():
    pipe, token = chain(), CancelToken()

    def progress(done, total, note):
        if "denoising step 3/" in note:
            token.cancel()  # as another thread would, while step 3 of the first chunk reports

    with pytest.raises(Cancelled, match="cancelled at denoiser: denoising step 3/20"):
        pipe.run(PROMPTS, 1, progress=progress, cancel=token)
    assert Denoiser.ran == [0, 1, 2]  # nothing after the step it was cancelled in


def test_a_token_cancelled_before_the_run_runs_nothing_and_the_pipeline_runs_again_unchanged():
    pipe, token = chain(), CancelToken()
    expected = pipe.run(PROMPTS, 1).output.pixels
    token.cancel()
    Denoiser.ran = []
    with pytest.raises(Cancelled):
        pipe.run(PROMPTS, 1, cancel=token)
    assert Denoiser.ran == [] and token.cancelled
    assert torch.equal(pipe.run(PROMPTS, 1, cancel=CancelToken()).output.pixels, expected)


def test_another_thread_cancels_a_running_job_within_one_step():
    pipe, token = chain(steps=200, pause=0.01), CancelToken()
    raised = []

    def job():
        try:
            pipe.run(PROMPTS, 1, cancel=token)
        except Cancelled as err:
            raised.append(err)

    worker = threading.Thread(target=job)
    worker.start()
    while len(Denoiser.ran) < 5:
        time.sleep(0.005)
    token.cancel()
    at = len(Denoiser.ran)
    worker.join(timeout=10)
    assert not worker.is_alive() and len(raised) == 1
    assert len(Denoiser.ran) <= at + 1  # the step under way when it was cancelled, and no other


def test_arun_gives_what_run_gives_and_cancelling_its_task_cancels_the_run():
    pipe = chain()
    expected = pipe.run(PROMPTS, 5).output.pixels
    assert torch.equal(asyncio.run(pipe.arun(PROMPTS, 5)).output.pixels, expected)

    slow = chain(steps=400, pause=0.01)

    async def cancel_soon():
        task = asyncio.create_task(slow.arun(PROMPTS, 5))
        while len(Denoiser.ran) < 3:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_soon())  # asyncio.run waits for the worker thread to end
    time.sleep(0.05)
    stopped = len(Denoiser.ran)
    time.sleep(0.1)
    assert len(Denoiser.ran) == stopped < 400  # the thread stopped too
