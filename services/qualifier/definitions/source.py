"""Reading a definition from the text people write: YAML or JSON, errors named by line. Pure.

The people who write a definition edit a file, so a problem is reported where they
will look for it: the line (and column) in their text, and the field path.

Reading costs time in proportion to the text: anchors and aliases are refused before
anything is built (five levels of ten aliases each make a few hundred bytes expand to
100,000 items; `a: &a [*a]` contains itself), and so is nesting past MAX_NESTING. The
caller caps the text's size and reads it off the event loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from services.qualifier.definitions.conditions import ConditionError, Path, dotted
from services.qualifier.definitions.model import NEW, LeadDefinition

# Collections inside collections. A real definition nests about ten deep
# (score[0].when.any[1].all[0]...); the refusal comes before any recursive step.
MAX_NESTING = 32
# libyaml's parser when the PyYAML build has it: several times faster than pure Python.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Problem:
    loc: Path
    msg: str
    type: str
    line: int | None = None
    column: int | None = None

    def detail(self) -> dict[str, Any]:
        """One item of a 422 body, shaped like FastAPI's own (`loc` starts at `body`)."""
        where = f"line {self.line}: " if self.line else ""
        field = f"{dotted(self.loc)}: " if self.loc else ""
        item: dict[str, Any] = {
            "loc": ["body", *self.loc],
            "msg": f"{where}{field}{self.msg}",
            "type": self.type,
        }
        if self.line:
            item["line"], item["column"] = self.line, self.column
        return item


class DefinitionInvalid(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.detail()["msg"] for p in problems))


@dataclass(frozen=True)
class LoadedDefinition:
    definition: LeadDefinition
    # The canonical JSON form stored and compared: defaults filled in, YAML-only types gone.
    document: dict[str, Any]


def load_definition(text: str) -> LoadedDefinition:
    """Parse and check a definition; raise DefinitionInvalid listing every problem found."""
    if not text.strip():
        raise DefinitionInvalid([Problem((), "the definition is empty", "missing")])
    root, raw = _parse(text)
    if not isinstance(raw, dict):
        raise DefinitionInvalid(
            [
                Problem(
                    (),
                    "a lead definition is a mapping (a YAML or JSON object)",
                    "type_error",
                    *_mark(root),
                )
            ]
        )
    if root is not None:
        duplicates = list(_duplicate_keys(root, ()))
        if duplicates:
            raise DefinitionInvalid(duplicates)
    try:
        definition = LeadDefinition.model_validate(raw, context=NEW)
    except ValidationError as exc:
        raise DefinitionInvalid([_problem(err, root) for err in exc.errors()]) from None
    return LoadedDefinition(
        definition=definition, document=definition.model_dump(mode="json", exclude_none=True)
    )


def check_stored(document: dict[str, Any]) -> list[Problem]:
    """What a stored version written before today's checks breaks of them (to refuse its
    publication): its patterns must run on RE2. Locations are paths in the document."""
    try:
        LeadDefinition.model_validate(document, context=NEW)
    except ValidationError as exc:
        return [_problem(err, None) for err in exc.errors()]
    return []


def _parse(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the plain document. YAML takes JSON too."""
    try:
        _refuse_expansion(text)
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            return root, None if root is None else loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as yaml_error:
        # Valid JSON that YAML refuses (tabs for indentation, say) is still a definition.
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            pass
        else:
            if _nesting_over_limit(document):
                raise DefinitionInvalid([_too_deep(None)]) from None
            return None, document
        mark = yaml_error.problem_mark or yaml_error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = yaml_error.problem or str(yaml_error)
        raise DefinitionInvalid(
            [Problem((), f"not valid YAML or JSON: {problem}", "syntax_error", line, column)]
        ) from None
    except yaml.YAMLError as yaml_error:
        raise DefinitionInvalid(
            [Problem((), f"not valid YAML or JSON: {yaml_error}", "syntax_error")]
        ) from None
    except DefinitionInvalid:
        raise
    except ValueError as value_error:
        # A value its tag cannot be: `2026-13-01` as a date, an integer of 5,000 digits.
        raise DefinitionInvalid(
            [Problem((), f"not valid YAML or JSON: {value_error}", "syntax_error")]
        ) from None


def _refuse_expansion(text: str) -> None:
    """Refuse anchors, aliases and deep nesting, from the parser's events: nothing built yet."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            raise DefinitionInvalid(
                [
                    Problem(
                        (),
                        "YAML anchors and aliases (&name, *name) are not accepted in a "
                        "definition: write each value out",
                        "yaml_alias",
                        *_event_mark(event),
                    )
                ]
            )
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_NESTING:
                raise DefinitionInvalid([_too_deep(event)])
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _too_deep(event: yaml.Event | None) -> Problem:
    return Problem(
        (),
        f"lists and mappings nested more than {MAX_NESTING} deep",
        "too_deep",
        *_event_mark(event),
    )


def _event_mark(event: yaml.Event | None) -> tuple[int | None, int | None]:
    mark = event.start_mark if event is not None else None
    return (mark.line + 1, mark.column + 1) if mark is not None else (None, None)


def _nesting_over_limit(document: Any) -> bool:
    """Whether a JSON document nests past MAX_NESTING (walked without recursion)."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            if depth > MAX_NESTING:
                return True
            stack.extend((item, depth + 1) for item in value)
    return False


def _mark(node: yaml.Node | None) -> tuple[int | None, int | None]:
    if node is None:
        return None, None
    return node.start_mark.line + 1, node.start_mark.column + 1


def _duplicate_keys(node: yaml.Node, path: Path) -> Any:
    """YAML silently keeps the last of two equal keys; a definition author wants to know."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                yield Problem(
                    (*path, name),
                    "this key appears twice in the same mapping",
                    "duplicate_key",
                    *_mark(key),
                )
            seen.add(name)
            yield from _duplicate_keys(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*path, i))


def _problem(err: Any, root: yaml.Node | None) -> Problem:
    loc: Path = tuple(err["loc"])
    msg: str = err["msg"]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, ConditionError):
        # A condition's own path continues the field's location into the mapping.
        loc, msg = (*loc, *cause.path), cause.message
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (not part of the lead definition format)"
    return Problem(loc, msg, err["type"], *_mark(_node_at(root, loc)))


def _node_at(root: yaml.Node | None, loc: Path) -> yaml.Node | None:
    """The node a location points at, or the nearest enclosing one (a missing key's parent).

    A mapping entry is reported at its key, which is where the reader's eye goes.
    """
    node = root
    for depth, part in enumerate(loc, start=1):
        if isinstance(node, yaml.MappingNode):
            entry = next(((k, v) for k, v in node.value if str(k.value) == str(part)), None)
            if entry is None:
                return node
            key, value = entry
            if depth == len(loc):
                return key
            node = value
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return node
            node = node.value[part]
        else:
            return node
    return node


def parse_document(text: str) -> tuple[yaml.Node | None, Any]:
    """YAML or JSON under the same bounds as a definition (no anchors or aliases, nesting
    at most MAX_NESTING), with duplicate keys refused: for other documents sales operations
    writes (CRM connectors). Raises DefinitionInvalid."""
    root, raw = _parse(text)
    if root is not None:
        duplicates = list(_duplicate_keys(root, ()))
        if duplicates:
            raise DefinitionInvalid(duplicates)
    return root, raw


def validation_problems(exc: ValidationError, root: yaml.Node | None) -> list[Problem]:
    """A pydantic error as problems naming each field (and its line, from `root`)."""
    return [_problem(err, root) for err in exc.errors()]
