"""A small, safe expression language for runbook conditions and parameter values.

Expressions use Python's *syntax* (parsed with :func:`ast.parse`, never evaluated by Python): literals,
``and`` / ``or`` / ``not``, comparisons (``== != < <= > >= in not in``), arithmetic (``+ - * / %``),
dotted and indexed access into the evaluation context (``steps.queue.value``, ``labels["pod"]``),
list literals, and a few pure functions (``len min max abs round float int str lower``, and ``promql(x)``,
which quotes and escapes x as a PromQL string literal, so a label value cannot break out of a query).
``true``, ``false`` and ``null`` are accepted as spellings of the constants. Anything else (calls of
other names, lambdas, comprehensions, attribute names starting with ``_``) is refused when the
expression is compiled, so a runbook linter catches it.

Missing values read as ``null``; an ordering comparison (``<``, ``>`` …) with ``null`` is false rather than an
error, so ``steps.p95.value > 5`` is simply false when that step was skipped. Arithmetic on ``null`` raises
:class:`ExprError`.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.errors import PermanentError
from bot.severity import promql_string

MAX_LENGTH = 2000


class ExprError(PermanentError):
    """An expression is malformed, uses something not allowed, or failed to evaluate."""


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "min": min,
    "max": max,
    "abs": abs,
    "round": round,
    "float": float,
    "int": int,
    "str": str,
    "lower": lambda s: str(s).lower(),
    "promql": lambda s: promql_string(str(s)),
}
_CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: b is not None and a in b,
    ast.NotIn: lambda a, b: b is None or a not in b,
}
_ORDERING = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
}


@dataclass(frozen=True)
class Expression:
    """A compiled expression: its source, its syntax tree and the context paths it reads."""

    source: str
    tree: ast.Expression
    references: tuple[tuple[str, ...], ...]

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """Evaluate against *context* (a mapping of root names to plain values)."""
        try:
            return _Evaluator(context).visit(self.tree.body)
        except ExprError:
            raise
        except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
            raise ExprError(f"{self.source!r}: {type(exc).__name__}: {exc}") from exc

    def truth(self, context: Mapping[str, Any]) -> bool:
        """Evaluate as a condition."""
        return bool(self.evaluate(context))


def compile_expr(source: str, *, roots: Iterable[str] | None = None) -> Expression:
    """Parse and check *source*; ExprError names what is wrong (roots: the allowed top-level names)."""
    text = source.strip()
    if not text:
        raise ExprError("empty expression")
    if len(text) > MAX_LENGTH:
        raise ExprError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"{text!r}: syntax error: {exc.msg} (column {exc.offset})") from None
    checker = _Checker(set(roots) if roots is not None else None)
    checker.visit(tree.body)
    return Expression(source=text, tree=tree, references=tuple(checker.references))


def _path(node: ast.AST) -> tuple[str, ...] | None:
    """The dotted path of a Name/Attribute/constant-Subscript chain, or None."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            parts.append(str(node.slice.value))
            node = node.value
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            return tuple(reversed(parts))
        else:
            return None


class _Checker(ast.NodeVisitor):
    """Refuses every node kind the language does not have; collects the context paths read."""

    def __init__(self, roots: set[str] | None) -> None:
        self.roots = roots
        self.references: list[tuple[str, ...]] = []

    def generic_visit(self, node: ast.AST) -> None:
        raise ExprError(f"{type(node).__name__} is not allowed in expressions")

    def visit_Constant(self, node: ast.Constant) -> None:
        if not isinstance(node.value, int | float | str | bool | type(None)):
            raise ExprError(f"constant {node.value!r} is not allowed")

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in _CONSTANTS:
            return
        if self.roots is not None and node.id not in self.roots:
            raise ExprError(f"unknown name {node.id!r} (known: {', '.join(sorted(self.roots))})")
        self.references.append((node.id,))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr.startswith("_"):
            raise ExprError(f"attribute {node.attr!r} is not allowed")
        self._access(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.slice, ast.Slice):
            raise ExprError("slices are not allowed")
        self.visit(node.slice)
        self._access(node)

    def _access(self, node: ast.Attribute | ast.Subscript) -> None:
        path = _path(node)
        if path is not None:
            if path[0] in _CONSTANTS:
                raise ExprError(f"{path[0]} has no attributes")
            if self.roots is not None and path[0] not in self.roots:
                raise ExprError(f"unknown name {path[0]!r} (known: {', '.join(sorted(self.roots))})")
            self.references.append(path)
        else:
            self.visit(node.value)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        for value in node.values:
            self.visit(value)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if not isinstance(node.op, ast.Not | ast.USub | ast.UAdd):
            raise ExprError(f"operator {type(node.op).__name__} is not allowed")
        self.visit(node.operand)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if type(node.op) not in _BINARY:
            raise ExprError(f"operator {type(node.op).__name__} is not allowed")
        self.visit(node.left)
        self.visit(node.right)

    def visit_Compare(self, node: ast.Compare) -> None:
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise ExprError(f"comparison {type(op).__name__} is not allowed")
        self.visit(node.left)
        for comparator in node.comparators:
            self.visit(comparator)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self.visit(node.test)
        self.visit(node.body)
        self.visit(node.orelse)

    def visit_List(self, node: ast.List) -> None:
        for element in node.elts:
            self.visit(element)

    def visit_Tuple(self, node: ast.Tuple) -> None:
        for element in node.elts:
            self.visit(element)

    def visit_Call(self, node: ast.Call) -> None:
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise ExprError(f"only these functions may be called: {', '.join(sorted(_FUNCTIONS))}")
        if node.keywords:
            raise ExprError("keyword arguments are not allowed")
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise ExprError("*args is not allowed")
            self.visit(arg)


def _member(value: Any, key: Any) -> Any:
    """value[key] or value.key on plain data; missing reads as None."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value.get(key)
    if isinstance(value, Sequence) and not isinstance(value, str):
        if isinstance(key, int) and not isinstance(key, bool) and -len(value) <= key < len(value):
            return value[key]
        return None
    raise ExprError(f"cannot read {key!r} of a {type(value).__name__}")


class _Evaluator(ast.NodeVisitor):
    """Walks a checked tree over plain data (dicts, lists, numbers, strings)."""

    def __init__(self, context: Mapping[str, Any]) -> None:
        self.context = context

    def generic_visit(self, node: ast.AST) -> Any:
        raise ExprError(f"{type(node).__name__} is not allowed in expressions")

    def visit_Constant(self, node: ast.Constant) -> Any:
        return node.value

    def visit_Name(self, node: ast.Name) -> Any:
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        return self.context.get(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> Any:
        return _member(self.visit(node.value), node.attr)

    def visit_Subscript(self, node: ast.Subscript) -> Any:
        return _member(self.visit(node.value), self.visit(node.slice))

    def visit_BoolOp(self, node: ast.BoolOp) -> Any:
        if isinstance(node.op, ast.And):
            result: Any = True
            for value in node.values:
                result = self.visit(value)
                if not result:
                    return result
            return result
        result = False
        for value in node.values:
            result = self.visit(value)
            if result:
                return result
        return result

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        operand = self.visit(node.operand)
        if isinstance(node.op, ast.Not):
            return not operand
        if operand is None:
            raise ExprError("arithmetic on null")
        return -operand if isinstance(node.op, ast.USub) else +operand

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        left, right = self.visit(node.left), self.visit(node.right)
        if left is None or right is None:
            raise ExprError("arithmetic on null")
        return _BINARY[type(node.op)](left, right)

    def visit_Compare(self, node: ast.Compare) -> Any:
        left = self.visit(node.left)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = self.visit(comparator)
            if isinstance(op, _ORDERING) and (left is None or right is None):
                return False
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True

    def visit_IfExp(self, node: ast.IfExp) -> Any:
        return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)

    def visit_List(self, node: ast.List) -> Any:
        return [self.visit(e) for e in node.elts]

    def visit_Tuple(self, node: ast.Tuple) -> Any:
        return [self.visit(e) for e in node.elts]

    def visit_Call(self, node: ast.Call) -> Any:
        assert isinstance(node.func, ast.Name)
        return _FUNCTIONS[node.func.id](*(self.visit(a) for a in node.args))


# --- ${…} placeholders in runbook values ---------------------------------------------------------


def placeholders(text: str) -> list[str]:
    """The expressions inside ``${…}`` in *text*, in order (ExprError on an unclosed one)."""
    out = []
    start = 0
    while (begin := text.find("${", start)) != -1:
        end = text.find("}", begin)
        if end == -1:
            raise ExprError(f"unclosed '${{' in {text!r}")
        out.append(text[begin + 2 : end])
        start = end + 1
    return out


def is_whole_placeholder(value: object) -> bool:
    """Whether *value* is a string that is exactly one ``${…}`` (its result keeps its type)."""
    return (
        isinstance(value, str)
        and value.startswith("${")
        and value.endswith("}")
        and value.find("}") == len(value) - 1
    )


def check_value(value: Any, roots: Iterable[str]) -> list[Expression]:
    """Compile every placeholder inside a (nested) runbook value; ExprError on the first bad one."""
    roots = list(roots)
    found = []
    if isinstance(value, str):
        found = [compile_expr(p, roots=roots) for p in placeholders(value)]
    elif isinstance(value, Mapping):
        for item in value.values():
            found += check_value(item, roots)
    elif isinstance(value, list):
        for item in value:
            found += check_value(item, roots)
    return found


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Replace placeholders in a nested value: a whole ``${x}`` keeps x's type, embedded ones become text."""
    if isinstance(value, str):
        if is_whole_placeholder(value):
            return compile_expr(value[2:-1]).evaluate(context)
        out = value
        for source in placeholders(value):
            result = compile_expr(source).evaluate(context)
            out = out.replace("${" + source + "}", "" if result is None else str(result), 1)
        return out
    if isinstance(value, Mapping):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    return value
