"""py-worker: a Python worker role for Weft's integration tests, built with
the Python SDK (weft:vmbus/worker-role-with-hooks).

Its behaviour is chosen by the setting `mode`, which the tests' manifest
declares, and read once, in `setup`:

- `echo` (the default): for each message on queue `tasks`, stores its body
  under its id in bucket `results`;
- `raise`: prints `py-worker: raising on <id> (delivery <n>)` and raises
  `RuntimeError` on every message of `tasks`, so the SDK abandons it and it
  ends in `tasks-poison`;
- `ungranted`: reaches for queue `secret`, which the manifest does not grant,
  with a receive in `setup`; when the SDK raises `Denied` it prints
  `py-worker: denied: <message>` and re-raises, so `run` fails and the host
  restarts the role.
"""

import weft
from weft import Hooks  # noqa: F401  (the no-op lifecycle hooks this world exports)


class Run(weft.Worker):
    """The `wasi:cli/run` export."""

    queue = "tasks"

    def setup(self) -> None:
        """Reads the mode and opens `results` (or is denied `secret`)."""
        self.mode = weft.config.get("mode") or "echo"
        if self.mode == "ungranted":
            try:
                weft.queue.receive("secret", wait_ms=0)
            except weft.Denied as e:
                print(f"py-worker: denied: {e.reason}", flush=True)
                raise
        self.results = weft.Bucket.open("results")

    def handle(self, message: weft.Message) -> None:
        """Echoes the body into `results`, or raises in mode `raise`."""
        if self.mode == "raise":
            print(
                f"py-worker: raising on {message.id} (delivery {message.dequeue_count})",
                flush=True,
            )
            raise RuntimeError(f"asked to fail {message.id}")
        self.results.set(message.id, message.body)
