"""The floors hold: the import-linter contract in pyproject.toml is kept, and it breaks
when a forbidden import is added (so the check is not one that cannot fail).

    loopchat (CLI, `loopchat run`)       imports everything; nothing imports it
    harness (bench, simulation)          above the service and the trainer
    service        |        trainer      side by side; never import each other
    store (database, domain, files, typed records)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("store", "service", "trainer", "harness", "loopchat")
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is a dev dependency")


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the packages under `root`, with the repo's contract."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_tree(dest: Path) -> Path:
    """The five packages (Python files only) and pyproject.toml, copied under `dest`."""
    for name in PACKAGES:
        shutil.copytree(
            ROOT / name,
            dest / name,
            ignore=lambda _dir, names: [
                n for n in names if not (n.endswith(".py") or "." not in n) or n == "__pycache__"
            ],
        )
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_the_repository_keeps_its_floors() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("trainer/lock.py", "service.app"),  # the trainer reaching into the server
        ("service/app.py", "trainer.round"),  # the server reaching into the trainer
        ("store/db/session.py", "service.settings"),  # the floor standing on a room
        ("service/runtime.py", "harness.bench.serve"),  # the product carrying the harness
        ("harness/synthetic.py", "loopchat.cli"),  # anything importing the CLI
    ],
)
def test_a_forbidden_import_breaks_the_contract(
    tmp_path: Path, module: str, forbidden: str
) -> None:
    tree = copy_tree(tmp_path)
    with open(tree / module, "a") as f:
        f.write(f"\nimport {forbidden}  # crossing a floor on purpose\n")
    result = lint(tree)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
    importer = module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> {forbidden}" in result.stdout
