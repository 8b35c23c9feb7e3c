"""JSON from the outside world (request bodies, form fields, JWT payloads, SAML attribute
values): `loads_untrusted()` raises ValueError for anything it will not parse, so every caller
keeps its one `except ValueError`.

json.loads alone is not enough: '[' * 5000 raises RecursionError (not a ValueError) once the
nesting passes Python's recursion limit, and a document just under that limit would break the
next recursive walk over the value (json.dumps, deepcopy, a validator). Nesting is counted
before parsing, in C-speed passes over the text, and refused past MAX_DEPTH.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

MAX_BYTES = 64 * 1024
MAX_DEPTH = 32  # our deepest legitimate input (a WebAuthn credential, a claims request) is 4-5

# RFC 8259 §7: a string, escapes and all. An unterminated one runs to the end (json.loads
# fails there), so every quote matches and the scan stays linear.
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = str.maketrans({"[": "\x01", "{": "\x01", "]": "\x02", "}": "\x02"})


def loads_untrusted(text: str | bytes | bytearray | None, max_bytes: int = MAX_BYTES,
                    max_depth: int = MAX_DEPTH) -> Any:
    """The parsed JSON value; ValueError when `text` is empty, not JSON, not UTF-8 (bytes),
    longer than `max_bytes` or nested deeper than `max_depth` arrays and objects."""
    if isinstance(text, bytes | bytearray):
        if len(text) > max_bytes:
            raise ValueError("JSON text too large")
        text = bytes(text).decode(json.detect_encoding(text))  # UnicodeDecodeError is a ValueError
    if not isinstance(text, str) or not text:
        raise ValueError("no JSON text")
    if len(text) > max_bytes:
        raise ValueError("JSON text too large")
    if nesting_depth(text) > max_depth:
        raise ValueError("JSON text nested too deeply")
    try:
        return json.loads(text)
    except RecursionError:  # not reachable past the depth check; kept as the last line of defence
        raise ValueError("JSON text nested too deeply") from None


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON text, brackets inside strings not
    counted. For text that is not JSON the count is of the part json.loads would read before
    failing, which is what matters: that part is tokenised the same way."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).translate(_STEP)
    if not brackets:
        return 0
    return max(accumulate(1 if c == "\x01" else -1 for c in brackets))
