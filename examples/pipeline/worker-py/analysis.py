"""What the worker computes from a job's text: the Python twin of
``examples/pipeline/worker/src/analysis.rs``, giving the same numbers and
words for the same text (so the records it stores are byte for byte those of
the Rust worker).

Where Python and Rust differ, this module follows Rust:

- lines are counted as Rust's ``str::lines()`` counts them: only ``\\n``
  separates lines, a final line needs no ``\\n``, and an empty text has none
  (``str.splitlines()`` would also split on ``\\r``, ``\\x0b``, ``\\u2028``...);
- a word character is one for which Rust's ``char::is_alphanumeric()`` is
  true: Alphabetic (letters, Nl, and Other_Alphabetic, see
  :mod:`alphabetic`) or Numeric (Nd, Nl, No). Python's ``str.isalnum()``
  differs (it omits Other_Alphabetic marks, and accepts no No). The two
  still differ where the Unicode versions differ: characters new in Rust's
  Unicode version but unknown to the guest Python's ``unicodedata`` (or the
  reverse) are classified differently.
"""

from __future__ import annotations

import bisect
import hashlib
import unicodedata
from collections import Counter
from typing import Any, Iterator

from alphabetic import OTHER_ALPHABETIC

#: How many of the most frequent words a result lists.
TOP = 5

_ALNUM_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo", "Nl", "Nd", "No"})
_RANGE_STARTS = [start for start, _ in OTHER_ALPHABETIC]


def is_alphanumeric(c: str) -> bool:
    """Rust's ``char::is_alphanumeric`` for the character ``c``."""
    if c.isascii():
        return c.isalnum()
    if unicodedata.category(c) in _ALNUM_CATEGORIES:
        return True
    code = ord(c)
    i = bisect.bisect_right(_RANGE_STARTS, code) - 1
    return i >= 0 and code <= OTHER_ALPHABETIC[i][1]


def words_of(text: str) -> Iterator[str]:
    """The words of ``text``: runs of alphanumeric characters and
    apostrophes, without leading or trailing apostrophes."""
    run: list[str] = []
    for c in text + " ":
        if c == "'" or is_alphanumeric(c):
            run.append(c)
            continue
        word = "".join(run).strip("'")
        run.clear()
        if word:
            yield word


def count_lines(text: str) -> int:
    """The number of lines as Rust's ``str::lines().count()`` gives it."""
    if not text:
        return 0
    return text.count("\n") + (0 if text.endswith("\n") else 1)


def analyse(text: str) -> dict[str, Any]:
    """The analysis of ``text``, as the JSON object the Rust worker writes
    (``Analysis`` in analysis.rs): words, lines, bytes, unique_words, the
    top words (most frequent first, ties in code point order) and SHA-256."""
    counts: Counter[str] = Counter()
    words = 0
    for word in words_of(text):
        words += 1
        # Like Rust's str::to_lowercase, str.lower() applies the full
        # mappings and Greek final sigma.
        counts[word.lower()] += 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    data = text.encode("utf-8")
    return {
        "words": words,
        "lines": count_lines(text),
        "bytes": len(data),
        "unique_words": len(counts),
        "top_words": [{"word": w, "count": n} for w, n in ranked[:TOP]],
        "sha256": hashlib.sha256(data).hexdigest(),
    }
