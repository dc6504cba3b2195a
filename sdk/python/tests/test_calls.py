"""The queue, key-value, settings and lifecycle calls: what crosses the
(faked) bindings, and how their errors come back."""

from __future__ import annotations

import io
import math
import unittest
from contextlib import redirect_stderr

import weft
from weft import _wire, config, kv, queue

from . import fakes

Q = fakes.queue_mod


def wire(id: str, body: bytes = b"{\"n\": 1}") -> fakes.WireMessage:
    return fakes.WireMessage(id, body, 2, 1_500, f"r-{id}", None)


class Queue(unittest.TestCase):
    def setUp(self) -> None:
        Q.calls.clear()
        Q.answers.clear()

    def test_send_options_cross_as_milliseconds(self) -> None:
        Q.answers.extend(["m1", "m2"])
        self.assertEqual(queue.send("jobs", "héllo"), "m1")
        queue.send("jobs", b"x", delay_ms=2_000, ttl_ms=10, dedupe_id="order-7")
        self.assertEqual(
            Q.calls,
            [
                ("send", "jobs", "héllo".encode(), fakes.SendOptions(0, 0, None)),
                ("send", "jobs", b"x", fakes.SendOptions(2_000, 10, "order-7")),
            ],
        )
        with self.assertRaises(ValueError):
            queue.send("jobs", b"x", delay_ms=-1)

    def test_u32_saturates_even_infinity_and_refuses_nan(self) -> None:
        self.assertEqual(_wire.u32(math.inf, "t"), 2**32 - 1)
        self.assertEqual(_wire.u32(2.5, "t"), 2)
        for bad in [-1, -math.inf, math.nan]:
            with self.assertRaises(ValueError):
                _wire.u32(bad, "t")

    def test_receive_clamps_and_saturates_like_the_rust_sdk(self) -> None:
        Q.answers.extend([[wire("a")], [], []])
        batch = queue.receive("jobs")
        queue.receive("jobs", max_messages=0, visibility_timeout_ms=2**40)
        queue.receive("jobs", max_messages=1_000, wait_ms=0)
        self.assertEqual(
            Q.calls,
            [
                ("receive", "jobs", 8, 30_000, 20_000),
                ("receive", "jobs", 1, 2**32 - 1, 20_000),
                ("receive", "jobs", 32, 30_000, 0),
            ],
        )
        self.assertEqual(batch, [weft.Message("a", b"{\"n\": 1}", 2, 1_500, "r-a", None)])
        self.assertEqual((batch[0].text, batch[0].json()), ("{\"n\": 1}", {"n": 1}))

    def test_settling_passes_the_receipt(self) -> None:
        m = weft.Message("a", b"", 1, 0, "r-a")
        queue.complete("jobs", m)
        queue.abandon("jobs", m)
        queue.abandon("jobs", m, delay_ms=500)
        queue.extend("jobs", m, 60_000)
        self.assertEqual(
            Q.calls,
            [
                ("complete", "jobs", "r-a"),
                ("abandon", "jobs", "r-a", 0),
                ("abandon", "jobs", "r-a", 500),
                ("extend", "jobs", "r-a", 60_000),
            ],
        )

    def test_complete_batch_passes_the_receipts_and_answers_each_outcome(self) -> None:
        types = fakes.vmbus_types
        Q.answers.append(
            [
                fakes.Ok(None),
                fakes.Err(types.Error_NotFound("stale receipt")),
                fakes.Err(types.Error_Unavailable("busy")),
            ]
        )
        messages = [weft.Message(i, b"", 1, 0, f"r-{i}") for i in ["a", "b", "c"]]
        outcomes = queue.complete_batch("jobs", messages)
        self.assertEqual(Q.calls, [("complete_batch", "jobs", ["r-a", "r-b", "r-c"])])
        self.assertIsNone(outcomes[0])
        self.assertIsInstance(outcomes[1], weft.NotFound)
        self.assertEqual(outcomes[1].reason, "stale receipt")
        self.assertIsInstance(outcomes[2], weft.Unavailable)
        self.assertTrue(outcomes[2].transient)

    def test_complete_batch_raises_when_the_call_as_a_whole_fails(self) -> None:
        Q.answers.append(fakes.Err(fakes.vmbus_types.Error_RateLimited()))
        with self.assertRaises(weft.RateLimited):
            queue.complete_batch("jobs", [weft.Message("a", b"", 1, 0, "r-a")])
        # The host refuses an empty batch (or one over 32) with `invalid`.
        Q.answers.append(fakes.Err(fakes.vmbus_types.Error_Invalid("no receipts")))
        with self.assertRaises(weft.Invalid):
            queue.complete_batch("jobs", [])
        self.assertEqual(Q.calls[-1], ("complete_batch", "jobs", []))

    def test_errors_become_exceptions(self) -> None:
        Q.answers.append(fakes.Err(fakes.vmbus_types.Error_Denied("queue 'x' is not granted")))
        with self.assertRaises(weft.Denied) as raised:
            queue.length("x")
        self.assertEqual(raised.exception.reason, "queue 'x' is not granted")

    def test_peek(self) -> None:
        Q.answers.append([fakes.WirePeeked("a", b"hi", 3, 7, "too many")])
        (p,) = queue.peek("jobs-poison", max_messages=99)
        self.assertEqual(Q.calls, [("peek", "jobs-poison", 32)])
        self.assertEqual(p, weft.Peeked("a", b"hi", 3, 7, "too many"))
        self.assertEqual(p.text, "hi")


class KeyValue(unittest.TestCase):
    def setUp(self) -> None:
        fakes.buckets.clear()
        fakes.buckets["results"] = fakes.FakeBucket()

    def test_round_trip(self) -> None:
        b = kv.Bucket.open("results")
        self.assertIsNone(b.get("k"))
        b.set("k", "wörd")
        self.assertEqual((b.get("k"), b.get_text("k")), ("wörd".encode(), "wörd"))
        self.assertTrue(b.exists("k"))
        b.delete("k")
        self.assertFalse(b.exists("k"))

    def test_open_refused(self) -> None:
        with self.assertRaises(weft.AccessDenied):
            kv.Bucket.open("secret")

    def test_keys_walks_every_page_and_stops_on_a_repeated_cursor(self) -> None:
        b = kv.Bucket.open("results")
        fakes.buckets["results"].pages = {
            None: fakes.KeyResponse(["a", "b"], 7),
            7: fakes.KeyResponse(["c"], 9),
            9: fakes.KeyResponse([], None),
        }
        self.assertEqual(b.keys(), ["a", "b", "c"])
        fakes.buckets["results"].pages = {
            None: fakes.KeyResponse(["x"], 1),
            1: fakes.KeyResponse(["y"], 1),
        }
        self.assertEqual(b.keys(), ["x", "y"])

    def test_deleting_every_key_while_walking_them_deletes_them_all(self) -> None:
        # The host's cursor is an offset into the keys still there: walking
        # page by page while deleting would skip a page's worth each time.
        fakes.buckets["results"] = fakes.FakeBucket(page_size=3)
        b = kv.Bucket.open("results")
        for i in range(10):
            b.set(f"k{i}", b"v")
        for key in b.keys():
            b.delete(key)
        self.assertEqual(fakes.buckets["results"].data, {})

    def test_a_full_bucket(self) -> None:
        b = kv.Bucket.open("results")
        fakes.buckets["results"].fail = fakes.Err(fakes.kv_store.Error_Other("bucket-full: 64 MiB"))
        with self.assertRaises(weft.BucketFull) as raised:
            b.set("k", b"v")
        self.assertEqual(raised.exception.reason, "64 MiB")


class Settings(unittest.TestCase):
    def test_get_and_get_all(self) -> None:
        fakes.config_store.settings = {"greeting": "hola", "mode": "echo"}
        self.assertEqual(config.get("greeting"), "hola")
        self.assertIsNone(config.get("missing"))
        self.assertEqual(config.get_all(), {"greeting": "hola", "mode": "echo"})


class HooksExport(unittest.TestCase):
    def test_defaults_do_nothing(self) -> None:
        with redirect_stderr(io.StringIO()) as err:
            self.assertIsNone(weft.Hooks().start())
            self.assertIsNone(weft.Hooks().stop())
        self.assertEqual(err.getvalue(), "")

    def test_an_exception_in_start_becomes_err_with_its_message(self) -> None:
        class Hooks(weft.Hooks):
            def start(self) -> None:
                raise RuntimeError("no database")

        with redirect_stderr(io.StringIO()) as err:
            with self.assertRaises(fakes.Err) as raised:
                Hooks().start()
        self.assertEqual(raised.exception.value, "RuntimeError: no database")
        self.assertEqual(err.getvalue(), "weft: start hook failed: RuntimeError: no database\n")

    def test_a_subclass_of_a_guarded_start_fails_once(self) -> None:
        class Base(weft.Hooks):
            def start(self) -> None:
                raise RuntimeError("no database")

        class Child(Base):
            def start(self) -> None:
                super().start()

        with redirect_stderr(io.StringIO()) as err:
            with self.assertRaises(fakes.Err) as raised:
                Child().start()
        self.assertEqual(raised.exception.value, "RuntimeError: no database")
        self.assertEqual(err.getvalue().count("start hook failed"), 1)

    def test_an_exception_in_stop_is_logged_not_raised(self) -> None:
        class Hooks(weft.Hooks):
            def stop(self) -> None:
                raise OSError("disk gone")

        with redirect_stderr(io.StringIO()) as err:
            self.assertIsNone(Hooks().stop())
        self.assertIn("weft: stop hook failed:\nTraceback", err.getvalue())
        self.assertIn("OSError: disk gone", err.getvalue())

    def test_a_weft_error_in_start_carries_the_hosts_reason(self) -> None:
        class Hooks(weft.Hooks):
            def start(self) -> None:
                kv.Bucket.open("nope")

        fakes.buckets.clear()
        with redirect_stderr(io.StringIO()):
            with self.assertRaises(fakes.Err) as raised:
                Hooks().start()
        self.assertEqual(
            raised.exception.value, "AccessDenied: access to the key-value bucket denied"
        )


if __name__ == "__main__":
    unittest.main()
