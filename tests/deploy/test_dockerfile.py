"""The image definition, structurally (no container engine here to build it).

Multi-stage, pinned slim base, locked install into a venv, non-root runtime, the CLI as entrypoint,
no HEALTHCHECK (Kubernetes probes), and a build context that holds everything the COPYs need.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from dataclasses import dataclass, field

import pytest

from tests.deploy.support import REPO, resolve_cli

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
BASE = re.compile(r"^python:3\.11\.\d+-slim-bookworm(@sha256:[a-f0-9]{64})?$")


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name or self.image} has no {keyword}"
        return found[-1]


def logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return lines


def parse() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with ${ARG} in FROM resolved."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical_lines(DOCKERFILE.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image, name))
        elif keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"{args} is not the exec form"
    return value


def test_the_image_is_built_in_stages_from_a_pinned_slim_python() -> None:
    _, stages = parse()
    assert len(stages) >= 2
    for stage in stages:
        assert BASE.match(stage.image), f"base image {stage.image} is not python:3.11.<patch>-slim-bookworm"
    assert stages[0].name == "builder"


def test_the_builder_installs_the_locked_dependencies_into_a_venv() -> None:
    _, stages = parse()
    runs = " ".join(stages[0].all("RUN"))
    assert "python -m venv /opt/venv" in runs
    installs = [cmd for cmd in re.split(r"&&", runs) if "pip install" in cmd]
    assert installs and all("-c constraints.txt" in cmd for cmd in installs)
    assert any(cmd.strip().endswith(" .") for cmd in installs), "the project itself is not installed"


def test_the_runtime_stage_copies_the_venv_and_runs_as_a_non_root_user() -> None:
    _, stages = parse()
    runtime = stages[-1]
    assert "--from=builder /opt/venv /opt/venv" in runtime.all("COPY")
    user = runtime.last("USER")
    uid = user.split(":")[0]
    assert uid == "10001", f"USER {user}"
    assert "--uid 10001" in " ".join(runtime.all("RUN"))


def test_the_entrypoint_is_the_cli_and_the_default_command_runs_every_service() -> None:
    _, stages = parse()
    runtime = stages[-1]
    assert exec_form(runtime.last("ENTRYPOINT")) == ["coinpilot"]
    command = exec_form(runtime.last("CMD"))
    assert command == ["run", "all"]
    resolve_cli(command)


def test_no_healthcheck_and_nothing_but_tmp_is_written() -> None:
    _, stages = parse()
    runtime = stages[-1]
    assert runtime.all("HEALTHCHECK") == []
    assert runtime.last("WORKDIR") == "/tmp"
    env = " ".join(runtime.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "MPLCONFIGDIR=/tmp" in env
    assert "COINPILOT_HTTP_PORT=8000" in env
    assert runtime.last("EXPOSE") == "8000"


# ---- build context -----------------------------------------------------------------------------


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics: the last matching pattern wins; '!' re-includes; a dir covers its files."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        anywhere = pattern.startswith("**/") and any(fnmatch.fnmatchcase(p, pattern[3:]) for p in parts)
        if pattern == "**" or anywhere or any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            result = not negate
    return result


def dockerignore() -> list[str]:
    return [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def copied_sources() -> list[str]:
    _, stages = parse()
    sources: list[str] = []
    for stage in stages:
        for args in stage.all("COPY"):
            words = shlex.split(args)
            if any(w.startswith("--from") for w in words):
                continue
            sources.extend(w for w in words[:-1] if not w.startswith("--"))
    return sources


def test_everything_the_image_copies_exists_and_is_in_the_build_context() -> None:
    patterns = dockerignore()
    sources = copied_sources()
    assert {"pyproject.toml", "constraints.txt", "README.md", "libs", "services", "apps"} <= set(sources)
    for source in sources:
        path = REPO / source
        assert path.exists(), f"COPY {source}: missing"
        files = [path] if path.is_file() else [p for p in path.rglob("*.py")][:50]
        assert files, f"COPY {source}: nothing to copy"
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            assert not ignored(relative, patterns), f"{relative} is excluded by .dockerignore"


@pytest.mark.parametrize(
    "path",
    [
        "tests/conftest.py",
        ".git/HEAD",
        "helm/coinpilot/Chart.yaml",
        ".venv/bin/python",
        "libs/coinpilot/__pycache__/clock.cpython-311.pyc",
    ],
)
def test_the_build_context_leaves_out_what_the_image_does_not_need(path: str) -> None:
    assert ignored(path, dockerignore())
