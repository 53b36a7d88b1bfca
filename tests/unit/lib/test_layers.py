"""The layers are enforced: the composition roots (``apps``) above the services above the library
(``coinpilot``), and every service's ``core.py`` free of I/O libraries.

The contracts are pyproject.toml's ``[tool.importlinter]``; ``lint-imports`` checks them on the
import graph (every import statement, those inside functions too), so a wrong-way import fails
here before anything runs it. ``test_core_purity.py`` checks the cores again at run time.
The checker's own test runs the same contracts on a small tree with deliberate violations.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
LAYERS = "composition roots (apps) above the services above the library (coinpilot)"
PURE_CORES = "a service's core.py imports no I/O library, directly or through what it imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Check pyproject's contracts on the packages found first from ``root`` (no cache written)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(CONFIG), "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def verdicts(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """Contract name -> ``KEPT`` or ``BROKEN``, from the checker's summary lines."""
    found: dict[str, str] = {}
    for line in result.stdout.splitlines():
        for name in (LAYERS, PURE_CORES):
            if line.startswith(name + " "):
                found[name] = line.rsplit(" ", 1)[-1]
    return found


def test_the_repository_keeps_its_layers() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert verdicts(result) == {LAYERS: "KEPT", PURE_CORES: "KEPT"}


# A miniature of the repository: one app, one service with an edge and a pure core, a library.
TREE = {
    "apps/__init__.py": "",
    "apps/host.py": "import services.risk.app\n",
    "services/__init__.py": "",
    "services/risk/__init__.py": "",
    "services/risk/app.py": "import coinpilot.bus\nfrom services.risk import core\n",
    "services/risk/core.py": "from coinpilot import clock\n",
    "coinpilot/__init__.py": "",
    "coinpilot/bus.py": "import nats\n",
    "coinpilot/clock.py": "import datetime\n",
}

# (file, line appended to it, the contract it breaks)
VIOLATIONS = {
    "library imports a service": ("coinpilot/clock.py", "import services.risk.core\n", LAYERS),
    "library imports a service lazily": (
        "coinpilot/clock.py",
        "def load():\n    from services.risk import core\n    return core\n",
        LAYERS,
    ),
    "service imports an app": ("services/risk/app.py", "from apps import host\n", LAYERS),
    "library imports an app": ("coinpilot/bus.py", "import apps.host\n", LAYERS),
    "core imports an I/O library": ("services/risk/core.py", "import redis\n", PURE_CORES),
    "core reaches an I/O library through the library": (
        "services/risk/core.py",
        "from coinpilot import bus\n",
        PURE_CORES,
    ),
}


def build_tree(root: Path) -> None:
    for relative, text in TREE.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_keeps_a_tree_without_violations(tmp_path: Path) -> None:
    build_tree(tmp_path)
    result = lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert verdicts(result) == {LAYERS: "KEPT", PURE_CORES: "KEPT"}


@pytest.mark.parametrize("violation", list(VIOLATIONS))
def test_the_checker_fails_on_a_wrong_way_import(tmp_path: Path, violation: str) -> None:
    build_tree(tmp_path)
    relative, line, broken = VIOLATIONS[violation]
    with (tmp_path / relative).open("a") as file:
        file.write(line)
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    kept = PURE_CORES if broken == LAYERS else LAYERS
    assert verdicts(result) == {broken: "BROKEN", kept: "KEPT"}
