"""Spec base class, YAML loading with line numbers, and precise one-line errors.

Every spec family (problems, optimizers, tuning, instruments, suites) is a pydantic
discriminated union on the key ``kind``. This module knows nothing about the families; it
turns a YAML file into a validated spec object, or into a :class:`SpecError` that lists every
problem in the file at once, one line each::

    specs/optimizers/adam.yaml:3: lr: input should be greater than 0 (got -0.001)
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

Loc = tuple[str | int, ...]


def _not_bool(value: Any) -> Any:
    # YAML's true/yes/on would otherwise pass as 1 for numeric fields
    if isinstance(value, bool):
        raise ValueError("input should be a number, not a boolean")
    return value


_Number = BeforeValidator(_not_bool)
PositiveFloat = Annotated[float, Field(gt=0), _Number]
NonNegativeFloat = Annotated[float, Field(ge=0), _Number]
Probability = Annotated[float, Field(ge=0, lt=1), _Number]
OpenProbability = Annotated[float, Field(gt=0, lt=1), _Number]
PositiveInt = Annotated[int, Field(gt=0), _Number]
NonNegativeInt = Annotated[int, Field(ge=0), _Number]
"""Numeric field types for specs: booleans, infinities and NaN are rejected."""


class Spec(BaseModel):
    """Base of every spec: immutable; unknown keys, infinities and NaN are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    def check(self) -> list[tuple[Loc, str, Any]]:
        """Checks beyond field types, as ``(loc, message, value)`` triples; none by default."""
        return []


@dataclass(frozen=True)
class Issue:
    """One problem found in one spec file."""

    file: str
    line: int | None
    loc: Loc
    message: str
    value: Any = None
    show_value: bool = False

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [where]
        if self.loc:
            parts.append(dotted(self.loc))
        text = self.message
        if self.show_value:
            text += f" (got {format_value(self.value)})"
        parts.append(text)
        return ": ".join(parts)


class SpecError(Exception):
    """One or more problems in spec files; ``str()`` gives one line per problem."""

    def __init__(self, issues: Sequence[Issue]):
        self.issues = sorted(issues, key=lambda i: (i.file, i.line or 0))
        super().__init__("\n".join(str(i) for i in self.issues))


def dotted(loc: Loc) -> str:
    """``('problems', 2, 'lr')`` -> ``problems[2].lr``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def format_value(value: Any) -> str:
    """Render a user's value compactly, the way they would have typed it in YAML."""
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def suggest(word: str, allowed: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when a close match exists, else ``""``."""
    match = difflib.get_close_matches(str(word), list(allowed), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def choices(word: str, allowed: Sequence[str], label: str = "allowed") -> str:
    """``"; did you mean 'x'? allowed: a, b"`` (the suggestion only when one is close)."""
    listing = f"{label}: {', '.join(allowed) if allowed else 'none'}"
    hint = suggest(word, allowed)
    return f"{hint} {listing}" if hint else f"; {listing}"


def article(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


# --------------------------------------------------------------------------- YAML


@dataclass
class Document:
    """A parsed YAML file: its data and the line of every key and list item."""

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    """Problems found while parsing that did not stop it (duplicate or non-string keys)."""

    def line(self, loc: Loc) -> int | None:
        """Line of ``loc``, or of its closest ancestor that has one."""
        for end in range(len(loc), -1, -1):
            if loc[:end] in self.lines:
                return self.lines[loc[:end]]
        return None


def read_yaml(path: Path, display: str | None = None) -> Document:
    """Parse one YAML file, recording the line number of every key and list item.

    Duplicate and non-string keys do not stop parsing: they land in ``Document.issues``.

    Raises:
        SpecError: the path is not a readable file, or not valid YAML.
    """
    name = display or str(path)
    if path.is_dir():
        raise SpecError([Issue(name, None, (), "is a directory, expected a YAML file")])
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError([Issue(name, None, (), "no such file")]) from None
    except OSError as exc:
        message = f"cannot read file: {exc.strerror or exc}"
        raise SpecError([Issue(name, None, (), message)]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = raw[:exc.start].count(b"\n") + 1
        message = f"not UTF-8 text: {exc.reason} (byte 0x{raw[exc.start]:02x}); save it as UTF-8"
        raise SpecError([Issue(name, at, (), message)]) from None
    doc = Document(path, None, {(): 1})
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
        if node is not None:
            doc.lines[()] = node.start_mark.line + 1
            doc.data = _construct(loader, node, (), doc, name)
    except yaml.reader.ReaderError as exc:
        at = text[:exc.position].count("\n") + 1
        message = f"invalid YAML: control character U+{exc.character:04X} is not allowed"
        raise SpecError([Issue(name, at, (), message)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        message = f"invalid YAML: {_yaml_problem(exc, line)}"
        raise SpecError([Issue(name, line, (), message)]) from None
    except yaml.YAMLError as exc:
        flat = " ".join(str(exc).split())
        raise SpecError([Issue(name, None, (), f"invalid YAML: {flat}")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return doc


_YAML_HINTS = {
    "mapping values are not allowed here":
        "mapping values are not allowed here; check the indentation, or quote a value that "
        "contains ': '",
    "found character '\\t' that cannot start any token":
        "found a tab character; indent YAML with spaces, not tabs",
}


def _yaml_problem(exc: yaml.MarkedYAMLError, line: int | None) -> str:
    """PyYAML's problem as one readable clause, with where its context started."""
    problem = exc.problem or ""
    if problem in _YAML_HINTS:
        return _YAML_HINTS[problem]
    if not exc.context:
        return problem or "invalid YAML"
    if not problem:
        return exc.context
    if problem.startswith("but "):
        return f"{exc.context}, {problem}"
    where = exc.context_mark.line + 1 if exc.context_mark else None
    started = f" that starts on line {where}" if where is not None and where != line else ""
    return f"{problem} ({exc.context}{started})"


def _construct(loader: yaml.SafeLoader, node: yaml.Node, loc: Loc, doc: Document,
               name: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                doc.issues.append(Issue(name, line, loc, "keys must be strings", key, True))
                continue
            if key in out:
                first = doc.lines[(*loc, key)]
                doc.issues.append(Issue(name, line, (*loc, key),
                                        f"duplicate key (first given on line {first})"))
                continue
            doc.lines[(*loc, key)] = line
            out[key] = _construct(loader, value_node, (*loc, key), doc, name)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            doc.lines[(*loc, index)] = item.start_mark.line + 1
            items.append(_construct(loader, item, (*loc, index), doc, name))
        return items
    return loader.construct_object(node, deep=True)


# ------------------------------------------------------------------ families


def union_members(union: Any) -> dict[str, type[Spec]]:
    """``kind`` value -> spec class, read from an ``Annotated[A | B, ...]`` union."""
    if get_origin(union) is typing.Annotated:
        union = get_args(union)[0]
    members: dict[str, type[Spec]] = {}
    for cls in get_args(union) or (union,):
        kind_field = cls.model_fields["kind"]
        for value in get_args(kind_field.annotation):
            members[value] = cls
    return members


@dataclass(frozen=True)
class Family:
    """A plug-in family: its directory name, its noun, and its registry (the union)."""

    dirname: str
    noun: str
    union: Any

    @property
    def members(self) -> dict[str, type[Spec]]:
        return union_members(self.union)


def parse_spec(family: Family, doc: Document, display: str) -> Spec:
    """Validate a parsed document against a family's union.

    Raises:
        SpecError: every problem in the document (including ``doc.issues``), one issue each.
    """

    def fail(*issues: Issue) -> SpecError:
        return SpecError([*doc.issues, *issues])

    data = doc.data
    if data is None:
        raise fail(Issue(display, None, (), f"empty file; expected {article(family.noun)} spec"))
    if not isinstance(data, Mapping):
        raise fail(Issue(display, doc.line(()), (),
                         f"expected a mapping of fields, got a {_yaml_type(data)}"))
    members = family.members
    kinds = sorted(members)
    if "kind" not in data:
        raise fail(Issue(display, doc.line(()), ("kind",),
                         f"field required; allowed: {', '.join(kinds)}"))
    kind = data["kind"]
    if not isinstance(kind, str):
        raise fail(Issue(display, doc.line(("kind",)), ("kind",),
                         f"expected the name of {article(family.noun)} kind; allowed: "
                         f"{', '.join(kinds)}", kind, True))
    if kind not in members:
        message = f"unknown {family.noun} kind {format_value(kind)}{choices(kind, kinds)}"
        raise fail(Issue(display, doc.line(("kind",)), ("kind",), message))
    cls = members[kind]
    try:
        spec = cls.model_validate(dict(data))
    except ValidationError as exc:
        raise fail(*issues_from_validation(exc, cls, doc, display)) from None
    problems = [Issue(display, doc.line(loc), loc, message, value, _worth_showing(value, message))
                for loc, message, value in spec.check()]
    if doc.issues or problems:
        raise fail(*problems)
    return spec


def _yaml_type(value: Any) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def issues_from_validation(exc: ValidationError, cls: type[BaseModel], doc: Document,
                           display: str) -> list[Issue]:
    """Translate pydantic errors into one-line issues with lines and suggestions."""
    issues: list[Issue] = []
    for error in exc.errors(include_url=False):
        raw: Loc = tuple(error["loc"])  # may hold union tags, e.g. ('space', 'lr', 'choice')
        loc: Loc = _walk(cls, raw)[0]
        kind = error["type"]
        value = error.get("input")
        line = doc.line(loc)
        if kind == "extra_forbidden":
            name = str(loc[-1])
            fields = _fields_at(cls, raw[:-1])
            message = f"unknown field '{name}'" + (choices(name, fields) if fields else "")
            issues.append(Issue(display, line, loc, message))
        elif kind == "union_tag_invalid":
            tag = str((error.get("ctx") or {}).get("tag", value))
            expected = sorted(_tagged_members(_unwrap(_walk(cls, raw)[1])))
            message = f"unknown kind '{tag}'" + (choices(tag, expected) if expected else "")
            issues.append(Issue(display, doc.line((*loc, "kind")), loc, message))
        elif kind == "missing":
            expected = _expected_literals(cls, raw)
            allowed = f"; allowed: {', '.join(expected)}" if expected else ""
            issues.append(Issue(display, line, loc, f"field required{allowed}"))
        elif kind in {"literal_error", "enum"}:
            expected = _expected_literals(cls, raw)
            if expected:
                message = f"invalid value{choices(str(value), expected)}"
            else:
                message = _lower_first(error["msg"])
            issues.append(Issue(display, line, loc, message, value, True))
        else:
            message = _message(error, cls, raw)
            issues.append(Issue(display, line, loc, message, value,
                                _worth_showing(value, message)))
    return issues


def _message(error: Any, cls: type[BaseModel], loc: Loc) -> str:
    """Pydantic's message for one error, in the words of a YAML user."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "too_short":
        noun = "mapping" if ctx.get("field_type") == "Dictionary" else "list"
        count = ctx.get("min_length", 1)
        return f"{noun} should have at least {count} item{'s' if count != 1 else ''}"
    if kind == "int_from_float":
        return "input should be a valid integer"
    if kind in {"dict_type", "model_attributes_type"}:
        return "input should be a mapping"
    if kind == "string_pattern_mismatch":
        description = _description(cls, loc)
        if description:
            return f"invalid format, expected {_lower_first(description)}"
    message = _lower_first(error["msg"])
    return message.removeprefix("value error, ")


def _worth_showing(value: Any, message: str) -> bool:
    """Whether ``(got value)`` adds to ``message``: not for mappings, nor if already quoted."""
    if isinstance(value, Mapping):
        return False
    return not (isinstance(value, str) and format_value(value) in message)


def _description(cls: type[BaseModel], loc: Loc) -> str | None:
    model = _model_at(cls, loc[:-1])
    if model is None or not loc or isinstance(loc[-1], int):
        return None
    info = model.model_fields.get(str(loc[-1]))
    return info.description if info else None


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _walk(cls: type[BaseModel], loc: Loc) -> tuple[Loc, Any]:
    """Follow pydantic's ``loc`` through the type of ``cls``.

    Returns the loc as the user sees it (without the tags pydantic inserts for discriminated
    unions) and the annotation at its end (None where the path leaves the known types).
    """
    shown: list[str | int] = []
    current: Any = cls
    for part in loc:
        current = _unwrap(current)
        members = _tagged_members(current)
        if isinstance(part, str) and part in members:
            current = members[part]  # a union tag: not part of the user's path
            continue
        shown.append(part)
        current = _step(current, part)
    return tuple(shown), current


def _unwrap(annotation: Any) -> Any:
    """Strip ``Annotated`` and ``| None``."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
            continue
        args = get_args(annotation)
        if _is_union(annotation) and type(None) in args and len(args) == 2:
            annotation = next(a for a in args if a is not type(None))
            continue
        return annotation


def _is_union(annotation: Any) -> bool:
    return get_origin(annotation) in (typing.Union, types.UnionType)


def _tagged_members(annotation: Any) -> dict[str, Any]:
    """``kind`` value -> member, for a union of spec models (else empty)."""
    if not _is_union(annotation):
        return {}
    members: dict[str, Any] = {}
    for arg in get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel) and "kind" in arg.model_fields:
            for value in get_args(arg.model_fields["kind"].annotation):
                members[value] = arg
    return members


def _step(annotation: Any, part: str | int) -> Any:
    if annotation is None:
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        info = annotation.model_fields.get(part) if isinstance(part, str) else None
        return info.annotation if info else None
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (list, set, frozenset, tuple) and isinstance(part, int) and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    return None


def _model_at(cls: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class that owns the fields at ``loc`` (None if unknown or ambiguous)."""
    current = _unwrap(_walk(cls, loc)[1])
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _fields_at(cls: type[BaseModel], loc: Loc) -> list[str]:
    model = _model_at(cls, loc)
    if model is None:
        return []
    return sorted(model.model_fields, key=lambda name: (name != "kind", name))


def _expected_literals(cls: type[BaseModel], loc: Loc) -> list[str]:
    model = _model_at(cls, loc[:-1])
    if model is None or isinstance(loc[-1], int):
        return []
    info = model.model_fields.get(str(loc[-1]))
    return _literal_values(info.annotation) if info else []


def _literal_values(annotation: Any) -> list[str]:
    if get_origin(annotation) is Literal:
        return [str(v) for v in get_args(annotation)]
    values: list[str] = []
    for arg in get_args(annotation):
        values += _literal_values(arg)
    return values

