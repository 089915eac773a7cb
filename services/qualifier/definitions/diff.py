"""What changed between two definition versions, field by field and line by line. Pure.

Partners and sales teams are matched by their id and team name, so moving or adding
one shows as that one change, not as every later list item changing.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Literal

# Lists whose items carry their own identity.
_KEYED_LISTS = {"partners": "id", "sales_teams": "team"}


class _Key(str):
    """A list item named by its identity: `partners[webstudio]`."""


Path = tuple[str | int, ...]


def dotted(path: Path) -> str:
    text = ""
    for part in path:
        if isinstance(part, (int, _Key)):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


@dataclass(frozen=True)
class Change:
    path: str
    kind: Literal["added", "removed", "changed"]
    old: Any = None
    new: Any = None


def diff_documents(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Changes from `old` to `new` (both canonical documents), in document order."""
    changes: list[Change] = []
    _diff(old, new, (), changes)
    return changes


def diff_text(old: str, new: str, old_name: str, new_name: str) -> str:
    """A unified diff of the texts as their authors wrote them."""
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), old_name, new_name
        )
    )


def _diff(old: Any, new: Any, path: Path, out: list[Change]) -> None:
    if old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            where = (*path, key)
            if key not in new:
                out.append(Change(dotted(where), "removed", old=old[key]))
            elif key not in old:
                out.append(Change(dotted(where), "added", new=new[key]))
            else:
                _diff(old[key], new[key], where, out)
        return
    if isinstance(old, list) and isinstance(new, list):
        id_key = _KEYED_LISTS.get(str(path[-1])) if len(path) == 1 else None
        if id_key and _all_keyed(old, id_key) and _all_keyed(new, id_key):
            _diff_keyed(old, new, id_key, path, out)
            return
        if all(_is_mapping_or_list(x) for x in [*old, *new]):
            for i in range(max(len(old), len(new))):
                where = (*path, i)
                if i >= len(new):
                    out.append(Change(dotted(where), "removed", old=old[i]))
                elif i >= len(old):
                    out.append(Change(dotted(where), "added", new=new[i]))
                else:
                    _diff(old[i], new[i], where, out)
            return
    # Scalars, and lists of plain values, read best as one before-and-after.
    out.append(Change(dotted(path), "changed", old=old, new=new))


def _diff_keyed(
    old: list[dict[str, Any]], new: list[dict[str, Any]], id_key: str, path: Path, out: list[Change]
) -> None:
    before = {item[id_key]: item for item in old}
    after = {item[id_key]: item for item in new}
    for ident in [*before, *(i for i in after if i not in before)]:
        where = (*path, _Key(ident))
        if ident not in after:
            out.append(Change(dotted(where), "removed", old=before[ident]))
        elif ident not in before:
            out.append(Change(dotted(where), "added", new=after[ident]))
        else:
            _diff(before[ident], after[ident], where, out)
    if [i[id_key] for i in old if i[id_key] in after] != [
        i[id_key] for i in new if i[id_key] in before
    ]:
        # Order matters: the first matching team or partner wins.
        out.append(
            Change(
                dotted(path), "changed", old=[i[id_key] for i in old], new=[i[id_key] for i in new]
            )
        )


def _all_keyed(items: list[Any], id_key: str) -> bool:
    return all(isinstance(i, dict) and isinstance(i.get(id_key), str) for i in items)


def _is_mapping_or_list(value: Any) -> bool:
    return isinstance(value, (dict, list))
