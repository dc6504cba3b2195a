"""The worker's pull loop, on a scripted bus (as the Rust SDK's Bus tests)."""

from __future__ import annotations

import io
import unittest
from collections import deque
from contextlib import redirect_stderr

import weft
from weft.errors import Denied, Invalid, NotFound, RateLimited, Unavailable, WeftError
from weft.worker import _Backoff

from . import fakes


class ScriptOver(Denied):
    """Ends a scripted run once the batches run out."""


class FakeBus:
    """`receive` answers from `batches` (then ScriptOver); settling answers
    from `settles` (then succeeds); a batch completion answers from
    `batch_calls` (an error to raise, or the outcomes), else each of its
    messages from `settles`."""

    def __init__(self, stop_at_end: bool = False) -> None:
        self.batches: deque = deque()
        self.settles: deque = deque()
        self.batch_calls: deque = deque()
        #: How many messages each batch completion carried.
        self.batch_sizes: list[int] = []
        #: Single completions.
        self.single_completes = 0
        self.completed: list[str] = []
        self.abandoned: list[tuple[str, int]] = []
        self.slept: list[int] = []
        self.receives: list[tuple] = []
        self.stop_at_end = stop_at_end

    def receive(self, queue, max_messages, visibility_timeout_ms, wait_ms):
        self.receives.append((queue, max_messages, visibility_timeout_ms, wait_ms))
        if not self.batches:
            # A loop that ignores `stopping` would receive forever.
            if self.stop_at_end and self.receives.count(self.receives[-1]) < 100:
                return []
            raise ScriptOver("script over")
        answer = self.batches.popleft()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def _settle(self):
        answer = self.settles.popleft() if self.settles else None
        if answer is not None:
            raise answer

    def complete(self, queue, message):
        self.single_completes += 1
        self._settle()
        self.completed.append(message.id)

    def complete_batch(self, queue, messages):
        self.batch_sizes.append(len(messages))
        if self.batch_calls:
            answer = self.batch_calls.popleft()
            if isinstance(answer, Exception):
                raise answer
            outcomes = answer
        else:
            outcomes = [self.settles.popleft() if self.settles else None for _ in messages]
        for message, outcome in zip(messages, outcomes):
            if outcome is None:
                self.completed.append(message.id)
        return outcomes

    def abandon(self, queue, message, delay_ms):
        self._settle()
        self.abandoned.append((message.id, delay_ms))

    def sleep(self, delay_ms):
        self.slept.append(delay_ms)

    def stopping(self):
        return self.stop_at_end and not self.batches


def message(id: str, body: str = "ok") -> weft.Message:
    return weft.Message(id, body.encode(), 1, 0, f"receipt-{id}", None)


class FailOnFail(weft.Worker):
    queue = "q"

    def __init__(self) -> None:
        self.handled: list[str] = []

    def handle(self, message: weft.Message) -> None:
        self.handled.append(message.id)
        if message.text == "fail":
            raise ValueError("asked to fail")


def serve(worker: weft.Worker, bus: FakeBus) -> tuple[BaseException | None, str]:
    """Runs the loop; returns the error that ended it (None if it returned)
    and what it logged."""
    with redirect_stderr(io.StringIO()) as err:
        try:
            worker._serve(bus)
        except WeftError as e:
            return e, err.getvalue()
    return None, err.getvalue()


def run_on(worker: weft.Worker, bus: FakeBus) -> tuple[fakes.Err | None, str]:
    """Runs the ``run`` export on ``bus``; returns the ``Err`` it raised
    (None if it returned) and what it logged."""
    with redirect_stderr(io.StringIO()) as err:
        try:
            worker._run_on(bus)
        except fakes.Err as e:
            return e, err.getvalue()
    return None, err.getvalue()


class PullLoop(unittest.TestCase):
    def test_completes_successes_and_abandons_failures(self) -> None:
        bus = FakeBus()
        bus.batches.extend([[message("a"), message("b", "fail")], [message("c")]])
        worker = FailOnFail()
        end, log = serve(worker, bus)
        self.assertIsInstance(end, ScriptOver)
        self.assertEqual(worker.handled, ["a", "b", "c"])
        self.assertEqual(bus.completed, ["a", "c"])
        self.assertEqual(bus.abandoned, [("b", 0)])
        self.assertEqual(bus.slept, [])
        self.assertIn("message b failed on delivery 1; abandoning it:\nTraceback", log)
        self.assertIn('in handle\n    raise ValueError("asked to fail")', log)
        self.assertIn("ValueError: asked to fail", log)

    def test_receives_with_the_class_attributes(self) -> None:
        class Tuned(FailOnFail):
            queue = "jobs"
            batch_size = 3
            visibility_timeout_ms = 5_000
            wait_ms = 1_000

        bus = FakeBus()
        serve(Tuned(), bus)
        self.assertEqual(bus.receives, [("jobs", 3, 5_000, 1_000)])
        bus = FakeBus()
        serve(FailOnFail(), bus)
        self.assertEqual(bus.receives, [("q", 8, 30_000, 20_000)], "the Rust SDK's defaults")

    def test_failures_are_retried_after_the_retry_delay(self) -> None:
        class Patient(FailOnFail):
            retry_delay_ms = 1_500

        bus = FakeBus()
        bus.batches.append([message("a", "fail")])
        serve(Patient(), bus)
        self.assertEqual(bus.abandoned, [("a", 1_500)])

    def test_backs_off_on_transient_receive_errors_and_resets_after_success(self) -> None:
        bus = FakeBus()
        bus.batches.extend([RateLimited()] * 7)
        bus.batches.append([message("a")])
        bus.batches.append(Unavailable("restarting"))
        end, _ = serve(FailOnFail(), bus)
        self.assertIsInstance(end, ScriptOver)
        self.assertEqual(bus.slept, [50, 100, 200, 400, 800, 1600, 2000, 50])
        self.assertEqual(bus.completed, ["a"])

    def test_errors_it_cannot_retry_end_the_loop(self) -> None:
        for fatal in [Denied("no"), NotFound("queue"), Invalid("batch")]:
            bus = FakeBus()
            bus.batches.extend([fatal, [message("never")]])
            end, _ = serve(FailOnFail(), bus)
            self.assertIs(end, fatal)
            self.assertEqual(bus.completed, [])

    def test_empty_batches_are_paced_only_without_a_wait(self) -> None:
        bus = FakeBus()
        bus.batches.append([])
        serve(FailOnFail(), bus)
        self.assertEqual(bus.slept, [])

        class NoWait(FailOnFail):
            wait_ms = 0

        bus = FakeBus()
        bus.batches.extend([[], []])
        serve(NoWait(), bus)
        self.assertEqual(bus.slept, [50, 100])

    def test_settling_retries_transient_errors_and_skips_lapsed_leases(self) -> None:
        bus = FakeBus()
        bus.batches.append([message("a"), message("b"), message("c")])
        # The batch call is refused twice as a whole, then answers: `a`
        # done, `b` unavailable for now, `c`'s lease lapsed.
        bus.batch_calls.extend(
            [
                RateLimited(),
                Unavailable("x"),
                [None, Unavailable("y"), NotFound("stale receipt")],
            ]
        )
        # `b` alone: unavailable once more, then done.
        bus.settles.append(Unavailable("z"))
        end, log = serve(FailOnFail(), bus)
        self.assertIsInstance(end, ScriptOver, "a lapsed lease does not end the loop")
        self.assertEqual(bus.completed, ["a", "b"])
        self.assertEqual(bus.batch_sizes, [3, 3, 3])
        self.assertEqual(bus.single_completes, 2)
        self.assertEqual(bus.slept, [50, 100, 50])
        self.assertIn("could not settle message c (stale receipt)", log)

    def test_a_lapsed_lease_on_a_single_settle_is_skipped(self) -> None:
        bus = FakeBus()
        bus.batches.append([message("a", "fail"), message("b")])
        bus.settles.extend([RateLimited(), NotFound("stale receipt")])
        end, log = serve(FailOnFail(), bus)
        self.assertIsInstance(end, ScriptOver)
        self.assertEqual(bus.abandoned, [])
        self.assertEqual(bus.completed, ["b"])
        self.assertEqual(bus.slept, [50])
        self.assertIn("could not settle message a (stale receipt)", log)

    def test_a_batch_is_completed_in_one_call(self) -> None:
        """A batch's successes are completed in one call, whatever its size;
        its failures are abandoned one by one, and a batch of failures makes
        no completion call."""
        bus = FakeBus()
        bus.batches.append([message(f"m{i}") for i in range(32)])
        bus.batches.append([message("x", "fail"), message("y", "fail")])
        bus.batches.append([message("p"), message("q", "fail"), message("r")])
        end, _ = serve(FailOnFail(), bus)
        self.assertIsInstance(end, ScriptOver)
        self.assertEqual(bus.batch_sizes, [32, 2])
        self.assertEqual(bus.single_completes, 0)
        self.assertEqual(len(bus.completed), 34)
        self.assertEqual(bus.completed[32:], ["p", "r"])
        self.assertEqual(bus.abandoned, [("x", 0), ("y", 0), ("q", 0)])

    def test_a_batch_is_completed_after_the_whole_batch_is_handled(self) -> None:
        events: list[str] = []

        class Recording(FailOnFail):
            def handle(self, message: weft.Message) -> None:
                events.append(f"handle {message.id}")

        class RecordingBus(FakeBus):
            def complete_batch(self, queue, messages):
                events.append(f"complete {[m.id for m in messages]}")
                return super().complete_batch(queue, messages)

        bus = RecordingBus()
        bus.batches.append([message("a"), message("b")])
        serve(Recording(), bus)
        self.assertEqual(events, ["handle a", "handle b", "complete ['a', 'b']"])

    def test_messages_a_batch_completion_does_not_answer_are_settled_alone(self) -> None:
        bus = FakeBus()
        bus.batches.append([message("a"), message("b"), message("c")])
        bus.batch_calls.append([None])
        end, _ = serve(FailOnFail(), bus)
        self.assertIsInstance(end, ScriptOver)
        self.assertEqual(bus.completed, ["a", "b", "c"])
        self.assertEqual(bus.single_completes, 2)

    def test_a_batch_completion_stops_on_a_denial(self) -> None:
        for answer in [Denied("revoked"), [None, Denied("revoked")]]:
            bus = FakeBus()
            bus.batches.append([message("a"), message("b")])
            bus.batch_calls.append(answer)
            end, _ = serve(FailOnFail(), bus)
            self.assertIsInstance(end, Denied)
            self.assertNotIsInstance(end, ScriptOver)
            self.assertEqual(end.reason, "revoked")
            self.assertEqual(bus.single_completes, 0)

    def test_settling_stops_on_a_denial(self) -> None:
        bus = FakeBus()
        bus.batches.append([message("a", "fail"), message("b")])
        revoked = Denied("revoked")
        bus.settles.append(revoked)
        end, _ = serve(FailOnFail(), bus)
        self.assertIs(end, revoked)
        self.assertEqual((bus.completed, bus.abandoned), ([], []))

    def test_a_stop_ends_the_loop_once_the_batch_is_settled(self) -> None:
        bus = FakeBus(stop_at_end=True)
        bus.batches.append([message("a"), message("b", "fail")])
        end, _ = serve(FailOnFail(), bus)
        self.assertIsNone(end)
        self.assertEqual(bus.completed, ["a"])
        self.assertEqual(bus.abandoned, [("b", 0)])


class RunExport(unittest.TestCase):
    def test_setup_runs_once_before_the_first_receive(self) -> None:
        events: list[str] = []

        class Prepared(FailOnFail):
            def setup(self) -> None:
                events.append(f"setup, {len(bus.receives)} receives so far")
                self.queue = "chosen-in-setup"

        bus = FakeBus(stop_at_end=True)
        bus.batches.extend([[message("a")], [message("b")]])
        end, _ = run_on(Prepared(), bus)
        self.assertIsNone(end)
        self.assertEqual(events, ["setup, 0 receives so far"])
        self.assertEqual(bus.completed, ["a", "b"])
        self.assertEqual({r[0] for r in bus.receives}, {"chosen-in-setup"})

    def test_an_exception_in_setup_fails_run_without_receiving(self) -> None:
        class Broken(FailOnFail):
            def setup(self) -> None:
                raise KeyError("no such setting")

        bus = FakeBus()
        end, log = run_on(Broken(), bus)
        self.assertIsNotNone(end)
        self.assertIsNone(end.value)
        self.assertIsInstance(end.__cause__, KeyError)
        self.assertIn("worker on queue `q` stopped:\nTraceback", log)
        self.assertIn("KeyError: 'no such setting'", log)
        self.assertEqual(bus.receives, [])

    def test_any_exception_from_the_loop_fails_run(self) -> None:
        class Odd(FailOnFail):
            batch_size = "eight"  # type: ignore[assignment]

        class OddBus(FakeBus):
            def receive(self, queue, max_messages, visibility_timeout_ms, wait_ms):
                return int(max_messages)

        end, log = run_on(Odd(), OddBus())
        self.assertIsInstance(end.__cause__, ValueError)
        self.assertIn("invalid literal for int()", log)

    def test_without_handle_or_queue_run_fails_fast_with_a_clear_message(self) -> None:
        class NoHandle(weft.Worker):
            queue = "q"

        class NoQueue(weft.Worker):
            def handle(self, message: weft.Message) -> None:
                pass

        for worker, why in [
            (NoHandle(), "NoHandle must define handle(self, message)"),
            (NoQueue(), "NoQueue.queue is not set"),
        ]:
            bus = FakeBus()
            end, log = run_on(worker, bus)
            self.assertIsInstance(end.__cause__, TypeError)
            self.assertIn(why, log)
            self.assertEqual(bus.receives, [])

    def test_run_turns_a_fatal_error_into_a_failed_run(self) -> None:
        fakes.queue_mod.calls.clear()
        fakes.queue_mod.answers.clear()
        fakes.queue_mod.answers.append(fakes.Err(fakes.vmbus_types.Error_Denied("queue `q`")))
        with redirect_stderr(io.StringIO()) as err:
            with self.assertRaises(fakes.Err) as raised:
                FailOnFail().run()
        self.assertIsNone(raised.exception.value)
        self.assertIsInstance(raised.exception.__cause__, Denied)
        self.assertIn("worker on queue `q` stopped: denied: queue `q`", err.getvalue())
        self.assertEqual(fakes.queue_mod.calls, [("receive", "q", 8, 30_000, 20_000)])


class Backoff(unittest.TestCase):
    def test_doubles_from_50_ms_up_to_2_s_and_resets(self) -> None:
        backoff = _Backoff()
        self.assertEqual(
            [backoff.next_delay_ms() for _ in range(9)],
            [50, 100, 200, 400, 800, 1600, 2000, 2000, 2000],
        )
        backoff.reset()
        self.assertEqual(backoff.next_delay_ms(), 50)


if __name__ == "__main__":
    unittest.main()
