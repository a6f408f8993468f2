"""What a job asks for, in one backend-neutral model checked before submission.

Users write resources the way their cluster taught them (``mem="16G"``,
``time="1-12:00:00"``, ``gpus=0.5``), and a typo must fail at decoration or
submit time, in the user's process, rather than minutes later in a queue.  So
every field is parsed here into one canonical form (bytes, ``timedelta``,
lower-case names) and every problem becomes a single :class:`ConfigError`
naming the field, the bad value and what would be accepted.  Backends then
translate the canonical form with one table each.

Sizes: ``"16GB"`` is decimal (10**9), ``"512MiB"`` and Kubernetes' ``"512Mi"``
are binary, and a bare letter (``"16G"``, ``"512M"``) is binary as in Slurm's
``--mem`` -- *not* decimal as in Kubernetes quantities.  Durations: ``"2h"``,
``"1h30m"``, ``"2d"``, Slurm's ``"HH:MM:SS"``/``"MM:SS"``/``"D-HH[:MM[:SS]]"``,
or a number of seconds (a string of digits is seconds too, unlike Slurm's
minutes, so that ``time=90`` and ``time="90"`` agree).
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import ErrorDetails
from typing_extensions import Self

from jobkit.errors import ConfigError

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

# --------------------------------------------------------------------------- sizes

_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*\Z")
_SIZE_UNITS: Mapping[str, int] = {
    "": 1,
    "b": 1,
    **{p: 1024 ** (i + 1) for i, p in enumerate("kmgtp")},  # Slurm: 16G = 16 GiB
    **{p + "i": 1024 ** (i + 1) for i, p in enumerate("kmgtp")},  # Kubernetes: 16Gi
    **{p + "ib": 1024 ** (i + 1) for i, p in enumerate("kmgtp")},
    **{p + "b": 1000 ** (i + 1) for i, p in enumerate("kmgtp")},
}
# Largest first, binary and decimal interleaved (PiB > PB > TiB > ...).
_FORMAT_UNITS: tuple[tuple[str, int], ...] = tuple(
    sorted(
        [(p.upper() + "iB", 1024 ** (i + 1)) for i, p in enumerate("kmgtp")]
        + [(p.upper() + "B", 1000 ** (i + 1)) for i, p in enumerate("kmgtp")],
        key=lambda unit: -unit[1],
    )
)
_SIZE_HELP = "expected a size like '16GB', '512MiB' or a number of bytes"


def parse_size(value: int | float | str) -> int:
    """Bytes in ``value``: ``"16GB"`` (10**9), ``"512MiB"``/``"512Mi"``/``"512M"`` (2**20).

    Fractions round up to whole bytes, so a request is never smaller than asked.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"invalid size {value!r}: {_SIZE_HELP}")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"invalid size {value!r}: {_SIZE_HELP}")
        number = Decimal(value)
    else:
        match = _SIZE_RE.match(value)
        unit = _SIZE_UNITS.get(match.group(2).lower()) if match else None
        if match is None or unit is None:
            raise ConfigError(f"invalid size {value!r}: {_SIZE_HELP}")
        number = Decimal(match.group(1)) * unit
    if number < 0:
        raise ConfigError(f"invalid size {value!r}: a size cannot be negative")
    return math.ceil(number)


def format_size(nbytes: int) -> str:
    """Shortest exact spelling of ``nbytes`` (``"16GB"``, ``"1.5GiB"``), else ~3 digits."""
    if nbytes < 0:
        return "-" + format_size(-nbytes)
    for name, unit in _FORMAT_UNITS:
        if nbytes >= unit and (nbytes * 100) % unit == 0:
            return f"{_trim(Decimal(nbytes) / unit)}{name}"
    if nbytes < 1024:
        return f"{nbytes}B"
    name, unit = next((n, u) for n, u in _FORMAT_UNITS if n.endswith("iB") and nbytes >= u)
    return f"{nbytes / unit:.3g}{name}"


def _trim(number: Decimal) -> str:
    text = f"{number:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


# ----------------------------------------------------------------------- durations

_UNIT_SECONDS: Mapping[str, int] = {
    **dict.fromkeys(("w", "week", "weeks"), 604800),
    **dict.fromkeys(("d", "day", "days"), 86400),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
}
_DURATION_PART_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)\s*")
_NUMBER_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*\Z")
_CLOCK_RE = re.compile(r"\s*(?:(\d+)-)?(\d+(?::\d+){0,2})\s*\Z")
_DURATION_HELP = (
    "expected a duration like '2h', '90m', '1h30m', '2d', 'HH:MM:SS', 'D-HH:MM:SS' "
    "or a number of seconds"
)


def parse_duration(value: timedelta | int | float | str) -> timedelta:
    """``value`` as a ``timedelta``; see the module docstring for accepted forms."""
    if isinstance(value, timedelta):
        delta = value
    elif isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"invalid duration {value!r}: {_DURATION_HELP}")
    elif isinstance(value, int | float):
        if not math.isfinite(value):
            raise ConfigError(f"invalid duration {value!r}: {_DURATION_HELP}")
        delta = timedelta(seconds=value)
    else:
        seconds = _parse_duration_text(value.lower())
        if seconds is None:
            raise ConfigError(f"invalid duration {value!r}: {_DURATION_HELP}")
        delta = timedelta(seconds=seconds)
    if delta < timedelta(0):
        raise ConfigError(f"invalid duration {value!r}: a duration cannot be negative")
    return delta


def _parse_duration_text(text: str) -> float | None:
    number = _NUMBER_RE.match(text)
    if number:
        return float(number.group(1))
    clock = _CLOCK_RE.match(text)
    if clock:
        return _parse_clock(clock.group(1), clock.group(2).split(":"))
    total, pos, last_unit = 0.0, 0, math.inf
    while pos < len(text):
        part = _DURATION_PART_RE.match(text, pos)
        unit = _UNIT_SECONDS.get(part.group(2)) if part else None
        if part is None or unit is None or unit >= last_unit:  # "30m1h", "1h1h"
            return None
        total += float(part.group(1)) * unit
        pos, last_unit = part.end(), unit
    return total if pos else None


def _parse_clock(days: str | None, fields: list[str]) -> float | None:
    """Slurm's time formats: MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS."""
    numbers = [int(f) for f in fields]
    if days is None:
        if any(n >= 60 for n in numbers[1:]):  # the leading field may exceed its unit
            return None
        hours, minutes, seconds = [0] * (3 - len(numbers)) + numbers
    else:
        hours, minutes, seconds = numbers + [0] * (3 - len(numbers))
        if hours >= 24 or minutes >= 60 or seconds >= 60:
            return None
    return int(days or 0) * 86400 + hours * 3600 + minutes * 60 + seconds


def format_duration(value: timedelta | float) -> str:
    """Compact spelling (``"1d2h30m"``, ``"1.5s"``) that :func:`parse_duration` reads back."""
    delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if delta < timedelta(0):
        return "-" + format_duration(-delta)
    micros = delta // timedelta(microseconds=1)
    whole, fraction = divmod(micros, 1_000_000)
    parts = []
    for name, unit in (("d", 86400), ("h", 3600), ("m", 60)):
        count, whole = divmod(whole, unit)
        if count:
            parts.append(f"{count}{name}")
    if whole or fraction or not parts:
        parts.append(f"{_trim(Decimal(whole) + Decimal(fraction) / 1_000_000)}s")
    return "".join(parts)


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
    "mem": _SIZE_HELP,
    "gpus": "expected a whole number of GPUs >= 0, or a fraction between 0 and 1 "
    "to share one GPU (e.g. 0.5)",
    "gpu_type": "expected a GPU model name like 'a100' or 'h100'",
    "time": _DURATION_HELP.replace("a duration", "a duration > 0"),
    "nodes": "expected a whole number >= 1",
    "tasks_per_node": "expected a whole number >= 1",
    "priority": "expected 'low', 'normal', 'high' or an integer from -1000 to 1000",
    "queue": "expected a queue (Slurm partition) name like 'gpu'",
    "retries": "expected a whole number >= 0",
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
            value = int(milli.group(1)) / 1000 if milli else _number(value)
        number = _number(value)
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
            raise _Invalid("memory must be more than 0 bytes; " + _SIZE_HELP)
        return nbytes

    @field_validator("gpus", mode="before")
    @classmethod
    def _check_gpus(cls, value: Any) -> int | float:
        number = _number(value)
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
            raise _Invalid("a time limit must be more than 0; " + _DURATION_HELP)
        return delta

    @field_validator("nodes", "tasks_per_node", mode="before")
    @classmethod
    def _check_at_least_one(cls, value: Any) -> int:
        number = _number(value)
        if not isinstance(number, int) or number < 1:
            raise ValueError("not a whole number >= 1")
        return number

    @field_validator("retries", mode="before")
    @classmethod
    def _check_retries(cls, value: Any) -> int:
        number = _number(value)
        if not isinstance(number, int) or number < 0:
            raise ValueError("not a whole number >= 0")
        return number

    @field_validator("priority", mode="before")
    @classmethod
    def _check_priority(cls, value: Any) -> str | int:
        if isinstance(value, str) and value.strip().lower() in PRIORITY_VALUES:
            return value.strip().lower()
        number = _number(value)
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


def _number(value: Any) -> int | float:
    """An int or float from a number or numeric string; integral floats become ints."""
    if isinstance(value, bool):
        raise ValueError("booleans are not numbers")
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            value = float(text)  # ValueError propagates
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value) if value.is_integer() else value
    raise ValueError("not a number")


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
