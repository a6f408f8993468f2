"""load_config: defaults, every layer's precedence, profiles, file search, error messages."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import jobkit.config_loading as loading_module
from jobkit.config import Config, LocalConfig
from jobkit.config_loading import Overrides, load_config
from jobkit.errors import ConfigError
from jobkit.paths import home_dir
from jobkit.resources import Resources

KEY = "ab" * 16


class Env:
    """A sandbox: a fake HOME, a project directory and an explicit environment."""

    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.project = tmp_path / "work" / "project"
        self.cwd = self.project / "src" / "pkg"
        self.cwd.mkdir(parents=True)
        self.home.mkdir()
        self.environ: dict[str, str] = {"HOME": str(self.home)}

    @property
    def user_file(self) -> Path:
        return self.home / ".config" / "jobkit" / "config.toml"

    def write(self, path: Path, text: str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def load(self, *overrides: dict[str, Any], **environ: str) -> Config:
        return load_config(overrides, cwd=self.cwd, environ={**self.environ, **environ})

    def error(self, *overrides: dict[str, Any], **environ: str) -> str:
        with pytest.raises(ConfigError) as info:
            self.load(*overrides, **environ)
        message = str(info.value)
        assert "\n" not in message and "pydantic" not in message
        assert "Traceback" not in message
        return message


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    sandbox = Env(tmp_path)
    monkeypatch.setenv("HOME", str(sandbox.home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    for name in [*loading_module.ENV_VARS, "JOBKIT_HOME"]:
        monkeypatch.delenv(name, raising=False)
    return sandbox


# ---------------------------------------------------------------------- defaults


def test_defaults(env: Env) -> None:
    config = env.load()
    assert config.backend == "local"
    assert config.store == f"sqlite://{env.home}/.local/share/jobkit/jobkit.db"
    assert config.profile is None
    assert config.resources == {}
    assert config.poll_interval == 1.0
    assert config.key is None and config.key_file is None
    assert config.local == LocalConfig()
    assert config.local.idle_timeout == 60.0
    assert config.slurm == {} and config.kubernetes == {}
    assert config.default_resources == Resources()


def test_jobkit_home_moves_the_default_store(env: Env, tmp_path: Path) -> None:
    config = env.load(JOBKIT_HOME=str(tmp_path / "jk"))
    assert config.store == f"sqlite://{tmp_path}/jk/jobkit.db"


def test_home_dir() -> None:
    assert home_dir({"HOME": "/h"}) == Path("/h/.local/share/jobkit")
    assert home_dir({"HOME": "/h", "JOBKIT_HOME": "/data/jk"}) == Path("/data/jk")
    assert home_dir({"HOME": "/h", "JOBKIT_HOME": "~/jk"}) == Path("/h/jk")
    assert home_dir({"HOME": "/h", "JOBKIT_HOME": ""}) == Path("/h/.local/share/jobkit")


def test_reads_os_environ_and_cwd_when_not_given(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.write(env.project / "jobkit.toml", "poll_interval = 3\n")
    monkeypatch.chdir(env.cwd)
    monkeypatch.setenv("JOBKIT_BACKEND", "slurm")
    config = load_config()
    assert (config.backend, config.poll_interval) == ("slurm", 3.0)


def test_config_is_frozen(env: Env) -> None:
    config = env.load()
    with pytest.raises(Exception, match="frozen"):
        config.backend = "slurm"  # type: ignore[misc]


# -------------------------------------------------------------------- precedence


def test_precedence_across_all_layers(env: Env) -> None:
    env.write(
        env.user_file,
        'backend = "user"\nstore = "memory://user"\npoll_interval = 5\n[local]\ncpus = 2\n',
    )
    env.write(env.project / "jobkit.toml", 'backend = "project"\nstore = "memory://project"\n')
    assert env.load().backend == "project"
    assert env.load().store == "memory://project"
    assert env.load().poll_interval == 5.0  # only the user file sets it
    assert env.load().local.cpus == 2
    assert env.load(JOBKIT_BACKEND="env").backend == "env"
    assert env.load({"backend": "call"}, JOBKIT_BACKEND="env").backend == "call"
    (env.project / "jobkit.toml").unlink()
    assert env.load().backend == "user"
    env.user_file.unlink()
    assert env.load().backend == "local"


def test_later_overrides_win(env: Env) -> None:
    config = env.load({"backend": "a", "poll_interval": 2}, {"backend": "b"}, {"queue": "q"})
    assert (config.backend, config.poll_interval) == ("b", 2.0)
    assert config.resources == {"queue": "q"}


def test_none_in_overrides_means_not_given(env: Env) -> None:
    config = env.load({"backend": "slurm"}, {"backend": None, "store": None, "mem": None})
    assert config.backend == "slurm"
    assert config.resources == {}


def test_environment_variables(env: Env) -> None:
    config = env.load(
        JOBKIT_BACKEND="Slurm",
        JOBKIT_STORE="memory://",
        JOBKIT_KEY=KEY,
        JOBKIT_POLL_INTERVAL="0.25",
    )
    assert config.backend == "slurm"
    assert config.store == "memory://"
    assert config.key is not None and config.key.get_secret_value() == KEY
    assert KEY not in repr(config)
    assert config.poll_interval == 0.25


def test_empty_and_unrelated_environment_variables_are_ignored(env: Env) -> None:
    config = env.load(JOBKIT_BACKEND="", JOBKIT_JOB_ID="jk-123", JOBKIT_WHATEVER="x")
    assert config.backend == "local"


def test_nested_tables_merge_key_wise(env: Env) -> None:
    env.write(
        env.user_file,
        """
[local]
cpus = 8
max_jobs = 2
[resources]
mem = "4GB"
env = {A = "1", B = "2"}
[slurm]
account = "lab"
[slurm.extra]
x = 1
""",
    )
    env.write(
        env.project / "jobkit.toml",
        """
[local]
max_jobs = 4
[resources]
time = "1h"
env = {B = "3"}
[slurm.extra]
y = 2
""",
    )
    config = env.load({"local": {"mem": "1GB"}, "env": {"C": "4"}})
    assert config.local.cpus == 8 and config.local.max_jobs == 4 and config.local.mem == 10**9
    assert config.resources == {
        "mem": 4 * 10**9,
        "time": timedelta(hours=1),
        "env": {"A": "1", "B": "3", "C": "4"},
    }
    assert config.slurm == {"account": "lab", "extra": {"x": 1, "y": 2}}


def test_resource_keys_at_top_level_of_overrides(env: Env) -> None:
    config = env.load(
        {"resources": {"cpus": 1, "mem": "2GB"}},
        {"backend": "slurm", "queue": "gpu", "cpus": 2, "resources": {"retries": 1}},
    )
    assert config.backend == "slurm"
    assert config.resources == {"cpus": 2, "mem": 2 * 10**9, "queue": "gpu", "retries": 1}
    assert config.default_resources == Resources(cpus=2, mem="2GB", queue="gpu", retries=1)


def test_slurm_and_kubernetes_at_top_level_are_backend_settings(env: Env) -> None:
    config = env.load({"slurm": {"account": "x"}, "kubernetes": {"namespace": "ml"}})
    assert config.slurm == {"account": "x"}
    assert config.kubernetes == {"namespace": "ml"}
    assert config.resources == {}


def test_resources_instance_in_overrides(env: Env) -> None:
    config = env.load({"resources": Resources(cpus=3, queue="q")}, {"mem": "1GB"})
    assert config.resources == {"cpus": 3, "queue": "q", "mem": 10**9}


def test_key_and_key_file_replace_each_other(env: Env) -> None:
    env.write(env.project / "jobkit.toml", 'key_file = "secrets/key"\n')
    config = env.load()
    assert config.key_file == env.project / "secrets" / "key" and config.key is None
    config = env.load(JOBKIT_KEY=KEY)
    assert config.key_file is None and config.key is not None
    config = env.load({"key_file": "/etc/jobkit.key"}, JOBKIT_KEY=KEY)
    assert config.key is None and config.key_file == Path("/etc/jobkit.key")


def test_key_and_key_file_in_one_layer_is_an_error(env: Env) -> None:
    message = env.error({"key": KEY, "key_file": "/k"})
    assert message == "configure(): set either key or key_file, not both"


# -------------------------------------------------------------- relative paths


def test_relative_paths_are_anchored_to_their_file(env: Env) -> None:
    env.write(env.project / "jobkit.toml", 'store = "sqlite://./state/jobs.db"\nkey_file = "k"\n')
    config = env.load()  # cwd is two levels below the file
    assert config.store == f"sqlite://{env.project}/state/jobs.db"
    assert config.key_file == env.project / "k"
    env.write(env.project / "jobkit.toml", 'store = "sqlite://../data/jobs.db"\n')
    assert env.load().store == f"sqlite://{env.project.parent}/data/jobs.db"


def test_relative_paths_from_env_and_overrides_are_anchored_to_cwd(env: Env) -> None:
    assert env.load(JOBKIT_STORE="sqlite://./x.db").store == f"sqlite://{env.cwd}/x.db"
    assert env.load({"store": "sqlite://../x.db"}).store == f"sqlite://{env.cwd.parent}/x.db"
    assert env.load({"key_file": "k"}).key_file == env.cwd / "k"


def test_home_is_expanded(env: Env) -> None:
    env.write(env.user_file, 'store = "sqlite:///~/jobs.db"\nkey_file = "~/.jobkit/key"\n')
    config = env.load()
    assert config.store == f"sqlite://{env.home}/jobs.db"
    assert config.key_file == env.home / ".jobkit" / "key"
    assert env.load({"store": "sqlite://~/x.db"}).store == f"sqlite://{env.home}/x.db"


def test_three_slash_sqlite_urls_are_absolute_as_jobkit_prints_them(env: Env) -> None:
    """``sqlite:///abs`` is read as file URLs read it, so a printed URL round-trips."""
    assert env.load(JOBKIT_STORE="sqlite:///var/jk.db").store == "sqlite:///var/jk.db"
    env.write(env.project / "jobkit.toml", 'store = "sqlite:///state/jobs.db"\n')
    assert env.load().store == "sqlite:///state/jobs.db"


@pytest.mark.parametrize(
    ("layer", "source"),
    [
        ({"JOBKIT_STORE": "sqlite://x.db"}, "JOBKIT_STORE"),
        ({"JOBKIT_STORE": "sqlite:///./x.db"}, "JOBKIT_STORE"),
        ({"file": "sqlite://data/x.db"}, "jobkit.toml"),
        ({"file": "sqlite:///../x.db"}, "jobkit.toml"),
        ({"override": "sqlite://x.db"}, "configure()"),
    ],
)
def test_ambiguous_sqlite_urls_are_refused_naming_their_source(
    env: Env, layer: dict[str, str], source: str
) -> None:
    layer = dict(layer)
    if "file" in layer:
        env.write(env.project / "jobkit.toml", f'store = "{layer.pop("file")}"\n')
    overrides = [{"store": layer.pop("override")}] if "override" in layer else []
    message = env.error(*overrides, **layer)
    assert source in message and "ambiguous" in message and "'sqlite://." in message


def test_absolute_and_non_sqlite_stores_are_kept(env: Env) -> None:
    assert env.load({"store": "sqlite:////var/jk.db"}).store == "sqlite:///var/jk.db"
    assert env.load({"store": "sqlite:///var/jk.db"}).store == "sqlite:///var/jk.db"
    assert env.load({"store": "s3://bucket/prefix"}).store == "s3://bucket/prefix"
    assert env.load({"store": "memory://"}).store == "memory://"


# ------------------------------------------------------------------ file search


def test_nearest_project_file_from_a_subdirectory(env: Env) -> None:
    env.write(env.project.parent / "jobkit.toml", 'backend = "far"\n')
    env.write(env.project / "jobkit.toml", 'backend = "near"\n')
    assert env.load().backend == "near"


def test_search_stops_at_the_first_file_found(env: Env) -> None:
    env.write(env.project.parent / "jobkit.toml", 'backend = "far"\npoll_interval = 9\n')
    env.write(env.project / "jobkit.toml", 'backend = "near"\n')
    assert env.load().poll_interval == 1.0  # the farther file is not merged


def test_jobkit_toml_wins_over_pyproject_in_the_same_directory(env: Env) -> None:
    env.write(env.project / "pyproject.toml", '[tool.jobkit]\nbackend = "pyproject"\n')
    env.write(env.project / "jobkit.toml", 'backend = "jobkit"\n')
    assert env.load().backend == "jobkit"


def test_pyproject_tool_jobkit(env: Env) -> None:
    env.write(
        env.project / "pyproject.toml",
        """
[project]
name = "demo"
[tool.jobkit]
backend = "slurm"
[tool.jobkit.resources]
cpus = 4
""",
    )
    config = env.load()
    assert config.backend == "slurm" and config.resources == {"cpus": 4}


def test_nearer_pyproject_beats_farther_jobkit_toml(env: Env) -> None:
    env.write(env.project.parent / "jobkit.toml", 'backend = "far"\n')
    env.write(env.project / "pyproject.toml", '[tool.jobkit]\nbackend = "near"\n')
    assert env.load().backend == "near"


def test_pyproject_without_tool_jobkit_is_skipped(env: Env) -> None:
    env.write(env.project.parent / "jobkit.toml", 'backend = "far"\n')
    env.write(env.project / "pyproject.toml", '[project]\nname = "x"\n')
    env.write(env.cwd / "pyproject.toml", '[project]\nname = "jobkit-demo"\n[tool.ruff]\n')
    assert env.load().backend == "far"


def test_pyproject_that_never_mentions_jobkit_is_not_parsed(env: Env) -> None:
    env.write(env.project / "pyproject.toml", "this is [not toml")
    assert env.load().backend == "local"


def test_each_file_is_parsed_once_per_call(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.write(env.user_file, 'profile = "p"\n[profiles.p]\nbackend = "u"\n')
    env.write(env.project / "pyproject.toml", "[tool.jobkit]\n[tool.jobkit.profiles.p]\n")
    env.write(env.cwd / "pyproject.toml", '[project]\nname = "other"\n')
    calls: list[Path] = []
    real = loading_module._parse_toml

    def counting(path: Path, text: str) -> dict[str, Any]:
        calls.append(path)
        return real(path, text)

    monkeypatch.setattr(loading_module, "_parse_toml", counting)
    assert env.load().backend == "u"
    assert sorted(calls) == sorted([env.user_file, env.project / "pyproject.toml"])


def test_user_file_honours_xdg_config_home(env: Env, tmp_path: Path) -> None:
    env.write(tmp_path / "xdg" / "jobkit" / "config.toml", 'backend = "xdg"\n')
    env.write(env.user_file, 'backend = "home"\n')
    assert env.load(XDG_CONFIG_HOME=str(tmp_path / "xdg")).backend == "xdg"
    assert env.load(XDG_CONFIG_HOME="relative/ignored").backend == "home"
    assert env.load().backend == "home"


# --------------------------------------------------------------------- profiles


PROJECT_WITH_PROFILES = """
backend = "local"
[resources]
cpus = 1
[profiles.cluster]
backend = "slurm"
resources = {queue = "gpu", gpus = 1}
[profiles.cluster.slurm]
account = "lab"
[profiles.dev]
poll_interval = 0.1
"""


def test_profile_selected_by_override_env_and_file(env: Env) -> None:
    env.write(env.project / "jobkit.toml", PROJECT_WITH_PROFILES)
    assert env.load().profile is None
    config = env.load({"profile": "cluster"})
    assert (config.profile, config.backend) == ("cluster", "slurm")
    assert config.resources == {"cpus": 1, "queue": "gpu", "gpus": 1}
    assert config.slurm == {"account": "lab"}
    assert env.load(JOBKIT_PROFILE="dev").poll_interval == 0.1
    assert env.load({"profile": "cluster"}, JOBKIT_PROFILE="dev").profile == "cluster"


def test_profile_key_in_files(env: Env) -> None:
    env.write(env.user_file, 'profile = "dev"\n')
    env.write(env.project / "jobkit.toml", PROJECT_WITH_PROFILES)
    assert env.load().profile == "dev"
    env.write(env.project / "jobkit.toml", 'profile = "cluster"\n' + PROJECT_WITH_PROFILES)
    assert env.load().profile == "cluster"  # the project file's key beats the user file's
    assert env.load(JOBKIT_PROFILE="dev").profile == "dev"


def test_profile_sits_on_top_of_its_own_file(env: Env) -> None:
    env.write(
        env.user_file,
        """
backend = "local"
poll_interval = 2
[profiles.cluster]
backend = "slurm"
poll_interval = 3
[profiles.cluster.local]
max_jobs = 1
""",
    )
    env.write(env.project / "jobkit.toml", 'backend = "kubernetes"\n')
    config = env.load({"profile": "cluster"})
    assert config.poll_interval == 3.0  # user profile beats user base
    assert config.local.max_jobs == 1
    assert config.backend == "kubernetes"  # project base beats the user file's profile
    assert env.load({"profile": "cluster"}, JOBKIT_BACKEND="env").backend == "env"


def test_profile_in_pyproject(env: Env) -> None:
    env.write(
        env.project / "pyproject.toml",
        """
[tool.jobkit]
backend = "local"
[tool.jobkit.profiles.k8s]
backend = "kubernetes"
kubernetes = {namespace = "ml"}
""",
    )
    config = env.load(JOBKIT_PROFILE="k8s")
    assert (config.backend, config.kubernetes) == ("kubernetes", {"namespace": "ml"})


def test_unknown_profile_lists_profiles_and_where(env: Env) -> None:
    env.write(env.user_file, "[profiles.laptop]\n")
    project = env.write(env.project / "jobkit.toml", PROJECT_WITH_PROFILES)
    message = env.error(JOBKIT_PROFILE="clustr")
    assert message == (
        "JOBKIT_PROFILE environment variable: unknown profile 'clustr' (did you mean "
        f"'cluster'?): defined profiles are cluster ({project}), dev ({project}), "
        f"laptop ({env.user_file})"
    )


def test_unknown_profile_when_none_defined(env: Env) -> None:
    message = env.error({"profile": "gpu"})
    assert message.startswith("configure(): unknown profile 'gpu': no profiles are defined")
    assert "[profiles.NAME]" in message


def test_profile_selected_in_a_file_must_exist(env: Env) -> None:
    path = env.write(env.project / "jobkit.toml", 'profile = "missing"\n')
    assert env.error().startswith(f"{path}: unknown profile 'missing'")


def test_profiles_cannot_nest_or_select(env: Env) -> None:
    path = env.write(env.project / "jobkit.toml", '[profiles.a]\nprofile = "b"\n')
    assert env.error().startswith(f"{path}: profile 'a' cannot set 'profile'")


def test_profiles_must_be_tables(env: Env) -> None:
    path = env.write(env.project / "jobkit.toml", 'profiles = "cluster"\n')
    assert env.error().startswith(f"{path}: 'profiles' must hold one table per profile")


def test_bad_value_in_profile_names_the_profile_table(env: Env) -> None:
    path = env.write(env.project / "jobkit.toml", "[profiles.gpu]\npoll_interval = 0\n")
    assert env.error(JOBKIT_PROFILE="gpu").startswith(
        f"{path} [profiles.gpu]: invalid poll_interval=0: expected a number of seconds > 0"
    )
    path = env.write(
        env.project / "pyproject.toml", "[tool.jobkit.profiles.gpu.resources]\ngpus = 1.5\n"
    )
    (env.project / "jobkit.toml").unlink()
    assert env.error(JOBKIT_PROFILE="gpu").startswith(
        f"{path} [tool.jobkit.profiles.gpu]: invalid resource gpus=1.5"
    )


def test_bad_profile_value_is_reported(env: Env) -> None:
    message = env.error({"profile": "has space"})
    assert message.startswith("configure(): invalid profile='has space': expected a profile name")


# ------------------------------------------------------------------ file errors


def test_invalid_toml_names_file_line_and_column(env: Env) -> None:
    path = env.write(env.project / "jobkit.toml", 'backend = "local"\nstore = \n')
    message = env.error()
    assert message.startswith(f"invalid TOML in {path}: ")
    assert "line 2" in message and "column" in message


def test_invalid_toml_in_pyproject(env: Env) -> None:
    path = env.write(env.project / "pyproject.toml", "[tool.jobkit\nbackend = 1\n")
    assert env.error().startswith(f"invalid TOML in {path}: ")


def test_non_utf8_file(env: Env) -> None:
    path = env.project / "jobkit.toml"
    path.write_bytes(b'backend = "\xff"\n')
    assert env.error() == f"invalid TOML in {path}: the file is not UTF-8 text"


def test_unreadable_file(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    path = env.write(env.user_file, 'backend = "x"\n')
    real = Path.read_bytes

    def deny(self: Path) -> bytes:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", deny)
    assert env.error() == (
        f"cannot read config file {path}: Permission denied; fix its permissions or remove it"
    )


def test_tool_jobkit_must_be_a_table(env: Env) -> None:
    path = env.write(env.project / "pyproject.toml", '[tool]\njobkit = "yes"\n')
    assert env.error() == f"{path} [tool.jobkit]: expected a table of jobkit settings"


# -------------------------------------------------------------- key/value errors


def test_unknown_key_in_file_suggests_and_lists(env: Env) -> None:
    path = env.write(env.project / "jobkit.toml", 'backnd = "slurm"\n')
    assert env.error() == (
        f"{path}: unknown key 'backnd' (did you mean 'backend'?): valid keys are backend, "
        "backends, key, key_file, kubernetes, local, poll_interval, profile, profiles, "
        "resources, slurm, store"
    )


def test_unknown_nested_key(env: Env) -> None:
    env.write(env.user_file, "[local]\nmax_job = 3\n")
    assert env.error() == (
        f"{env.user_file}: unknown key 'local.max_job' (did you mean 'max_jobs'?): valid keys "
        "are cpus, gpus, idle_timeout, max_jobs, mem, start_method"
    )


def test_resource_key_at_top_level_of_a_file(env: Env) -> None:
    path = env.write(env.project / "jobkit.toml", "cpus = 2\n")
    assert env.error().startswith(
        f"{path}: unknown key 'cpus' (resources go under [resources]: cpus = ...)"
    )


def test_unknown_resource_in_file(env: Env) -> None:
    path = env.write(env.project / "jobkit.toml", "[resources]\ngpu = 1\n")
    assert env.error().startswith(f"{path}: unknown resource 'gpu' (did you mean 'gpus'?)")


def test_unknown_key_in_overrides(env: Env) -> None:
    message = env.error({"backnd": "slurm"})
    assert message.startswith("configure(): unknown key 'backnd' (did you mean 'backend'?)")
    assert "queue" in message  # resources are valid at the top level of overrides


def test_overrides_source_label(env: Env) -> None:
    message = env.error(Overrides("remote()", cpus=0))
    assert message.startswith("remote(): invalid resource cpus=0")


def test_overrides_must_be_mappings(env: Env) -> None:
    with pytest.raises(ConfigError, match=r"configure\(\): expected a mapping"):
        load_config([["backend", "x"]], cwd=env.cwd, environ=env.environ)  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"backend": 3}, "configure(): invalid backend=3: expected a backend name like 'local'"),
        ({"backend": "has space"}, "configure(): invalid backend='has space'"),
        (
            {"store": "jobs.db"},
            "configure(): invalid store='jobs.db': expected a store URL like "
            "'sqlite:///path/jobkit.db', 'memory://' or 's3://bucket/prefix'",
        ),
        (
            {"poll_interval": 0},
            "configure(): invalid poll_interval=0: expected a number of seconds > 0",
        ),
        ({"poll_interval": "soon"}, "configure(): invalid poll_interval='soon'"),
        (
            {"key": "not-hex-" * 8},
            "configure(): invalid key: expected a hex string of at least "
            "32 characters (the value is not shown)",
        ),
        ({"key": "abcd"}, "configure(): invalid key: expected a hex string"),
        ({"key_file": 5}, "configure(): invalid key_file=5: expected a path"),
        ({"local": 3}, "configure(): invalid local=3: expected a table of local-backend"),
        ({"local": {"cpus": 0}}, "configure(): invalid local.cpus=0: expected a number of CPUs"),
        ({"local": {"cpus": "inf"}}, "configure(): invalid local.cpus='inf'"),
        ({"local": {"mem": "lots"}}, "configure(): invalid local.mem='lots': expected a size"),
        (
            {"local": {"gpus": 1.5}},
            "configure(): invalid local.gpus=1.5: expected a number of "
            "GPUs >= 0 or a list of GPU names",
        ),
        ({"local": {"gpus": ["", "b"]}}, "configure(): invalid local.gpus=['', 'b']"),
        ({"local": {"max_jobs": 0}}, "configure(): invalid local.max_jobs=0: expected a whole"),
        ({"local": {"idle_timeout": -1}}, "configure(): invalid local.idle_timeout=-1"),
        (
            {"local": {"start_method": "forkserver"}},
            "configure(): invalid local.start_method='forkserver': "
            "expected 'warm', 'fork' or 'spawn'",
        ),
        ({"resources": [1]}, "configure(): invalid resources=[1]: expected a table of resources"),
        ({"mem": "lots"}, "configure(): invalid resource mem='lots': expected a size like '16GB'"),
        ({"slurm": "x"}, "configure(): invalid slurm='x': expected a table of Slurm"),
        ({"kubernetes": {1: 2}}, "configure(): invalid kubernetes={1: 2}: expected a table"),
    ],
)
def test_invalid_values_name_source_key_value_and_form(
    env: Env, overrides: dict[str, Any], message: str
) -> None:
    assert env.error(overrides).startswith(message)


def test_secret_key_value_never_appears_in_errors(env: Env) -> None:
    secret = "zz" + "ab" * 20
    assert secret not in env.error(JOBKIT_KEY=secret)
    assert secret not in env.error({"key": secret})


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        (
            "JOBKIT_POLL_INTERVAL",
            "fast",
            "JOBKIT_POLL_INTERVAL environment variable: invalid "
            "poll_interval='fast': expected a number of seconds > 0",
        ),
        ("JOBKIT_STORE", "nowhere", "JOBKIT_STORE environment variable: invalid store='nowhere'"),
        ("JOBKIT_BACKEND", "a b", "JOBKIT_BACKEND environment variable: invalid backend='a b'"),
        ("JOBKIT_KEY", "xyz", "JOBKIT_KEY environment variable: invalid key: expected a hex"),
        ("JOBKIT_PROFILE", "p", "JOBKIT_PROFILE environment variable: unknown profile 'p'"),
    ],
)
def test_bad_environment_variables(env: Env, var: str, value: str, message: str) -> None:
    assert env.error(**{var: value}).startswith(message)


def test_bad_value_in_user_file_names_it(env: Env) -> None:
    env.write(env.user_file, '[local]\nmem = "lots"\n')
    assert env.error().startswith(f"{env.user_file}: invalid local.mem='lots'")


def test_bad_value_in_pyproject_names_the_table(env: Env) -> None:
    path = env.write(env.project / "pyproject.toml", "[tool.jobkit]\npoll_interval = -1\n")
    assert env.error().startswith(f"{path} [tool.jobkit]: invalid poll_interval=-1")


# ------------------------------------------------------------------ local config


def test_local_settings_are_parsed(env: Env) -> None:
    env.write(
        env.user_file,
        """
[local]
cpus = 2.5
mem = "16GB"
gpus = ["a100-0", "a100-1"]
max_jobs = 4
idle_timeout = "5m"
start_method = "SPAWN"
""",
    )
    local = env.load().local
    assert local.cpus == 2.5 and local.mem == 16 * 10**9
    assert local.gpus == ["a100-0", "a100-1"]
    assert (local.max_jobs, local.idle_timeout, local.start_method) == (4, 300.0, "spawn")
    assert local.resolved_start_method == "spawn"


def test_local_fake_gpu_count_replaces_names(env: Env) -> None:
    assert env.load({"local": {"gpus": 2}}).local.gpus == 2
    assert env.load({"local": {"gpus": 0}}).local.gpus == 0


def test_resolved_start_method_default() -> None:
    import sys

    expected = "warm" if sys.platform.startswith("linux") else "spawn"
    assert LocalConfig().resolved_start_method == expected
    assert LocalConfig(start_method="fork").resolved_start_method == "fork"


# ------------------------------------------------------- one rule for numbers


@pytest.mark.parametrize(
    ("local", "resources"),
    [
        ({"max_jobs": 2.0}, {"nodes": 2.0}),
        ({"max_jobs": "2.0"}, {"nodes": "2.0"}),
        ({"max_jobs": " 2 "}, {"nodes": " 2 "}),
        ({"gpus": 1.0}, {"gpus": 1.0}),
    ],
)
def test_whole_floats_are_whole_numbers_in_config_as_in_resources(
    env: Env, local: dict[str, Any], resources: dict[str, Any]
) -> None:
    config = env.load({"local": local, "resources": resources})
    (key, _), (field, _) = next(iter(local.items())), next(iter(resources.items()))
    local_value, resource_value = getattr(config.local, key), getattr(Resources(**resources), field)
    assert type(local_value) is int and type(resource_value) is int
    assert config.resources[field] == resource_value


def test_whole_float_from_a_toml_file_is_accepted(env: Env) -> None:
    env.write(env.project / "jobkit.toml", "[local]\nmax_jobs = 3.0\n[resources]\nnodes = 2.0\n")
    config = env.load()
    assert (config.local.max_jobs, config.resources["nodes"]) == (3, 2)
    assert type(config.local.max_jobs) is int


@pytest.mark.parametrize("bad", [2.5, True, "two", float("nan"), 0])
def test_config_and_resources_refuse_the_same_numbers_with_the_same_words(
    env: Env, bad: Any
) -> None:
    local_error = env.error({"local": {"max_jobs": bad}})
    with pytest.raises(ConfigError) as info:
        Resources(nodes=bad)
    assert (
        local_error == f"configure(): invalid local.max_jobs={bad!r}: expected a whole number >= 1"
    )
    assert str(info.value) == f"invalid resource nodes={bad!r}: expected a whole number >= 1"
