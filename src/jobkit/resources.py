"""What a job asks for, in one backend-neutral model checked before submission.

Users write resources the way their cluster taught them (``mem="16G"``,
``time="1-12:00:00"``, ``gpus=0.5``), and a typo must fail at decoration or
submit time, in the user's process, rather than minutes later in a queue.  So
every field is parsed here into one canonical form (bytes, ``timedelta``,
lower-case names) and every problem becomes a single :class:`ConfigError`
naming the field, the bad value and what would be accepted.  Backends then
translate the canonical form with one table each.

Units (sizes, durations) are parsed by :mod:`jobkit.units` and numbers by
:mod:`jobkit.numbers`, the rule shared with :mod:`jobkit.config`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails
from typing_extensions import Self

from jobkit.errors import ConfigError
from jobkit.numbers import to_number, whole_number, whole_number_help
from jobkit.units import (
    DURATION_HELP,
    SIZE_HELP,
    format_duration,
    format_size,
    parse_duration,
    parse_size,
)

__all__ = [
    "Resources",
    "format_duration",
    "format_size",
    "parse_duration",
    "parse_resources",
    "parse_size",
]

PriorityName = Literal["low", "normal", "high"]

PRIORITY_VALUES: Mapping[str, int] = {"low": -100, "normal": 0, "high": 100}
"""Numeric value of each named priority band; integers range over -1000..1000."""

# ----------------------------------------------------------------------- the model

_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_JOB_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}\Z")
_LABEL_NAME_RE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)\Z")
_DNS_SUBDOMAIN_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_TOKEN_RE = re.compile(r"\S+\Z")
_GPU_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9_.:-]*\Z")
_MILLICPU_RE = re.compile(r"\s*(\d+)m\s*\Z")

_EXPECTED: Mapping[str, str] = {
    "cpus": "expected a number of CPUs > 0, like 4, 0.5 or '500m'",
    "mem": SIZE_HELP,
    "gpus": "expected a whole number of GPUs >= 0, or a fraction between 0 and 1 "
    "to share one GPU (e.g. 0.5)",
    "gpu_type": "expected a GPU model name like 'a100' or 'h100'",
    "time": DURATION_HELP.replace("a duration", "a duration > 0"),
    "nodes": whole_number_help(1),
    "tasks_per_node": whole_number_help(1),
    "priority": "expected 'low', 'normal', 'high' or an integer from -1000 to 1000",
    "queue": "expected a queue (Slurm partition) name like 'gpu'",
    "retries": whole_number_help(0),
    "retry_on": "expected failure reasons (PREEMPTED, LOST, OOM, TIMEOUT, ERROR) and/or "
    "exception classes, e.g. {'PREEMPTED', 'LOST', ConnectionError}",
    "mem_growth": "expected a factor > 1 by which mem grows on each OOM retry, like 2.0",
    "mem_max": "expected the most memory an OOM retry may ask for; " + SIZE_HELP,
    "cache": "expected True, False, or a version string like 'v2'",
    "isolate": "expected true or false",
    "env": "expected a mapping of environment variable names to strings",
    "image": "expected a container image like 'python:3.11-slim'",
    "name": "expected 1 to 128 characters from A-Z, a-z, 0-9, '_', '.' and '-'",
    "labels": "expected a mapping of Kubernetes label keys to values",
    "slurm": "expected a mapping of option names to JSON-compatible values",
    "kubernetes": "expected a mapping of option names to JSON-compatible values",
}
# Names people reach for from other tools; difflib alone would miss most of them.
_ALIASES: Mapping[str, str] = {
    "partition": "queue",
    "memory": "mem",
    "walltime": "time",
    "time_limit": "time",
    "timeout": "time",
    "cpus_per_task": "cpus",
    "ntasks_per_node": "tasks_per_node",
    "num_nodes": "nodes",
    "gpus_per_node": "gpus",
    "max_retries": "retries",
    "environment": "env",
    "container": "image",
    "job_name": "name",
}


_INPUT: Any = object()  # sentinel: show the field's whole input


class _Invalid(ValueError):
    """A validator's verdict; ``where`` narrows the field (``env['X']``).

    ``value`` is what the message shows (by default the field's whole input);
    ``show=False`` shows no value, e.g. for a bad env name next to secrets.
    """

    def __init__(
        self, reason: str, *, where: str | None = None, value: Any = _INPUT, show: bool = True
    ) -> None:
        super().__init__(reason)
        self.reason, self.where, self.value, self.show = reason, where, value, show


class Resources(BaseModel):
    """Resources one job asks for; immutable, validated on construction.

    Construct with keyword arguments, :func:`parse_resources` or
    :meth:`from_record`; all of them raise :class:`ConfigError`, never a
    pydantic error.  Dict fields must not be mutated in place.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    cpus: int | float = 1
    """CPU cores; fractions (``0.5`` or Kubernetes' ``"500m"``) where the backend allows."""
    mem: int | None = None
    """Memory in bytes; ``None`` leaves it to the backend's default."""
    gpus: int | float = 0
    """Whole GPUs, or a fraction below 1 to share one GPU with other jobs."""
    gpu_type: str | None = None
    """GPU model, lower case (``"a100"``); ``None`` takes any."""
    time: timedelta | None = None
    """Wall-clock limit; ``None`` leaves it to the backend's default."""
    nodes: int = 1
    tasks_per_node: int = 1
    priority: PriorityName | int = "normal"
    """A band or an integer in -1000..1000; compare with :attr:`priority_value`."""
    queue: str | None = None
    """Slurm partition or Kubernetes queue."""
    retries: int = 0
    """How many times a failed job is resubmitted."""
    retry_on: tuple[str, ...] | None = None
    """Which failures ``retries`` cover: FailureReason names and exception
    classes (as ``"module.QualName"``, matched against the raised exception's
    MRO, for ``ERROR``).  ``None``: PREEMPTED and LOST (and OOM when
    ``mem_growth`` is set), never a user's bug."""
    mem_growth: float | None = None
    """On each OOM retry ``mem`` is multiplied by this (up to ``mem_max``)."""
    mem_max: int | None = None
    """The most memory (bytes) an OOM retry may ask for."""
    cache: bool | str = False
    """Reuse the stored result of an earlier SUCCEEDED job with the same code
    and arguments (``True``), or the same function name, version string and
    arguments (``"v2"``: the code is not hashed, the version is)."""
    isolate: bool = False
    """Run in a process of its own, never shared with other jobs (the local
    backend reuses warm workers otherwise; cluster jobs always get their own)."""
    env: dict[str, str] = Field(default_factory=dict)
    image: str | None = None
    """Container image (Kubernetes)."""
    name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    """Key/value tags, valid as Kubernetes labels so every backend can carry them."""
    slurm: dict[str, Any] = Field(default_factory=dict)
    """Extra sbatch options, passed through by the Slurm backend."""
    kubernetes: dict[str, Any] = Field(default_factory=dict)
    """Extra pod/Job settings, passed through by the Kubernetes backend."""

    def __init__(self, **data: Any) -> None:
        unknown = sorted(set(data) - _FIELD_NAMES)
        if unknown:
            also = f" (also unknown: {', '.join(unknown[1:])})" if unknown[1:] else ""
            raise ConfigError(_unknown_message(unknown[0]) + also)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(_validation_message(exc)) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        """Like pydantic's, but raises the same :class:`ConfigError` as construction."""
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            cause = (exc.errors()[0].get("ctx") or {}).get("error")
            if isinstance(cause, ConfigError):
                raise cause from None
            raise ConfigError(_validation_message(exc)) from None

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_record(), sort_keys=True, default=repr))

    @property
    def priority_value(self) -> int:
        """The priority as an integer: low=-100, normal=0, high=100."""
        if isinstance(self.priority, str):
            return PRIORITY_VALUES[self.priority]
        return self.priority

    def merged(self, *layers: Resources | Mapping[str, Any], **overrides: Any) -> Resources:
        """A copy with ``layers`` then ``overrides`` applied; later values win.

        Only fields *set* on a ``Resources`` layer override, so defaults never
        mask earlier choices.  ``env``, ``labels``, ``slurm`` and ``kubernetes``
        merge key-wise.
        """
        data: dict[str, Any] = {name: getattr(self, name) for name in self.model_fields_set}
        for layer in (*layers, overrides):
            if isinstance(layer, Resources):
                items = {name: getattr(layer, name) for name in layer.model_fields_set}
            else:
                items = dict(layer)
            for key, value in items.items():
                if key in _DICT_FIELDS and isinstance(value, Mapping):
                    previous = data.get(key)
                    data[key] = {**(previous if isinstance(previous, Mapping) else {}), **value}
                else:
                    data[key] = value
        return Resources(**data)

    def to_record(self) -> dict[str, Any]:
        """JSON-safe dict of the non-default fields (plus ``cpus``); time in seconds."""
        record: dict[str, Any] = {"cpus": self.cpus}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if name == "cpus" or value == field.get_default(call_default_factory=True):
                continue
            if isinstance(value, timedelta):
                value = value.total_seconds()
            elif isinstance(value, dict):
                value = dict(value)
            record[name] = value
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Resources:
        """Inverse of :meth:`to_record`."""
        if not isinstance(record, Mapping):
            raise ConfigError(f"invalid resource record {record!r}: expected a mapping")
        return cls(**record)

    # ------------------------------------------------------------------ validators

    @field_validator("cpus", mode="before")
    @classmethod
    def _check_cpus(cls, value: Any) -> int | float:
        if isinstance(value, str):
            milli = _MILLICPU_RE.match(value)
            value = int(milli.group(1)) / 1000 if milli else to_number(value)
        number = to_number(value)
        if not number > 0:
            raise _Invalid(_EXPECTED["cpus"])
        return number

    @field_validator("mem", mode="before")
    @classmethod
    def _check_mem(cls, value: Any) -> int | None:
        if value is None:
            return None
        nbytes = parse_size(value)
        if nbytes <= 0:
            raise _Invalid("memory must be more than 0 bytes; " + SIZE_HELP)
        return nbytes

    @field_validator("gpus", mode="before")
    @classmethod
    def _check_gpus(cls, value: Any) -> int | float:
        number = to_number(value)
        if number < 0 or (isinstance(number, float) and number >= 1):
            raise _Invalid(_EXPECTED["gpus"])
        return number

    @field_validator("gpu_type", mode="before")
    @classmethod
    def _check_gpu_type(cls, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _GPU_TYPE_RE.match(value.strip().lower()):
            raise _Invalid(_EXPECTED["gpu_type"])
        return value.strip().lower()

    @field_validator("time", mode="before")
    @classmethod
    def _check_time(cls, value: Any) -> timedelta | None:
        if value is None:
            return None
        delta = parse_duration(value)
        if delta <= timedelta(0):
            raise _Invalid("a time limit must be more than 0; " + DURATION_HELP)
        return delta

    @field_validator("nodes", "tasks_per_node", mode="before")
    @classmethod
    def _check_at_least_one(cls, value: Any) -> int:
        return whole_number(value, minimum=1)

    @field_validator("retries", mode="before")
    @classmethod
    def _check_retries(cls, value: Any) -> int:
        return whole_number(value, minimum=0)

    @field_validator("retry_on", mode="before")
    @classmethod
    def _check_retry_on(cls, value: Any) -> tuple[str, ...] | None:
        if value is None:
            return None
        items = [value] if isinstance(value, str | type) else value
        if isinstance(items, Mapping) or not isinstance(items, list | tuple | set | frozenset):
            raise _Invalid(_EXPECTED["retry_on"])
        names: set[str] = set()
        for item in items:
            names.add(_retry_class(item))
        return tuple(sorted(names))

    @field_validator("mem_growth", mode="before")
    @classmethod
    def _check_mem_growth(cls, value: Any) -> float | None:
        if value is None:
            return None
        number = to_number(value)
        if not number > 1 or number > 1000:
            raise _Invalid(_EXPECTED["mem_growth"])
        return float(number)

    @field_validator("mem_max", mode="before")
    @classmethod
    def _check_mem_max(cls, value: Any) -> int | None:
        if value is None:
            return None
        nbytes = parse_size(value)
        if nbytes <= 0:
            raise _Invalid(_EXPECTED["mem_max"])
        return nbytes

    @field_validator("cache", mode="before")
    @classmethod
    def _check_cache(cls, value: Any) -> bool | str:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and _TOKEN_RE.match(value.strip()) and len(value) <= 64:
            return value.strip()
        raise _Invalid(_EXPECTED["cache"])

    @field_validator("isolate", mode="before")
    @classmethod
    def _check_isolate(cls, value: Any) -> bool:
        if not isinstance(value, bool):
            raise _Invalid(_EXPECTED["isolate"])
        return value

    @field_validator("priority", mode="before")
    @classmethod
    def _check_priority(cls, value: Any) -> str | int:
        if isinstance(value, str) and value.strip().lower() in PRIORITY_VALUES:
            return value.strip().lower()
        number = to_number(value)
        if not isinstance(number, int) or not -1000 <= number <= 1000:
            raise ValueError("not a priority")
        return number

    @field_validator("queue", "image", mode="before")
    @classmethod
    def _check_token(cls, value: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _TOKEN_RE.match(value.strip()):
            raise ValueError("not a single word")
        return value.strip()

    @field_validator("name", mode="before")
    @classmethod
    def _check_name(cls, value: Any) -> str | None:
        if value is not None and not (isinstance(value, str) and _JOB_NAME_RE.match(value)):
            raise ValueError("not a job name")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _check_env(cls, value: Any) -> dict[str, str]:
        env: dict[str, str] = {}
        for key, item in _mapping(value).items():
            where = f"env[{key!r}]"
            if not isinstance(key, str) or not _ENV_NAME_RE.match(key):
                raise _Invalid(
                    "an environment variable name is letters, digits and '_', "
                    "not starting with a digit",
                    where=where,
                    show=False,
                )
            if isinstance(item, os.PathLike):
                item = os.fspath(item)
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise _Invalid("expected a string", where=where, value=item)
            env[key] = str(item)
        return env

    @field_validator("labels", mode="before")
    @classmethod
    def _check_labels(cls, value: Any) -> dict[str, str]:
        labels: dict[str, str] = {}
        for key, item in _mapping(value).items():
            if not isinstance(key, str) or not _is_label_key(key):
                raise _Invalid(
                    "a label key is an optional DNS prefix and '/', then 1 to 63 "
                    "alphanumerics, '-', '_' or '.', starting and ending alphanumeric",
                    where=f"labels key {key!r}",
                    show=False,
                )
            if isinstance(item, int | float) and not isinstance(item, bool):
                item = str(item)
            if not isinstance(item, str) or not (item == "" or _LABEL_NAME_RE.match(item)):
                raise _Invalid(
                    "a label value is empty or 1 to 63 alphanumerics, '-', '_' or '.', "
                    "starting and ending alphanumeric",
                    where=f"labels[{key!r}]",
                    value=item,
                )
            labels[key] = item
        return labels

    @field_validator("slurm", "kubernetes", mode="before")
    @classmethod
    def _check_extras(cls, value: Any) -> dict[str, Any]:
        extras = _mapping(value)
        for key, item in extras.items():
            if not isinstance(key, str):
                raise ValueError("option names must be strings")
            _check_json(item)
        return {key: _jsonable(item) for key, item in extras.items()}


_FIELD_NAMES = frozenset(Resources.model_fields)
_DICT_FIELDS = frozenset({"env", "labels", "slurm", "kubernetes"})


def parse_resources(**kwargs: Any) -> Resources:
    """Validate keyword resources; the single entry point for decorators and options."""
    return Resources(**kwargs)


def resource_names() -> list[str]:
    """Sorted names of all resource fields (for help texts and config routing)."""
    return sorted(_FIELD_NAMES)


# ------------------------------------------------------------------------ helpers


_NOT_RETRIED = {"SUBMIT_ERROR", "DEPENDENCY"}
_RETRY_REASONS = ("PREEMPTED", "LOST", "OOM", "TIMEOUT", "ERROR")


def _retry_class(item: Any) -> str:
    """One ``retry_on`` entry as stored: a FailureReason name, or an exception
    class as ``"module.QualName"`` (a record's stored form is accepted back)."""
    if isinstance(item, type):
        if not issubclass(item, BaseException):
            raise _Invalid(
                f"{item.__name__} is not an exception class; " + _EXPECTED["retry_on"],
                value=item,
            )
        return f"{item.__module__}.{item.__qualname__}"
    if isinstance(item, str):
        name = item.strip()
        if name.upper() in _RETRY_REASONS:
            return name.upper()
        if name.upper() in _NOT_RETRIED:
            raise _Invalid(
                f"{name.upper()} is never retried (the same job would fail the same way); "
                + _EXPECTED["retry_on"],
                value=item,
            )
        if "." in name and all(part.isidentifier() for part in name.split(".")):
            return name  # an exception class named by its module path
        close = difflib.get_close_matches(name.upper(), _RETRY_REASONS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _Invalid(f"unknown failure reason{hint}; " + _EXPECTED["retry_on"], value=item)
    raise _Invalid(_EXPECTED["retry_on"], value=item)


def _mapping(value: Any) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise ValueError("not a mapping")
    return value


def _is_label_key(key: str) -> bool:
    prefix, slash, name = key.rpartition("/")
    if slash and not (len(prefix) <= 253 and _DNS_SUBDOMAIN_RE.match(prefix)):
        return False
    return bool(_LABEL_NAME_RE.match(name))


def _check_json(value: Any) -> None:
    if value is None or isinstance(value, str | int | float | bool):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_json(item)
        return
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        for item in value.values():
            _check_json(item)
        return
    raise ValueError(f"{value!r} is not JSON-compatible")


def _jsonable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _jsonable(item) for key, item in value.items()}
    return value


def _unknown_message(name: str) -> str:
    suggestion = _ALIASES.get(name.lower())
    if suggestion is None:
        close = difflib.get_close_matches(name, sorted(_FIELD_NAMES), n=1)
        suggestion = close[0] if close else None
    hint = f" (did you mean {suggestion!r}?)" if suggestion else ""
    return f"unknown resource {name!r}{hint}: valid resources are {', '.join(resource_names())}"


def _validation_message(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    if not errors[0]["loc"]:
        return f"invalid resources {errors[0]['input']!r}: expected a mapping of names to values"
    message = _error_text(errors[0])
    others = sorted({str(e["loc"][0]) for e in errors[1:] if e["loc"]} - {str(errors[0]["loc"][0])})
    if others:
        message += f" (also invalid: {', '.join(others)})"
    return message


def _error_text(error: ErrorDetails) -> str:
    field = str(error["loc"][0]) if error["loc"] else "?"
    cause = (error.get("ctx") or {}).get("error")
    where, reason, value, show = field, _EXPECTED.get(field, "invalid value"), _INPUT, True
    if isinstance(cause, _Invalid):
        where, reason, value, show = cause.where or field, cause.reason, cause.value, cause.show
    shown = f"={error['input'] if value is _INPUT else value!r}" if show else ""
    return f"invalid resource {where}{shown}: {reason}"
