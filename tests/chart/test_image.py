"""The container image: the Dockerfile is lint-clean and agrees with the chart, and what it installs works.

No Docker engine runs here, so the image's contents are built the way the Dockerfile builds them:
the project's wheel (`pip wheel --no-deps .`), the wheels of its dependencies, and an offline
install of only those wheels into a fresh virtualenv, which must then run `tokensync`.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import venv
from pathlib import Path

import pytest
import yaml

from .support import CHART, REPO, render_set, run, tool

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    parsed = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            parsed.append((keyword.upper(), " ".join(rest.split())))
    return parsed


def only(keyword: str) -> list[str]:
    return [rest for k, rest in instructions() if k == keyword]


def stage(index: int) -> list[tuple[str, str]]:
    """The instructions of one build stage (0: the first FROM, -1: the last)."""
    parsed = instructions()
    starts = [i for i, (k, _) in enumerate(parsed) if k == "FROM"]
    start = starts[index]
    end = next((s for s in starts if s > start), len(parsed))
    return parsed[start:end]


def test_hadolint_passes() -> None:
    result = run([tool("hadolint"), "--no-color", "--failure-threshold", "style", DOCKERFILE], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # An inline ignore must say why, on the same line.
    for line in DOCKERFILE.read_text().splitlines():
        if "hadolint ignore" in line:
            assert re.search(r"hadolint ignore=\S+\s+\S", line), f"unjustified ignore: {line}"


def test_user_matches_the_charts_run_as_user() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    (user,) = only("USER")
    uid, _, gid = user.partition(":")
    assert int(uid) == values["podSecurityContext"]["runAsUser"] == values["securityContext"]["runAsUser"]
    assert int(gid) == values["podSecurityContext"]["runAsGroup"] == values["securityContext"]["runAsGroup"]
    assert int(uid) != 0


def test_entrypoint_runs_the_operator() -> None:
    (entrypoint,) = only("ENTRYPOINT")
    assert json.loads(entrypoint) == ["tokensync", "run"]
    assert only("EXPOSE") == ["8080 8081"]


def test_both_stages_use_the_same_pinned_slim_python() -> None:
    args = dict(a.split("=", 1) for a in only("ARG") if "=" in a)
    image = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", image), image
    assert only("FROM") == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]


def test_runtime_stage_installs_only_wheels_without_caches() -> None:
    runtime = stage(-1)
    runs = [rest for k, rest in runtime if k == "RUN"]
    assert len(runs) == 1
    assert "pip install --no-cache-dir --no-index --find-links=/wheels" in runs[0]
    assert not re.search(r"apt-get|gcc|build-essential", runs[0])
    env = " ".join(rest for k, rest in runtime if k == "ENV")
    for setting in ("PIP_NO_CACHE_DIR=1", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"):
        assert setting in env
    labels = " ".join(rest for k, rest in runtime if k == "LABEL")
    for key in ("title", "description", "source", "licenses", "version"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".venv", ".git", ".tools", ".pytest_cache", ".mypy_cache", ".ruff_cache", "tests"} <= ignored


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_the_wheel_installs_alone_and_runs(tmp_path: Path) -> None:
    """The Dockerfile's build and runtime stages, minus the container."""
    build = stage(0)
    (build_run,) = [rest for k, rest in build if k == "RUN"]
    assert "pip wheel --no-deps --wheel-dir /wheels ." in build_run
    assert "pip wheel --wheel-dir /wheels /wheels/tokensync-*.whl" in build_run

    # The build stage's context: exactly what its COPY instructions copy (and .dockerignore allows).
    source = tmp_path / "src"
    for _, copy in (i for i in build if i[0] == "COPY"):
        *paths, dest = copy.split()
        for path in paths:
            target = source / dest / Path(path).name if dest.endswith("/") else source / dest
            if (REPO / path).is_dir():
                shutil.copytree(REPO / path, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / path, target)
    assert (source / "pyproject.toml").is_file()
    assert (source / "operator" / "tokensync" / "cli.py").is_file()

    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", wheels, source], timeout=300)
    (wheel,) = wheels.glob("tokensync-*.whl")
    assert wheel.name.startswith("tokensync-0.2.0-")
    run([*pip, "wheel", "--quiet", "--wheel-dir", wheels, wheel], timeout=300)
    assert all(w.suffix == ".whl" for w in wheels.iterdir()), "only wheels: the runtime stage has no compilers"

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    run([python, "-m", "pip", "install", "--quiet", "--no-cache-dir", "--no-index", "--find-links", wheels, wheel])

    tokensync = env_dir / "bin" / "tokensync"
    assert run([tokensync, "--version"]).stdout.strip() == "tokensync, version 0.2.0"
    crd = run([tokensync, "crd"]).stdout
    assert crd == (REPO / "crds" / "tokensync.io_clientcredentials.yaml").read_text()
    # Nothing from the source tree leaked in: the package comes from the venv.
    where = run([python, "-c", "import tokensync; print(tokensync.__file__)"]).stdout.strip()
    assert where.startswith(str(env_dir)), where

    # The installed `tokensync run` knows every flag the chart passes, with and without leader election.
    help_text = run([tokensync, "run", "--help"]).stdout
    chart_flags = {arg.partition("=")[0] for name in ("default", "ha") for arg in render_set(name).args[1:]}
    assert {"--health-port", "--leader-elect", "--workers"} <= chart_flags
    for flag in sorted(chart_flags):
        assert flag in help_text, flag
