"""JSON patch, merge patch and strategic merge patch (with the merge keys status patches need)."""

from __future__ import annotations

import copy
from typing import Any

from .errors import ApiError, bad_request
from .kinds import Obj

# -- patches ------------------------------------------------------------------------

# Lists merged by key in strategic merge patches (patchMergeKey in the OpenAPI schema).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "ports": "containerPort",
    "conditions": "type",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "ephemeralContainerStatuses": "name",
    "ownerReferences": "uid",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "podIPs": "ip",
    "hostIPs": "ip",
    "resourceClaims": "name",
    "topologySpreadConstraints": "topologyKey",
}
_MERGED_PRIMITIVE_LISTS = {"finalizers"}


def _without_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _without_directives(v)
            for k, v in value.items()
            if not k.startswith("$") and not k.startswith("$setElementOrder/")
        }
    if isinstance(value, list):
        return [_without_directives(v) for v in value]
    return value


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (``application/merge-patch+json``)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Strategic merge patch: a merge patch whose keyed lists merge by key.

    Covers the merge keys of the core and batch types (``conditions`` by ``type``,
    ``containers`` and ``containerStatuses`` by ``name``, ...), ``finalizers`` as a
    merged set, and the ``$patch: replace|delete`` directives. ``$retainKeys`` and
    ``$deleteFromPrimitiveList`` are not implemented.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return _without_directives(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        current = result.get(key)
        if value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(key, None)
        elif isinstance(value, dict):
            result[key] = strategic_merge_patch(current, value)
        elif isinstance(value, list) and key in _MERGE_KEYS and isinstance(current, list):
            result[key] = _merge_keyed_list(current, value, _MERGE_KEYS[key])
        elif (
            isinstance(value, list) and key in _MERGED_PRIMITIVE_LISTS and isinstance(current, list)
        ):
            result[key] = current + [item for item in value if item not in current]
        else:
            result[key] = _without_directives(copy.deepcopy(value))
    return result


def _merge_keyed_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [
            _without_directives(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)
        ]
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            result.append(_without_directives(copy.deepcopy(item)))
            continue
        position = next(
            (
                i
                for i, old in enumerate(result)
                if isinstance(old, dict) and old.get(key) == item[key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if position is not None:
                del result[position]
        elif position is None:
            result.append(_without_directives(copy.deepcopy(item)))
        else:
            result[position] = strategic_merge_patch(result[position], item)
    return result


def json_patch(target: Obj, operations: Any) -> Obj:
    """RFC 6902 JSON patch (``application/json-patch+json``)."""
    import jsonpatch  # type: ignore[import-untyped,unused-ignore]  # a dependency of kmock

    if not isinstance(operations, list):
        raise bad_request(
            "json: cannot unmarshal object into Go value of type []handlers.jsonPatchOp"
        )
    try:
        patched = jsonpatch.apply_patch(target, operations)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
        raise ApiError(
            422, f"the server rejected our request due to an error in our request: {error}"
        ) from error
    if not isinstance(patched, dict):
        raise ApiError(422, "the patch did not produce an object")
    return patched
