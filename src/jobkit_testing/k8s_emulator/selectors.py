"""Label and field selectors, parsed and matched as on list, watch and deletecollection."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import bad_request
from .kinds import _FIELD_LABELS, _LABEL_VALUE, Kind, Obj

# -- selectors ----------------------------------------------------------------------

Requirement = tuple[str, str, frozenset[str]]  # key, operator, values
_SET_TERM = re.compile(r"^\s*([A-Za-z0-9][-A-Za-z0-9_./]*)\s+(in|notin)\s+\(([^)]*)\)\s*$")
_KEY = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_./]*$")


def _split_terms(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [term.strip() for term in terms if term.strip()]


def parse_label_selector(selector: str | None) -> list[Requirement]:
    """Equality- and set-based label selectors, as ``kubectl -l`` writes them."""
    requirements: list[Requirement] = []
    for term in _split_terms(selector or ""):
        set_term = _SET_TERM.match(term)
        if set_term:
            values = frozenset(v.strip() for v in set_term.group(3).split(",") if v.strip())
            requirements.append((set_term.group(1), set_term.group(2), values))
            continue
        for operator in ("!=", "==", "="):
            if operator in term:
                key, value = (part.strip() for part in term.split(operator, 1))
                if not _KEY.match(key) or not _LABEL_VALUE.fullmatch(value):
                    raise bad_request(f"unable to parse requirement: {term!r}")
                requirements.append((key, "!=" if operator == "!=" else "=", frozenset([value])))
                break
        else:
            negated = term.startswith("!")
            key = term[1:].strip() if negated else term
            if not _KEY.match(key):
                raise bad_request(f"unable to parse requirement: {term!r}")
            requirements.append((key, "!" if negated else "exists", frozenset()))
    return requirements


def labels_match(requirements: list[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    for key, operator, values in requirements:
        present = key in labels
        value = labels.get(key)
        if operator == "=" and value not in values:
            return False
        if operator == "!=" and present and value in values:
            return False
        if operator == "in" and (not present or value not in values):
            return False
        if operator == "notin" and present and value in values:
            return False
        if operator == "exists" and not present:
            return False
        if operator == "!" and present:
            return False
    return True


def parse_field_selector(kind: Kind, selector: str | None) -> list[tuple[str, bool, str]]:
    """``metadata.name=x,status.phase!=Running`` -> (path, equal?, value) triples."""
    allowed = ("metadata.name", "metadata.namespace", *_FIELD_LABELS.get(kind.plural, ()))
    result: list[tuple[str, bool, str]] = []
    for term in _split_terms(selector or ""):
        for operator in ("!=", "==", "="):
            if operator in term:
                path, value = (part.strip() for part in term.split(operator, 1))
                break
        else:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{term}'")
        if path not in allowed:
            raise bad_request(f"field label not supported: {path}")
        result.append((path, operator != "!=", value))
    return result


def _field_value(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def fields_match(requirements: list[tuple[str, bool, str]], obj: Obj) -> bool:
    return all((_field_value(obj, path) == value) == equal for path, equal, value in requirements)
