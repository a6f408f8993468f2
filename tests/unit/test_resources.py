"""Resources: every accepted spelling, every refusal and its message, merging, records."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from jobkit.errors import ConfigError
from jobkit.resources import (
    Resources,
    format_duration,
    format_size,
    parse_duration,
    parse_resources,
    parse_size,
)

GiB = 1024**3
MiB = 1024**2

# ------------------------------------------------------------------------ sizes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("16GB", 16 * 10**9),
        ("16gb", 16 * 10**9),
        ("16 GB", 16 * 10**9),
        ("512MiB", 512 * MiB),
        ("512Mi", 512 * MiB),
        ("16G", 16 * GiB),  # Slurm convention: binary
        ("512M", 512 * MiB),
        ("2k", 2048),
        ("1.5GiB", 3 * GiB // 2),
        ("1.5KB", 1500),
        ("1TB", 10**12),
        ("1PiB", 1024**5),
        ("100B", 100),
        ("100", 100),
        (".5KiB", 512),
        (1000, 1000),
        (1e9, 10**9),
        (0, 0),
    ],
)
def test_parse_size(text: Any, expected: int) -> None:
    assert parse_size(text) == expected


def test_parse_size_rounds_fractions_up() -> None:
    assert parse_size("0.5B") == 1
    assert parse_size(10.2) == 11


@pytest.mark.parametrize("bad", ["lots", "16XB", "GB", "-1GB", "1.2.3G", "", -5, True, None, [1]])
def test_parse_size_rejects(bad: Any) -> None:
    with pytest.raises(ConfigError, match="size"):
        parse_size(bad)


@pytest.mark.parametrize(
    ("nbytes", "text"),
    [
        (0, "0B"),
        (100, "100B"),
        (1000, "1KB"),
        (1500, "1.5KB"),
        (16 * 10**9, "16GB"),
        (512 * MiB, "512MiB"),
        (3 * GiB // 2, "1.5GiB"),
        (16 * GiB, "16GiB"),
        (1_000_001, "977KiB"),  # not exact in any unit: three digits
    ],
)
def test_format_size(nbytes: int, text: str) -> None:
    assert format_size(nbytes) == text


@pytest.mark.parametrize(
    "nbytes", [1, 1023, 1024, 1500, 10**9, 3 * GiB // 2, 12345 * MiB, 7 * 10**15]
)
def test_format_size_round_trips_when_exact(nbytes: int) -> None:
    assert parse_size(format_size(nbytes)) == nbytes


# -------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2h", 7200),
        ("90m", 5400),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("45s", 45),
        ("2d", 172800),
        ("1w", 604800),
        ("1.5h", 5400),
        ("2 hours", 7200),
        ("5 min", 300),
        ("1d2h3m4s", 93784),
        ("2H", 7200),
        ("01:02:03", 3723),
        ("48:00:00", 172800),  # leading field may exceed 24
        ("90:30", 5430),  # MM:SS
        ("1-12:00:00", 129600),
        ("1-12:30", 131400),  # D-HH:MM
        ("2-0", 172800),  # D-HH
        ("3600", 3600),  # a string of digits is seconds, like a number
        ("0.5", 0.5),
        (90, 90),
        (1.5, 1.5),
        (timedelta(minutes=3), 180),
        (0, 0),
    ],
)
def test_parse_duration(text: Any, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "bad",
    [
        "soon",
        "30m1h",
        "1h1h",
        "1h30",
        "1x",
        "1:60",
        "1:2:60",
        "1-24:00:00",
        "1-1:60",
        "",
        "h",
        "-5",
    ],
)
def test_parse_duration_rejects_malformed(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"expected a duration like '2h'"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", [-1, timedelta(seconds=-1), float("inf"), float("nan"), True, None])
def test_parse_duration_rejects_non_durations(bad: Any) -> None:
    with pytest.raises(ConfigError, match="duration"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(hours=2), "2h"),
        (timedelta(minutes=90), "1h30m"),
        (timedelta(days=1, seconds=5), "1d5s"),
        (1.5, "1.5s"),
        (3600.0, "1h"),
        (timedelta(seconds=-60), "-1m"),
    ],
)
def test_format_duration(value: Any, text: str) -> None:
    assert format_duration(value) == text


@pytest.mark.parametrize(
    "delta",
    [timedelta(seconds=1), timedelta(days=3, hours=4, microseconds=5), timedelta(hours=25)],
)
def test_format_duration_round_trips(delta: timedelta) -> None:
    assert parse_duration(format_duration(delta)) == delta


# ------------------------------------------------------------------ the model


def test_defaults() -> None:
    r = Resources()
    assert (r.cpus, r.mem, r.gpus, r.gpu_type, r.time) == (1, None, 0, None, None)
    assert (r.nodes, r.tasks_per_node, r.priority, r.retries) == (1, 1, "normal", 0)
    assert (r.queue, r.image, r.name) == (None, None, None)
    assert r.env == r.labels == r.slurm == r.kubernetes == {}
    assert r.priority_value == 0


def test_parses_and_normalizes() -> None:
    r = parse_resources(
        cpus="4",
        mem="16GB",
        gpus=1,
        gpu_type=" A100 ",
        time="2h",
        nodes=2,
        tasks_per_node="4",
        priority="HIGH",
        queue="gpu",
        retries=3,
        env={"OMP_NUM_THREADS": 4, "DATA": Path("/data")},
        image="python:3.11-slim",
        name="train.v2-final_1",
        labels={"app.kubernetes.io/name": "train", "team": "ml", "empty": "", "n": 3},
        slurm={"account": "proj", "constraint": ["a", "b"]},
        kubernetes={"namespace": "ml", "tolerations": ({"key": "gpu"},)},
    )
    assert r.cpus == 4 and isinstance(r.cpus, int)
    assert r.mem == 16 * 10**9
    assert r.gpu_type == "a100"
    assert r.time == timedelta(hours=2)
    assert r.tasks_per_node == 4
    assert r.priority == "high" and r.priority_value == 100
    assert r.env == {"OMP_NUM_THREADS": "4", "DATA": "/data"}
    assert r.labels["n"] == "3"
    assert r.kubernetes["tolerations"] == [{"key": "gpu"}]


@pytest.mark.parametrize(
    ("cpus", "expected"), [(0.5, 0.5), ("500m", 0.5), (2.0, 2), ("1.5", 1.5), (16, 16)]
)
def test_cpus_forms(cpus: Any, expected: float) -> None:
    assert Resources(cpus=cpus).cpus == expected


@pytest.mark.parametrize(("gpus", "expected"), [(0, 0), (4, 4), (0.5, 0.5), (0.25, 0.25), (2.0, 2)])
def test_gpus_whole_or_fraction(gpus: Any, expected: float) -> None:
    assert Resources(gpus=gpus).gpus == expected


@pytest.mark.parametrize(
    ("priority", "value"),
    [("low", -100), ("normal", 0), ("high", 100), (7, 7), (-1000, -1000), (1000, 1000), ("12", 12)],
)
def test_priority_value(priority: Any, value: int) -> None:
    assert Resources(priority=priority).priority_value == value


def test_time_accepts_all_forms() -> None:
    assert Resources(time=timedelta(minutes=5)).time == timedelta(minutes=5)
    assert Resources(time=90).time == timedelta(seconds=90)
    assert Resources(time="1-00:00:00").time == timedelta(days=1)


def test_frozen_and_hashable() -> None:
    r = Resources(cpus=2, env={"A": "1"})
    with pytest.raises(Exception, match="frozen"):
        r.cpus = 3  # type: ignore[misc]
    assert hash(r) == hash(Resources(cpus=2, env={"A": "1"}))
    assert r == Resources(cpus=2, env={"A": "1"})


# --------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"mem": "lots"},
            "invalid resource mem='lots': expected a size like '16GB', '512MiB' "
            "or a number of bytes",
        ),
        ({"mem": 0}, "invalid resource mem=0: memory must be more than 0 bytes"),
        ({"cpus": 0}, "invalid resource cpus=0: expected a number of CPUs > 0"),
        ({"cpus": -1}, "invalid resource cpus=-1: expected a number of CPUs > 0"),
        ({"cpus": "many"}, "invalid resource cpus='many': expected a number of CPUs > 0"),
        ({"cpus": True}, "invalid resource cpus=True: expected a number of CPUs"),
        (
            {"gpus": 1.5},
            "invalid resource gpus=1.5: expected a whole number of GPUs >= 0, or a "
            "fraction between 0 and 1",
        ),
        ({"gpus": -1}, "invalid resource gpus=-1: expected a whole number of GPUs"),
        ({"gpu_type": "a 100"}, "invalid resource gpu_type='a 100': expected a GPU model name"),
        ({"time": "soon"}, "invalid resource time='soon': expected a duration > 0 like '2h'"),
        ({"time": 0}, "invalid resource time=0: a time limit must be more than 0"),
        ({"time": -5}, "invalid resource time=-5: expected a duration > 0"),
        ({"nodes": 0}, "invalid resource nodes=0: expected a whole number >= 1"),
        ({"nodes": 1.5}, "invalid resource nodes=1.5: expected a whole number >= 1"),
        ({"tasks_per_node": "x"}, "invalid resource tasks_per_node='x': expected a whole number"),
        ({"retries": -1}, "invalid resource retries=-1: expected a whole number >= 0"),
        (
            {"priority": "urgent"},
            "invalid resource priority='urgent': expected 'low', 'normal', "
            "'high' or an integer from -1000 to 1000",
        ),
        ({"priority": 1001}, "invalid resource priority=1001: expected 'low', 'normal'"),
        ({"priority": 0.5}, "invalid resource priority=0.5: expected 'low'"),
        ({"queue": ""}, "invalid resource queue='': expected a queue (Slurm partition) name"),
        ({"queue": "a b"}, "invalid resource queue='a b'"),
        ({"image": 3}, "invalid resource image=3: expected a container image"),
        ({"name": "my job"}, "invalid resource name='my job': expected 1 to 128 characters"),
        ({"name": ""}, "invalid resource name='': expected 1 to 128 characters"),
        ({"name": "x" * 129}, f"invalid resource name='{'x' * 129}': expected 1 to 128"),
        ({"name": "a/b"}, "invalid resource name='a/b'"),
        ({"env": ["A=1"]}, "invalid resource env=['A=1']: expected a mapping of environment"),
        ({"env": {"1A": "x"}}, "invalid resource env['1A']: an environment variable name"),
        ({"env": {"A-B": "x"}}, "invalid resource env['A-B']: an environment variable name"),
        ({"env": {"A": None}}, "invalid resource env['A']=None: expected a string"),
        ({"env": {"A": True}}, "invalid resource env['A']=True: expected a string"),
        ({"labels": {"a": "-x"}}, "invalid resource labels['a']='-x': a label value is empty"),
        ({"labels": {"a": "x" * 64}}, "invalid resource labels['a']="),
        ({"labels": {"Bad Key": "x"}}, "invalid resource labels key 'Bad Key': a label key"),
        ({"labels": {"UPPER.io/x": "y"}}, "invalid resource labels key 'UPPER.io/x'"),
        ({"labels": {"a": None}}, "invalid resource labels['a']=None"),
        ({"slurm": {"x": object}}, "invalid resource slurm="),
        ({"slurm": "--exclusive"}, "invalid resource slurm='--exclusive': expected a mapping"),
        ({"kubernetes": {1: "x"}}, "invalid resource kubernetes={1: 'x'}: expected a mapping"),
    ],
)
def test_invalid_value_messages(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_resources(**kwargs)
    assert str(info.value).startswith(message)
    assert "pydantic" not in str(info.value) and "\n" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_secret_env_names_are_not_echoed_in_full() -> None:
    with pytest.raises(ConfigError) as info:
        Resources(env={"TOKEN": "s3cret", "1BAD": "also-secret"})
    assert "s3cret" not in str(info.value) and "also-secret" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("gpu", "gpus"),
        ("memory", "mem"),
        ("partition", "queue"),
        ("cpu", "cpus"),
        ("walltime", "time"),
        ("environment", "env"),
        ("label", "labels"),
        ("job_name", "name"),
    ],
)
def test_unknown_resource_suggests(name: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_resources(**{name: 1})
    message = str(info.value)
    assert message.startswith(f"unknown resource {name!r} (did you mean {suggestion!r}?)")
    assert (
        "valid resources are cache, cpus, env, gpu_type, gpus, image, isolate, kubernetes, "
        "labels, mem, mem_growth, mem_max, name" in message
    )


def test_unknown_resource_without_suggestion_and_several() -> None:
    with pytest.raises(ConfigError) as info:
        parse_resources(zzz=1, qqq=2)
    assert str(info.value).startswith("unknown resource 'qqq': valid resources are")
    assert str(info.value).endswith("(also unknown: zzz)")


def test_several_invalid_fields_reported_once() -> None:
    with pytest.raises(ConfigError) as info:
        Resources(cpus=-1, nodes=0, retries=-1)
    assert str(info.value).startswith("invalid resource cpus=-1")
    assert "(also invalid: nodes, retries)" in str(info.value)


def test_model_validate_also_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="invalid resource mem='x'"):
        Resources.model_validate({"mem": "x"})
    with pytest.raises(ConfigError, match="unknown resource 'gpu'"):
        Resources.model_validate({"gpu": 1})
    with pytest.raises(ConfigError, match="invalid resources 5"):
        Resources.model_validate(5)
    assert Resources.model_validate({"cpus": 2}).cpus == 2


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Resources(nodes=0)


# --------------------------------------------------------------------- merged


def test_merged_later_values_win_and_dicts_merge() -> None:
    base = Resources(
        cpus=2, mem="8GB", env={"A": "1", "B": "2"}, labels={"team": "ml"}, slurm={"account": "x"}
    )
    merged = base.merged(cpus=4, env={"B": "3", "C": "4"}, slurm={"qos": "high"}, time="1h")
    assert merged.cpus == 4
    assert merged.mem == 8 * 10**9
    assert merged.time == timedelta(hours=1)
    assert merged.env == {"A": "1", "B": "3", "C": "4"}
    assert merged.labels == {"team": "ml"}
    assert merged.slurm == {"account": "x", "qos": "high"}
    assert base.env == {"A": "1", "B": "2"}  # the original is untouched


def test_merged_can_clear_optional_fields() -> None:
    assert Resources(time="1h").merged(time=None).time is None


def test_merged_layers_apply_only_fields_that_were_set() -> None:
    defaults = Resources(queue="gpu", cpus=2, env={"A": "1"})
    job = Resources(cpus=8, env={"B": "2"})
    merged = defaults.merged(job, {"mem": "1GB"}, retries=2)
    assert merged.queue == "gpu"  # job's default queue=None did not mask it
    assert merged.cpus == 8
    assert merged.env == {"A": "1", "B": "2"}
    assert (merged.mem, merged.retries) == (10**9, 2)
    assert merged.model_fields_set == {"queue", "cpus", "env", "mem", "retries"}


def test_merged_validates() -> None:
    with pytest.raises(ConfigError, match=r"invalid resource gpus=1\.5"):
        Resources().merged(gpus=1.5)
    with pytest.raises(ConfigError, match="unknown resource 'gpu'"):
        Resources().merged(gpu=1)


# -------------------------------------------------------------------- records


def test_to_record_is_json_safe_and_minimal() -> None:
    assert Resources().to_record() == {"cpus": 1}
    r = Resources(
        cpus=2,
        mem="1GiB",
        time="90m",
        priority="high",
        env={"A": "1"},
        slurm={"constraint": ("a",)},
    )
    record = r.to_record()
    assert record == {
        "cpus": 2,
        "mem": GiB,
        "time": 5400.0,
        "priority": "high",
        "env": {"A": "1"},
        "slurm": {"constraint": ["a"]},
    }
    assert json.loads(json.dumps(record)) == record


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"cpus": 0.5, "gpus": 0.25, "time": 1.5},
        {
            "mem": "16GB",
            "time": "1-02:03:04",
            "priority": -5,
            "nodes": 2,
            "tasks_per_node": 3,
            "queue": "q",
            "retries": 1,
            "env": {"A": "b"},
            "image": "img:1",
            "name": "n",
            "labels": {"a": "b"},
            "gpu_type": "h100",
            "gpus": 2,
            "kubernetes": {"namespace": "x", "nested": {"a": [1, 2, None]}},
        },
    ],
)
def test_record_round_trip(kwargs: dict[str, Any]) -> None:
    r = Resources(**kwargs)
    again = Resources.from_record(json.loads(json.dumps(r.to_record())))
    assert again == r


def test_from_record_rejects_garbage() -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        Resources.from_record([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown resource 'bogus'"):
        Resources.from_record({"bogus": 1})


# ------------------------------------------------------- one rule for numbers


@pytest.mark.parametrize(
    ("field", "given", "expected"),
    [
        ("nodes", 2.0, 2),
        ("tasks_per_node", "3.0", 3),
        ("retries", 0.0, 0),
        ("gpus", 2.0, 2),
        ("priority", 10.0, 10),
        ("cpus", 4.0, 4),
    ],
)
def test_whole_floats_become_ints(field: str, given: Any, expected: int) -> None:
    value = getattr(Resources(**{field: given}), field)
    assert value == expected and type(value) is int


@pytest.mark.parametrize("field", ["nodes", "tasks_per_node", "retries", "gpus", "cpus"])
def test_booleans_are_not_numbers(field: str) -> None:
    with pytest.raises(ConfigError, match=rf"^invalid resource {field}=True: expected "):
        Resources(**{field: True})


def test_units_module_is_the_one_resources_reexports() -> None:
    import jobkit.units as units

    assert parse_size is units.parse_size and parse_duration is units.parse_duration
    assert units.parse_size("512MiB") == 512 * 2**20
    assert units.format_duration(units.parse_duration("1-12:00:00")) == "1d12h"
