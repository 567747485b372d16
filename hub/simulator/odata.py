"""The OData v4 query options the hub uses, small and strict: a bad option is a 400 OData error, as on XAPI.

Supported: ``$filter`` (eq ne gt ge lt le, and or not, parentheses; ``date()``, ``contains``, ``startswith``,
``endswith``, ``tolower``, ``toupper``; literals: 'strings' with '' escaping, numbers, true/false/null,
2025-03-13T23:00:00Z date-times and 2025-02-01 dates), ``$orderby`` (asc/desc), ``$select``, ``$top``, ``$skip``,
``$count`` (``@odata.count``). Properties and operand types are checked against the entity's schema, so a typo or a
string compared with a number fails loudly instead of matching nothing. ``$expand`` and ``$search`` are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal, cast

FieldType = Literal["string", "int", "decimal", "bool", "datetime", "duration", "array", "object"]
Schema = Mapping[str, FieldType]


class ODataError(Exception):
    """An error answered as ``{"error": {"code", "message", "target", "details"}}`` (Pbx.ODataErrors.ODataError)."""

    def __init__(self, status: int, message: str, *, code: str = "", target: str | None = None) -> None:
        self.status = status
        self.code = code or {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                             500: "InternalServerError"}.get(status, str(status))  # fmt: skip
        self.message = message
        self.target = target
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "target": self.target, "details": []}}


def bad(message: str, target: str | None = None) -> ODataError:
    return ODataError(400, message, target=target)


# ----------------------------------------------------------------------------------------------------------- lexing

_TOKEN = re.compile(
    r"""\s*(?:
    (?P<string>'(?:[^']|'')*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,12})?)?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})(?![\dT])
  | (?P<number>-?\d+(?:\.\d+)?)(?![\w.])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[(),])
    )""",
    re.VERBOSE,
)
_COMPARE = {"eq", "ne", "gt", "ge", "lt", "le"}
_FUNCTIONS = {"date": 1, "contains": 2, "startswith": 2, "endswith": 2, "tolower": 1, "toupper": 1}


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    pos: int


def _lex(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None or match.lastgroup is None:
            snippet = text[pos:].strip()[:20]
            if snippet.startswith("'"):
                raise bad(f"unterminated string literal at position {pos}: {snippet!r}")
            raise bad(f"syntax error at position {pos} in $filter: unexpected {snippet!r}")
        tokens.append(_Tok(match.lastgroup, match.group(match.lastgroup), match.start(match.lastgroup)))
        pos = match.end()
    return tokens


# ----------------------------------------------------------------------------------------------------------- parsing

ValueType = Literal["string", "int", "decimal", "bool", "datetime", "date", "duration", "null"]


@dataclass(frozen=True)
class Const:
    value: Any
    type: ValueType


@dataclass(frozen=True)
class Prop:
    name: str
    type: ValueType


@dataclass(frozen=True)
class FuncCall:
    name: str
    args: tuple[Expr, ...]
    type: ValueType


@dataclass(frozen=True)
class Compare:
    op: str
    left: Expr
    right: Expr
    type: ValueType = "bool"


@dataclass(frozen=True)
class Logical:
    op: str  # and, or, not
    args: tuple[Expr, ...]
    type: ValueType = "bool"


Expr = Const | Prop | FuncCall | Compare | Logical
_NUMERIC = {"int", "decimal"}


def _compatible(a: ValueType, b: ValueType) -> bool:
    if "null" in (a, b):
        return True
    if a in _NUMERIC and b in _NUMERIC:
        return True
    return a == b


class _Parser:
    def __init__(self, text: str, schema: Schema, entity: str) -> None:
        self.tokens = _lex(text)
        self.i = 0
        self.schema = schema
        self.entity = entity

    def peek(self) -> _Tok | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise bad("the $filter expression ends too early")
        self.i += 1
        return tok

    def keyword(self, *words: str) -> str | None:
        tok = self.peek()
        if tok is not None and tok.kind == "name" and tok.text in words:
            self.i += 1
            return tok.text
        return None

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok.text != text:
            raise bad(f"expected {text!r} at position {tok.pos} in $filter, found {tok.text!r}")

    def parse(self) -> Expr:
        expr = self.or_()
        tok = self.peek()
        if tok is not None:
            raise bad(f"syntax error at position {tok.pos} in $filter: unexpected {tok.text!r}")
        if expr.type != "bool":
            raise bad("$filter must be a boolean expression, e.g. Number eq '101'")
        return expr

    def or_(self) -> Expr:
        left = self.and_()
        while self.keyword("or"):
            left = Logical("or", (self._bool(left), self._bool(self.and_())))
        return left

    def and_(self) -> Expr:
        left = self.not_()
        while self.keyword("and"):
            left = Logical("and", (self._bool(left), self._bool(self.not_())))
        return left

    def not_(self) -> Expr:
        if self.keyword("not"):
            return Logical("not", (self._bool(self.not_()),))
        return self.compare()

    def _bool(self, expr: Expr) -> Expr:
        if expr.type != "bool":
            raise bad("'and', 'or' and 'not' need boolean operands (a comparison such as Status eq 'Ringing')")
        return expr

    def compare(self) -> Expr:
        left = self.operand()
        op = self.keyword(*_COMPARE)
        if op is None:
            return left
        right = self.operand()
        if not _compatible(left.type, right.type):
            hint = " (use date(Field) to compare with a date)" if "date" in (left.type, right.type) else ""
            raise bad(f"a binary operator with incompatible types was detected: {left.type} {op} {right.type}{hint}")
        if op not in {"eq", "ne"} and ("bool" in (left.type, right.type) or "null" in (left.type, right.type)):
            raise bad(f"'{op}' cannot compare {left.type} values")
        return Compare(op, left, right)

    def operand(self) -> Expr:
        tok = self.take()
        if tok.text == "(":
            inner = self.or_()
            self.expect(")")
            return inner
        if tok.kind == "string":
            return Const(tok.text[1:-1].replace("''", "'"), "string")
        if tok.kind == "number":
            return Const(float(tok.text), "decimal") if "." in tok.text else Const(int(tok.text), "int")
        if tok.kind == "datetime":
            try:
                return Const(datetime.fromisoformat(tok.text), "datetime")
            except ValueError:
                raise bad(f"{tok.text!r} is not a valid date-time") from None
        if tok.kind == "date":
            try:
                return Const(date.fromisoformat(tok.text), "date")
            except ValueError:
                raise bad(f"{tok.text!r} is not a valid date") from None
        if tok.kind == "name":
            if tok.text in {"true", "false"}:
                return Const(tok.text == "true", "bool")
            if tok.text == "null":
                return Const(None, "null")
            nxt = self.peek()
            if nxt is not None and nxt.text == "(":
                return self.function(tok)
            return self.prop(tok)
        raise bad(f"syntax error at position {tok.pos} in $filter: unexpected {tok.text!r}")

    def prop(self, tok: _Tok) -> Prop:
        kind = self.schema.get(tok.text)
        if kind is None:
            raise bad(f"could not find a property named '{tok.text}' on type 'Pbx.{self.entity}'", tok.text)
        if kind in {"array", "object"}:
            raise bad(f"property '{tok.text}' cannot be compared in $filter", tok.text)
        return Prop(tok.text, cast(ValueType, kind))

    def function(self, tok: _Tok) -> FuncCall:
        arity = _FUNCTIONS.get(tok.text)
        if arity is None:
            raise bad(f"unknown function '{tok.text}' in $filter; supported: {', '.join(sorted(_FUNCTIONS))}")
        self.expect("(")
        args = [self.or_()]
        while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
            self.take()
            args.append(self.or_())
        self.expect(")")
        if len(args) != arity:
            raise bad(f"{tok.text}() takes {arity} argument{'s' if arity > 1 else ''}, not {len(args)}")
        if tok.text == "date":
            if args[0].type != "datetime":
                raise bad("date() needs a date-time property, e.g. date(SegmentStartTime)")
            return FuncCall("date", tuple(args), "date")
        if any(a.type not in {"string", "null"} for a in args):
            raise bad(f"{tok.text}() works on strings")
        return FuncCall(tok.text, tuple(args), "string" if tok.text in {"tolower", "toupper"} else "bool")


# ----------------------------------------------------------------------------------------------------------- evaluation


def _value(expr: Expr, row: Mapping[str, Any]) -> Any:
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Prop):
        raw = row.get(expr.name)
        if expr.type == "datetime" and isinstance(raw, str):
            return datetime.fromisoformat(raw)
        return raw
    if isinstance(expr, FuncCall):
        args = [_value(a, row) for a in expr.args]
        if any(a is None for a in args):
            return None
        if expr.name == "date":
            return args[0].date()
        if expr.name == "tolower":
            return args[0].lower()
        if expr.name == "toupper":
            return args[0].upper()
        return {"contains": str.__contains__, "startswith": str.startswith, "endswith": str.endswith}[expr.name](
            args[0], args[1]
        )
    if isinstance(expr, Logical):
        values = [bool(_value(a, row)) for a in expr.args]
        if expr.op == "not":
            return not values[0]
        return all(values) if expr.op == "and" else any(values)
    left, right = _value(expr.left, row), _value(expr.right, row)
    if expr.op == "eq":
        return left == right
    if expr.op == "ne":
        return left != right
    if left is None or right is None:
        return False
    return {"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[expr.op]


def parse_filter(text: str, schema: Schema, entity: str) -> Expr:
    return _Parser(text, schema, entity).parse()


def matches(expr: Expr, row: Mapping[str, Any]) -> bool:
    return bool(_value(expr, row))


# ----------------------------------------------------------------------------------------------------------- options

_KNOWN = {"$filter", "$orderby", "$select", "$top", "$skip", "$count", "$expand", "$search"}


@dataclass(frozen=True)
class Query:
    filter: Expr | None = None
    orderby: tuple[tuple[str, bool], ...] = ()  # (property, descending)
    select: tuple[str, ...] | None = None
    top: int | None = None
    skip: int = 0
    count: bool = False


def _names(text: str, option: str, schema: Schema, entity: str) -> list[str]:
    names = [part.strip() for part in text.split(",")]
    for name in names:
        if name not in schema:
            raise bad(f"could not find a property named '{name}' on type 'Pbx.{entity}' ({option})", name)
    return names


def _nonnegative(text: str, option: str) -> int:
    if not re.fullmatch(r"\d+", text.strip()):
        raise bad(f"{option} must be a non-negative integer, not {text!r}")
    return int(text)


def parse_query(params: Mapping[str, str], schema: Schema, entity: str, *, collection: bool = True) -> Query:
    """Parse the system query options of one request (custom options without ``$`` are ignored, as OData does)."""
    for key in params:
        if key.startswith("$") and key not in _KNOWN:
            raise bad(f"the query parameter '{key}' is not supported")
    for unsupported in ("$expand", "$search"):
        if unsupported in params:
            raise bad(f"{unsupported} is not supported by the simulator")
    if not collection:
        for key in ("$filter", "$orderby", "$top", "$skip", "$count"):
            if key in params:
                raise bad(f"{key} applies to collections, not to a single entity")
    filter_ = parse_filter(params["$filter"], schema, entity) if params.get("$filter", "").strip() else None
    orderby: list[tuple[str, bool]] = []
    if "$orderby" in params:
        for part in params["$orderby"].split(","):
            words = part.split()
            if not words or len(words) > 2 or (len(words) == 2 and words[1] not in {"asc", "desc"}):
                raise bad(f"$orderby items are 'Property' or 'Property asc|desc', not {part.strip()!r}")
            _names(words[0], "$orderby", schema, entity)
            if schema[words[0]] in {"array", "object"}:
                raise bad(f"cannot order by '{words[0]}'", words[0])
            orderby.append((words[0], len(words) == 2 and words[1] == "desc"))
    select = tuple(_names(params["$select"], "$select", schema, entity)) if "$select" in params else None
    count = params.get("$count", "false").strip()
    if count not in {"true", "false"}:
        raise bad(f"$count must be true or false, not {count!r}")
    return Query(
        filter=filter_,
        orderby=tuple(orderby),
        select=select,
        top=_nonnegative(params["$top"], "$top") if "$top" in params else None,
        skip=_nonnegative(params["$skip"], "$skip") if "$skip" in params else 0,
        count=count == "true",
    )


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, str):
        try:
            return (1, datetime.fromisoformat(value)) if re.match(r"\d{4}-\d{2}-\d{2}T", value) else (1, value)
        except ValueError:
            return (1, value)
    return (0, 0) if value is None else (1, value)


def project(row: Mapping[str, Any], select: Sequence[str] | None) -> dict[str, Any]:
    return dict(row) if select is None else {name: row.get(name) for name in select}


def apply(query: Query, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Filter, count, order, page and project: the collection response ``{"@odata.count"?, "value"}``."""
    selected = [row for row in rows if query.filter is None or matches(query.filter, row)]
    for name, descending in reversed(query.orderby):
        selected.sort(key=lambda row, n=name: _sort_key(row.get(n)), reverse=descending)  # type: ignore[misc]
    page = selected[query.skip :]
    if query.top is not None:
        page = page[: query.top]
    body: dict[str, Any] = {}
    if query.count:
        body["@odata.count"] = len(selected)
    body["value"] = [project(row, query.select) for row in page]
    return body
