"""The pipeline's worker role in Python: the twin of
``examples/pipeline/worker`` (Rust). It takes jobs from the queue ``jobs``,
analyses their text (:mod:`analysis`) and stores the result in the
key-value bucket ``jobs``, where the web role reads it; the records are
byte for byte those the Rust worker writes (serde_json's output: keys
sorted, no spaces, non-ASCII raw).

A job that can never succeed (a message that is not a job) is recorded as
``failed`` when its id is known, and completed rather than retried; with no
id it is dropped. JSON nested 128 levels deep or more is refused before it
is parsed, as serde_json refuses it (and as Python's parser could not
survive much deeper). A key-value failure raises, so the message is abandoned
and delivered again.

Build (from ``examples/pipeline``; see ``weft.toml`` there for the roles)::

    componentize-py -d ../../wit -w weft:vmbus/worker-role-with-hooks \\
        componentize -p ../../sdk/python -p worker-py app -o worker-py/app.wasm
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import weft
from weft import Hooks  # noqa: F401  (the no-op lifecycle hooks this world exports)

import analysis


class _Object(dict):
    """A parsed JSON object that remembers which keys it saw twice."""

    repeated: frozenset[str] = frozenset()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        obj.repeated = frozenset(k for k, _ in pairs if k in seen or seen.add(k))
    return obj


#: serde_json's recursion limit: it refuses the 128th level of nesting.
MAX_DEPTH = 127


def check_depth(body: bytes) -> None:
    """Raises ``ValueError`` if ``body`` nests arrays and objects more than
    :data:`MAX_DEPTH` deep (brackets inside strings do not count)."""
    depth = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > MAX_DEPTH:
                raise ValueError("recursion limit exceeded")
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError("number out of range")
    return value


def parse_json(body: bytes) -> Any:
    """``body`` parsed as serde_json parses it: UTF-8, no NaN or Infinity,
    no number out of range, no lone surrogate, at most :data:`MAX_DEPTH`
    levels of nesting (raises ``ValueError``, ``UnicodeError`` included)."""
    check_depth(body)
    doc = json.loads(
        body.decode("utf-8"),
        object_pairs_hook=_object,
        parse_constant=_no_constant,
        parse_float=_finite,
    )
    # Python accepts "\ud800" escapes; serde_json refuses lone surrogates.
    json.dumps(doc, ensure_ascii=False).encode("utf-8")
    return doc


def encode(record: dict[str, Any]) -> str:
    """``record`` as serde_json's ``Value::to_string`` writes it."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _unexpected(value: Any) -> str:
    """How serde names a value of the wrong type (its ``Unexpected``)."""
    if isinstance(value, bool):
        return f"boolean `{str(value).lower()}`"
    if isinstance(value, int):
        return f"integer `{value}`"
    if isinstance(value, float):
        return f"floating point `{value}`"
    if value is None:
        return "null"
    return "sequence" if isinstance(value, list) else "map"


def job_of(doc: Any) -> tuple[str, str]:
    """The ``(id, text)`` of a job, deserialized as serde's derived
    ``Deserialize`` for ``struct Job { id: String, text: String }`` does
    (which also accepts a two-element array); raises ``ValueError``."""
    if isinstance(doc, list):
        if len(doc) != 2:
            raise ValueError(f"invalid length {len(doc)}, expected struct Job with 2 elements")
        fields = {"id": doc[0], "text": doc[1]}
    elif isinstance(doc, dict):
        for name in ("id", "text"):
            if name in getattr(doc, "repeated", ()):
                raise ValueError(f"duplicate field `{name}`")
        fields = doc
    else:
        shown = f"string {json.dumps(doc)}" if isinstance(doc, str) else _unexpected(doc)
        raise ValueError(f"invalid type: {shown}, expected struct Job")
    for name in ("id", "text"):
        if name not in fields:
            raise ValueError(f"missing field `{name}`")
        if not isinstance(fields[name], str):
            raise ValueError(f"invalid type: {_unexpected(fields[name])}, expected a string")
    return fields["id"], fields["text"]


def process(jobs: weft.Bucket, message: weft.Message) -> None:
    """Handles one message; raises only for failures worth retrying."""
    try:
        job_id, text = job_of(parse_json(message.body))
    except ValueError as e:
        reject(jobs, message, f"malformed job: {e}")
        return
    record = {"id": job_id, "status": "done", "result": analysis.analyse(text)}
    jobs.set(job_id, encode(record))


def reject(jobs: weft.Bucket, message: weft.Message, reason: str) -> None:
    """Records a job that can never succeed as failed, if its id can be
    found, and lets the message be completed."""
    try:
        doc = parse_json(message.body)
    except ValueError:
        doc = None
    job_id = doc.get("id") if isinstance(doc, dict) else None
    if isinstance(job_id, str):
        print(f"pipeline-worker: job {job_id} failed: {reason}", file=sys.stderr, flush=True)
        jobs.set(job_id, encode({"id": job_id, "status": "failed", "reason": reason}))
    else:
        print(
            f"pipeline-worker: dropping message {message.id} with no job id: {reason}",
            file=sys.stderr,
            flush=True,
        )


class Run(weft.Worker):
    """The ``wasi:cli/run`` export: the SDK's pull loop on ``jobs``."""

    queue = "jobs"

    def setup(self) -> None:
        """Opens the bucket ``jobs``, once."""
        self.jobs = weft.Bucket.open("jobs")

    def handle(self, message: weft.Message) -> None:
        """Analyses one job."""
        process(self.jobs, message)
