"""The condition language of ABAC rules: parsed, never `eval`ed.

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | "(" expr ")" | test
    test    := value OP value                      OP: == != < <= > >=
             | value ["not"] "in" (list | ref | cidr)
             | value "starts with" value
             | value "between" bound "and" bound   bound: HH:MM or mon..sun (windows may wrap)
             | value "exists"                       never unknown: true when the attribute is set
    value   := ref | "string" | 'string' | number | true | false | HH:MM | list
    ref     := (subject|resource|context) "." name ("." name)*
    list    := "[" [value ("," value)*] "]"

Evaluation is three-valued: a test over a missing attribute or values of different types is
UNKNOWN (None), `not UNKNOWN` is UNKNOWN, and/or follow Kleene logic. The engine allows only on
True and lets a deny rule apply unless it is False, so a missing attribute never allows. A deny
rule over an optional attribute says so with `exists`: `subject.suspended exists and ...`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable

from ..errors import InvalidInput

ROOTS = ("subject", "resource", "context")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MISSING = object()

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<cidr>[0-9]{1,3}(?:\.[0-9]{1,3}){3}/[0-9]{1,2})
  | (?P<time>[0-9]{1,2}:[0-9]{2}(?![0-9.]))
  | (?P<number>-?[0-9]+(?:\.[0-9]+)?(?![0-9A-Za-z_.]))
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
""", re.VERBOSE)
KEYWORDS = {"and", "or", "not", "in", "starts", "with", "between", "true", "false", "exists"}


class ConditionError(InvalidInput):
    """A condition does not parse; says where (1-based column) and, when known, in which rule."""

    def __init__(self, message: str, position: int, rule: str | None = None):
        self.message, self.position, self.rule = message, position, rule
        where = f"rule {rule!r}, " if rule else ""
        super().__init__(f"{where}position {position}: {message}")


Evaluator = Callable[[dict], object]


def tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ConditionError(f"unexpected character {text[pos]!r}", pos + 1)
        kind = m.lastgroup
        if kind != "ws":
            value = m.group()
            if kind == "name" and value in KEYWORDS:
                kind = "kw"
            tokens.append((kind, value, pos + 1))
        pos = m.end()
    tokens.append(("end", "", len(text) + 1))
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.tokens = tokenize(text)
        self.i = 0
        self.refs: set[str] = set()

    # --- token helpers ---
    def peek(self, offset=0):
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def take(self):
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def accept(self, value: str) -> bool:
        if self.peek()[1] == value and self.peek()[0] in ("kw", "op"):
            self.i += 1
            return True
        return False

    def expect(self, value: str):
        if not self.accept(value):
            kind, got, pos = self.peek()
            raise ConditionError(f"expected {value!r}, found {got or 'end of condition'!r}", pos)

    # --- grammar ---
    def parse(self) -> Evaluator:
        node = self.or_expr()
        kind, got, pos = self.peek()
        if kind != "end":
            raise ConditionError(f"unexpected {got!r}", pos)
        return node

    def or_expr(self):
        items = [self.and_expr()]
        while self.accept("or"):
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else _any(items)

    def and_expr(self):
        items = [self.not_expr()]
        while self.accept("and"):
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else _all(items)

    def not_expr(self):
        if self.accept("not"):
            inner = self.not_expr()
            return lambda env: None if (v := inner(env)) is None else not v
        if self.peek()[1] == "(" and self.peek()[0] == "op":
            self.take()
            node = self.or_expr()
            self.expect(")")
            return node
        return self.test()

    def test(self):
        left_pos = self.peek()[2]
        left = self.value()
        kind, op, pos = self.peek()
        if op in ("==", "!=", "<", "<=", ">", ">="):
            self.take()
            return _compare(op, left, self.value())
        if op == "exists" and kind == "kw":
            self.take()
            return lambda env: left(env) is not MISSING
        if op == "starts":
            self.take()
            self.expect("with")
            return _starts_with(left, self.value())
        if op == "between":
            self.take()
            low = self.bound()
            self.expect("and")
            high_pos = self.peek()[2]
            high = self.bound()
            if low[0] != high[0]:
                raise ConditionError("between bounds must both be times or both weekdays", high_pos)
            return _between(left, low, high)
        negate = False
        if op == "not" and self.peek(1)[1] == "in":
            self.take()
            negate = True
        if self.accept("in"):
            return _membership(left, self.container(), negate)
        if kind == "end" or op in ("and", "or", ")"):
            raise ConditionError("expected a comparison (==, !=, <, in, starts with, between, ...)", pos
                                 if kind != "end" else left_pos)
        raise ConditionError(f"unknown operator {op!r}", pos)

    def bound(self):
        kind, value, pos = self.take()
        if kind == "time":
            return ("time", _minutes(value, pos))
        if kind == "name" and value.lower() in WEEKDAYS:
            return ("weekday", WEEKDAYS.index(value.lower()))
        raise ConditionError(f"between needs HH:MM times or weekdays (mon..sun), found {value!r}", pos)

    def container(self):
        kind, value, pos = self.peek()
        if kind == "cidr" or (kind == "string" and "/" in value):
            self.take()
            try:
                return ("cidr", ipaddress.ip_network(_unquote(value) if kind == "string" else value, strict=False))
            except ValueError:
                raise ConditionError(f"invalid network {value}", pos) from None
        if kind == "name" or value == "[":
            return ("values", self.value())
        raise ConditionError(f"in needs a list, an attribute or a CIDR network, found {value!r}", pos)

    def value(self) -> Evaluator:
        kind, value, pos = self.take()
        if kind == "string":
            text = _unquote(value)
            return lambda env: text
        if kind == "number":
            number = float(value) if "." in value else int(value)
            return lambda env: number
        if kind == "time":
            minutes = _minutes(value, pos)
            return lambda env: minutes
        if kind == "kw" and value in ("true", "false"):
            flag = value == "true"
            return lambda env: flag
        if kind == "op" and value == "[":
            items = []
            if not self.accept("]"):
                items.append(self.value())
                while self.accept(","):
                    items.append(self.value())
                self.expect("]")
            return lambda env: [item(env) for item in items]
        if kind == "name":
            return self.ref(value, pos)
        raise ConditionError(f"expected a value, found {value or 'end of condition'!r}", pos)

    def ref(self, name: str, pos: int) -> Evaluator:
        parts = name.split(".")
        if parts[0] not in ROOTS or len(parts) < 2:
            raise ConditionError(f"unknown name {name!r}: use subject.*, resource.* or context.*", pos)
        self.refs.add(name)
        root, path = parts[0], parts[1:]

        def lookup(env):
            value = env.get(root, {})
            for key in path:
                if not isinstance(value, dict) or key not in value:
                    return MISSING
                value = value[key]
            return MISSING if value is None else value
        return lookup


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def _minutes(value: str, pos: int) -> int:
    hours, minutes = (int(p) for p in value.split(":"))
    if hours > 23 or minutes > 59:
        raise ConditionError(f"invalid time of day {value}", pos)
    return hours * 60 + minutes


# --- three-valued combinators: True, False or None (unknown) ---------------------------------

def _any(items):
    def run(env):
        result = False
        for item in items:
            v = item(env)
            if v is True:
                return True
            if v is None:
                result = None
        return result
    return run


def _all(items):
    def run(env):
        result = True
        for item in items:
            v = item(env)
            if v is False:
                return False
            if v is None:
                result = None
        return result
    return run


def _kind(value):
    """Comparable type families; bool is not a number here."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return None


_OPS = {"==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def _compare(op, left, right):
    fn = _OPS[op]
    ordered = op not in ("==", "!=")

    def run(env):
        a, b = left(env), right(env)
        if a is MISSING or b is MISSING:
            return None
        ka = _kind(a)
        if ka is None or ka != _kind(b) or (ordered and ka not in ("number", "string")):
            return None  # type mismatch: unknown, never a silent True
        return fn(a, b)
    return run


def _starts_with(left, right):
    def run(env):
        a, b = left(env), right(env)
        if not isinstance(a, str) or not isinstance(b, str):
            return None
        return a.startswith(b)
    return run


def _between(left, low, high):
    kind, lo, hi = low[0], low[1], high[1]

    def run(env):
        v = left(env)
        if kind == "weekday":
            v = WEEKDAYS.index(v.lower()) if isinstance(v, str) and v.lower() in WEEKDAYS else None
        elif isinstance(v, str) and re.fullmatch(r"[0-9]{1,2}:[0-9]{2}", v):
            h, m = (int(p) for p in v.split(":"))
            v = h * 60 + m
        elif not isinstance(v, int) or isinstance(v, bool):
            v = None
        if v is None:
            return None
        # A window like 22:00..06:00 or fri..mon wraps around.
        return lo <= v <= hi if lo <= hi else (v >= lo or v <= hi)
    return run


def _membership(left, container, negate: bool):
    kind, payload = container

    def run(env):
        v = left(env)
        if v is MISSING:
            return None
        if kind == "cidr":
            try:
                result = ipaddress.ip_address(v) in payload if isinstance(v, str) else None
            except ValueError:
                result = None
        else:
            items = payload(env)
            if items is MISSING or not isinstance(items, list):
                return None
            kv = _kind(v)
            result = any(_kind(item) == kv and item == v for item in items)
        if result is None:
            return None
        return not result if negate else result
    return run


def compile_condition(text: str, rule: str | None = None) -> tuple[Evaluator, set[str]]:
    """Parse a condition into an evaluator env -> True | False | None and the attribute
    references it reads. Raises ConditionError naming the rule and the 1-based position."""
    if not isinstance(text, str) or not text.strip():
        raise ConditionError("the condition is empty", 1, rule)
    if len(text) > 4000:
        raise ConditionError("the condition is longer than 4000 characters", 1, rule)
    try:
        parser = _Parser(text)
        return parser.parse(), parser.refs
    except ConditionError as exc:
        raise ConditionError(exc.message, exc.position, rule) from None
    except RecursionError:
        raise ConditionError("the condition is nested too deeply", 1, rule) from None
