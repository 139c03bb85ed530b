"""ScoringService over a real repository, without a server: what it keeps per served
version (batchers) lives exactly as long as the repository serves that version."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np

import scorewire
from scorewire.repository import ModelRepository
from scorewire.service import ScoringService
from scorewire.types import PredictRequest

BATCHED = "[batching]\nenabled = true\nmax_delay_us = 100\n"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_reloading_and_unloading_a_batched_model_leaks_nothing(tmp_path):
    """
    1. Light load: one request at a time to a batched model, for the whole test.
    2. 500 times: that model is reloaded (a new version record replaces the served
       one), and a second batched model is unloaded, loaded and asked once.
    Result: no request fails; the asyncio tasks (each batcher has a worker) and the
    process's memory stay flat between the 100th and the 500th round.
    """
    for name in ("reloaded", "unloaded"):
        shutil.copytree(scorewire.demo_repository() / "diabetes", tmp_path / name)
        (tmp_path / name / "model.toml").write_text(BATCHED)
    X = np.full((1, 10), 0.01)

    async def main() -> dict[str, int]:
        loop = asyncio.get_running_loop()
        repo = ModelRepository(tmp_path, n_threads=1)
        repo.load_all()
        service = ScoringService(repo)
        counts = {"answered": 0, "failed": 0}
        stop = asyncio.Event()

        async def traffic() -> None:  # 1.
            while not stop.is_set():
                try:
                    await service.predict(PredictRequest("reloaded", X))
                    counts["answered"] += 1
                except Exception:
                    counts["failed"] += 1
                await asyncio.sleep(0)

        load = asyncio.create_task(traffic())
        for i in range(500):  # 2.
            await loop.run_in_executor(None, repo.load, "reloaded")
            repo.unload("unloaded")
            await loop.run_in_executor(None, repo.load, "unloaded")
            await service.predict(PredictRequest("unloaded", X))
            if i == 100:
                counts["tasks_at_100"], counts["rss_at_100"] = len(asyncio.all_tasks()), rss_bytes()
        counts["tasks_at_500"], counts["rss_at_500"] = len(asyncio.all_tasks()), rss_bytes()
        stop.set()
        await load
        await service.aclose()
        service.close()
        return counts

    counts = asyncio.run(main())
    assert counts["failed"] == 0 and counts["answered"] > 0
    # a few batchers may be closing at either moment; 400 leaked ones would be 800 tasks
    assert counts["tasks_at_500"] <= counts["tasks_at_100"] + 4, counts
    assert counts["rss_at_500"] - counts["rss_at_100"] < 32 << 20, counts


def test_a_retired_version_answers_what_its_batcher_holds(tmp_path):
    """Requests queued in a version's batcher when the version is replaced are
    answered (by the old version), not dropped or refused."""
    shutil.copytree(scorewire.demo_repository() / "diabetes", tmp_path / "m")
    (tmp_path / "m" / "model.toml").write_text("[batching]\nenabled = true\nmax_delay_us = 3600000000\n")
    X = np.full((1, 10), 0.01)

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        repo = ModelRepository(tmp_path, n_threads=1)
        repo.load_all()
        service = ScoringService(repo)
        # queued: the batcher waits an hour for company, unless it is closed
        waiting = [asyncio.ensure_future(service.predict(PredictRequest("m", X))) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiting)
        await loop.run_in_executor(None, repo.load, "m")  # replaced: the old batcher closes
        answers = await asyncio.wait_for(asyncio.gather(*waiting), 120)
        await service.aclose()
        service.close()
        return [a.version for a in answers]

    assert asyncio.run(main()) == [1, 1, 1]
