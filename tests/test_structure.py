"""The project's shape, checked: no module reaches into another's private names (``_x``), the
dependencies run one way (dags -> plugins -> include, nothing back), and the README's layout
table names only files that exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("dags", "plugins", "include", "tests", "bench")
# what may import what: a room never imports from a room listed after it
LAYERS = {"include": {"include"}, "plugins": {"include", "plugins"}, "dags": {"include", "plugins", "dags"}}


def modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
                  if "__pycache__" not in path.parts)


def project_module(name: str | None) -> bool:
    return bool(name) and name.split(".")[0] in PACKAGES


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_reaches(path: Path) -> list[str]:
    """``from <project module> import _x`` and ``<name imported from the project>._x``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    imported: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and project_module(node.module):
            for alias in node.names:
                if private(alias.name):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                imported.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if project_module(alias.name):
                    imported.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and private(node.attr) and isinstance(node.value, ast.Name)
                and node.value.id in imported):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", modules(), ids=lambda path: str(path.relative_to(ROOT)))
def test_no_module_uses_another_modules_private_names(path):
    assert private_reaches(path) == []


@pytest.mark.parametrize("path", [path for path in modules() if path.relative_to(ROOT).parts[0] in LAYERS],
                         ids=lambda path: str(path.relative_to(ROOT)))
def test_dependencies_run_one_way(path):
    room = path.relative_to(ROOT).parts[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    named = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    named += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    against = sorted({name for name in named if project_module(name) and name.split(".")[0] not in LAYERS[room]})
    assert against == [], f"{room}/ may import only from {sorted(LAYERS[room])}"
    if room != "include" or path.relative_to(ROOT).parts[1] == "sandbox":
        return
    assert not [name for name in named if name.startswith("include.sandbox")], "the runtime imports the sandbox"


def test_the_readme_layout_table_names_files_that_exist():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    missing = []
    for row in (line for line in table.splitlines() if line.startswith("| `")):
        cell = row.split("|")[1]
        names = re.findall(r"`([^`]+)`", cell)
        folder = ""
        for name in names:
            path = name if "/" in name else f"{folder}{name}"
            folder = path.rsplit("/", 1)[0] + "/" if "/" in path else folder
            if not (ROOT / path.rstrip("/")).exists() and "*" not in path and "<" not in path:
                missing.append(path)
    assert missing == []


def test_every_lms_target_a_district_file_takes_has_an_adapter_that_says_what_it_holds():
    """A target added to the district file's ``lms`` needs its adapter (plugins/hooks/lms.py) and the
    kinds it holds (include/lms/target.py) too: the three lists are the same."""
    from pydantic import TypeAdapter

    from include.config import LMS_TARGETS, LmsConfig
    from include.lms.target import KINDS_HELD_BY
    from plugins.hooks.lms import lms_target

    assert set(KINDS_HELD_BY) == set(LMS_TARGETS)
    for target in LMS_TARGETS:
        settings = TypeAdapter(LmsConfig).validate_python({"target": target, "conn_id": f"lms_{target}"})
        assert settings.target == target
        assert type(lms_target(settings)).__module__ == f"plugins.hooks.{target}"
