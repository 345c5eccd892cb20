"""The work queue: dedupe, one worker per key, timers, error backoff, shutdown."""

from __future__ import annotations

import asyncio
import collections

import pytest

from tokensync.workqueue import ERROR_BACKOFF_CAP, ShutDown, WorkQueue, error_backoff


async def next_key(queue: WorkQueue[str], timeout: float = 5.0) -> str:
    async with asyncio.timeout(timeout):
        return await queue.get()


# error_backoff ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (6, 32.0), (7, 60.0), (8, 60.0), (100, 60.0), (10_000, 60.0)],
)
def test_error_backoff_grows_exponentially_and_caps(failures: int, delay: float) -> None:
    assert error_backoff(failures) == delay


def test_error_backoff_never_exceeds_the_cap() -> None:
    delays = [error_backoff(n) for n in range(1, 200)]
    assert delays == sorted(delays)
    assert max(delays) == ERROR_BACKOFF_CAP


# dedupe & processing ---------------------------------------------------------------------------


async def test_a_key_is_queued_once_however_often_it_is_added() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for _ in range(5):
        queue.add("a")
    queue.add("b")
    queue.add("a")
    assert len(queue) == 2
    assert await next_key(queue) == "a"
    assert await next_key(queue) == "b"
    assert len(queue) == 0


async def test_a_key_handed_out_can_be_queued_again_before_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    assert await next_key(queue) == "a"
    queue.add("a")  # a new event while the first round runs
    queue.add("a")
    assert len(queue) == 0  # not handed to a second worker while the first still holds it
    queue.done("a")
    assert len(queue) == 1
    assert await next_key(queue) == "a"
    queue.done("a")
    assert len(queue) == 0


async def test_done_without_a_new_add_does_not_requeue() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    key = await next_key(queue)
    queue.done(key)
    assert len(queue) == 0


async def test_blocked_workers_each_get_a_different_key() -> None:
    queue: WorkQueue[str] = WorkQueue()
    workers = [asyncio.create_task(next_key(queue)) for _ in range(3)]
    await asyncio.sleep(0)
    queue.add("a")
    queue.add("b")
    queue.add("c")
    got = await asyncio.gather(*workers)
    assert sorted(got) == ["a", "b", "c"]


@pytest.mark.looptime
async def test_concurrent_workers_never_process_one_key_at_once() -> None:
    queue: WorkQueue[int] = WorkQueue()
    active: collections.Counter[int] = collections.Counter()
    overlaps: list[int] = []
    rounds: collections.Counter[int] = collections.Counter()
    waiting: set[int] = set()  # keys added since their last round started

    async def worker(index: int) -> None:
        while True:
            try:
                key = await queue.get()
            except ShutDown:
                return
            active[key] += 1
            if active[key] > 1:
                overlaps.append(key)
            rounds[key] += 1
            waiting.discard(key)
            try:
                await asyncio.sleep(0.01 * (1 + (key + index) % 3))  # rounds of varying length
            finally:
                active[key] -= 1
                queue.done(key)

    async def producer() -> None:
        for step in range(300):
            for key in (step % 5, (step * 3) % 5):
                queue.add(key)
                waiting.add(key)
            await asyncio.sleep(0.003)

    workers = [asyncio.create_task(worker(i)) for i in range(4)]
    await producer()
    async with asyncio.timeout(60):
        while True:
            if not len(queue) and not any(active.values()):
                break
            await asyncio.sleep(0.01)
    queue.shut_down()
    await asyncio.gather(*workers)

    assert overlaps == []
    assert set(rounds) == {0, 1, 2, 3, 4}
    assert waiting == set()  # every add was followed by a round: none was lost
    assert sum(rounds.values()) < 600  # deduplicated: far fewer rounds than adds


@pytest.mark.looptime
async def test_a_key_added_while_processing_runs_again_after_done() -> None:
    queue: WorkQueue[str] = WorkQueue()
    started: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        while True:
            try:
                key = await queue.get()
            except ShutDown:
                return
            started.append((key, loop.time()))
            await asyncio.sleep(10)
            queue.done(key)

    t0 = loop.time()
    workers = [asyncio.create_task(worker()) for _ in range(3)]
    queue.add("a")
    await asyncio.sleep(1)
    queue.add("a")  # while the first round runs (it ends at t0+10)
    await asyncio.sleep(30)
    queue.shut_down()
    await asyncio.gather(*workers)
    assert [key for key, _ in started] == ["a", "a"]
    assert started[1][1] - t0 == pytest.approx(10, abs=0.01)  # not at 1: other workers were idle


# schedule / unschedule -------------------------------------------------------------------------


@pytest.mark.looptime
async def test_schedule_queues_the_key_after_the_delay() -> None:
    queue: WorkQueue[str] = WorkQueue()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    queue.schedule("a", 7)
    assert queue.scheduled == 1
    assert len(queue) == 0
    assert await next_key(queue, timeout=100) == "a"
    assert loop.time() - t0 == pytest.approx(7, abs=0.01)
    assert queue.scheduled == 0


@pytest.mark.looptime
@pytest.mark.parametrize(("first", "second"), [(10, 5), (5, 10)])
async def test_a_later_schedule_replaces_the_earlier_one(first: float, second: float) -> None:
    queue: WorkQueue[str] = WorkQueue()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    queue.schedule("a", first)
    queue.schedule("a", second)
    assert queue.scheduled == 1
    assert await next_key(queue, timeout=100) == "a"
    assert loop.time() - t0 == pytest.approx(second, abs=0.01)
    queue.done("a")
    await asyncio.sleep(50)
    assert len(queue) == 0  # the replaced timer never fires
    assert queue.scheduled == 0


@pytest.mark.looptime
async def test_schedule_with_no_delay_queues_at_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.schedule("a", 10)
    queue.schedule("a", 0)
    assert len(queue) == 1
    assert queue.scheduled == 0
    assert await next_key(queue) == "a"
    queue.done("a")
    await asyncio.sleep(20)
    assert len(queue) == 0


@pytest.mark.looptime
async def test_unschedule_cancels_the_timer() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.schedule("a", 5)
    queue.schedule("b", 5)
    queue.unschedule("a")
    queue.unschedule("missing")  # harmless
    assert queue.scheduled == 1
    await asyncio.sleep(10)
    assert len(queue) == 1
    assert await next_key(queue) == "b"


@pytest.mark.looptime
async def test_a_scheduled_key_already_queued_is_not_duplicated() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.schedule("a", 1)
    await asyncio.sleep(2)
    assert len(queue) == 1


# retry / forget / drop -------------------------------------------------------------------------


@pytest.mark.looptime
async def test_retry_backs_off_per_key_and_forget_resets() -> None:
    queue: WorkQueue[str] = WorkQueue()
    delays = [queue.retry("a") for _ in range(9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert queue.retry("b") == 1.0  # per key
    queue.forget("a")
    assert queue.retry("a") == 1.0
    assert queue.retry("a") == 2.0


@pytest.mark.looptime
async def test_retry_requeues_the_key_after_its_backoff() -> None:
    queue: WorkQueue[str] = WorkQueue()
    loop = asyncio.get_running_loop()
    for expected in (1.0, 2.0, 4.0):
        t0 = loop.time()
        key = "a"
        assert queue.retry(key) == expected
        assert await next_key(queue, timeout=100) == key
        assert loop.time() - t0 == pytest.approx(expected, abs=0.01)
        queue.done(key)


@pytest.mark.looptime
async def test_drop_cancels_the_timer_and_the_backoff() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.retry("a")
    queue.retry("a")
    queue.drop("a")
    assert queue.scheduled == 0
    await asyncio.sleep(100)
    assert len(queue) == 0
    assert queue.retry("a") == 1.0  # the backoff starts over


# shutdown --------------------------------------------------------------------------------------


async def test_shut_down_wakes_every_blocked_worker() -> None:
    queue: WorkQueue[str] = WorkQueue()
    workers = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in workers)
    queue.shut_down()
    results = await asyncio.wait_for(asyncio.gather(*workers, return_exceptions=True), timeout=5)
    assert all(isinstance(r, ShutDown) for r in results)


async def test_get_after_shut_down_raises_and_adds_are_ignored() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.shut_down()
    queue.add("a")
    assert len(queue) == 0
    with pytest.raises(ShutDown):
        await next_key(queue)


@pytest.mark.looptime
async def test_shut_down_cancels_timers() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.schedule("a", 5)
    queue.retry("b")
    queue.shut_down()
    assert queue.scheduled == 0
    await asyncio.sleep(100)
    assert len(queue) == 0
    with pytest.raises(ShutDown):
        await next_key(queue)


async def test_no_key_is_handed_out_after_shut_down() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.add("b")
    queue.shut_down()
    with pytest.raises(ShutDown):
        await next_key(queue)


async def test_bulk_keys_wait_until_no_other_key_is_queued() -> None:
    """A new leader's sweep over every resource must not hold up a change that arrives meanwhile."""
    queue: WorkQueue[str] = WorkQueue()
    for key in ("old-1", "old-2", "old-3"):
        queue.add(key, bulk=True)
    queue.add("new")
    queue.add("old-2")  # already queued in bulk: stays queued once
    order = []
    for _ in range(4):
        key = await queue.get()
        order.append(key)
        queue.done(key)
    assert order == ["new", "old-1", "old-2", "old-3"]
    assert len(queue) == 0
