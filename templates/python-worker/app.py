"""{{name}}'s worker role: for each message on the queue `tasks`, stores
its word count under the message's id in the bucket `results`. Built by the
`build` line in weft.toml."""

import weft
from weft import Hooks  # noqa: F401  (the lifecycle hooks every Python role exports; no-ops)


class Run(weft.Worker):
    """The worker's entry point: the SDK's pull loop on `tasks`."""

    queue = "tasks"

    def setup(self) -> None:
        """Opens the bucket once, before the first message."""
        self.results = weft.Bucket.open("results")

    def handle(self, message: weft.Message) -> None:
        """Counts one message's words; raising would retry the message."""
        words = len(message.text.split())
        self.results.set(message.id, str(words))
        print(f"message {message.id}: {words} words", flush=True)
