"""What the image holds, worked out without Docker (the CI machines have none) from the
Dockerfile, the .dockerignore and this working copy's files.

The image is the integration only: dags/, plugins/ and include/ without the sandbox (the
emulators, the demo runner), without the demo district files, the tests, the benchmark, CI's
script, the demo's connections (airflow_settings.yaml) or anything a working copy collects
(.git, .venv, .airflow, caches). Its packages are requirements.txt, the runtime, installed with
constraints.txt, the versions CI tested. The .dockerignore keeps the rest out of the build
context too, so that even a ``COPY . .`` would bring in only the integration.

The Docker rules used: a .dockerignore pattern is relative to the context root, ``*`` and ``?``
do not cross ``/``, ``**`` crosses any number of directories, a pattern matching a directory
excludes what is under it, ``!`` re-includes, the last matching line wins; COPY sources are
context paths, a directory's contents are copied into the destination, ``*`` in a source
matches within one directory.
"""

from __future__ import annotations

import ast
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.support import ROOT

PROJECT_PACKAGES = {"dags", "plugins", "include", "tests", "bench"}
RUNTIME_DIRS = ("dags/", "plugins/", "include/")
SANDBOX = "include/sandbox/"
DEV_DIRS = (SANDBOX, "tests/", "bench/")

# What must never land in the image, and why.
KEPT_OUT = {
    "include/sandbox/": "the emulators, the synthetic district and the demo runner",
    "tests/": "the test suite",
    "bench/": "the benchmark",
    ".ci/": "CI's script",
    ".git/": "the repository",
    ".venv/": "the local virtualenv",
    ".airflow/": "the demo's Airflow home",
    ".pytest_cache/": "a cache",
    ".hypothesis/": "a cache",
}
KEPT_OUT_FILES = {
    "airflow_settings.yaml": "the demo's connections (its local-only secrets), pools and variables",
}
DEMO_DISTRICT_FILE = re.compile(r"include/districts/.*\.(ya?ml|csv)")


def kept_out(path: str) -> str | None:
    """Why ``path`` (a context path) must not be in the image, or None."""
    for prefix, why in KEPT_OUT.items():
        if path.startswith(prefix):
            return why
    if path in KEPT_OUT_FILES:
        return KEPT_OUT_FILES[path]
    if DEMO_DISTRICT_FILE.fullmatch(path):
        return "a district file (the demo's): deployments mount or copy in their own"
    if "__pycache__/" in path or path.endswith(".pyc"):
        return "compiled bytecode of this machine"
    return None


# -- the build context ------------------------------------------------------------------------


def _git(*args: str) -> list[str]:
    out = subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return [entry for entry in out.split("\0") if entry]


@cache
def working_copy() -> frozenset[str]:
    """Every file this working copy would send as a build context before .dockerignore: git's
    files (tracked and new, as they are on disk), a file inside each directory git ignores (or
    the ignored file itself: .venv, .airflow, caches, bytecode) and the repository's own .git."""
    files = {path for path in _git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
             if (ROOT / path).is_file()}
    for ignored in _git("ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory"):
        files.add(f"{ignored}file-inside" if ignored.endswith("/") else ignored)
    files.add(".git/HEAD")
    return frozenset(files)


def _glob_regex(pattern: str, double_star: bool) -> re.Pattern[str]:
    """A Go ``filepath.Match`` pattern (and, for .dockerignore, ``**``) as a regular expression."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*" and double_star and pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            out.append(".*" if i == len(pattern) else "(?:.*/)?")
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("^") else body).replace("\\", "\\\\") + "]")
            i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out))


@dataclass(frozen=True)
class IgnorePattern:
    regex: re.Pattern[str]
    exception: bool

    def matches(self, path: str) -> bool:
        """The path itself or one of its parent directories matches (so a directory's contents go too)."""
        parts = path.split("/")
        return any(self.regex.fullmatch("/".join(parts[:end])) for end in range(len(parts), 0, -1))


def dockerignore(text: str) -> list[IgnorePattern]:
    """Lines as Docker reads them: ``#`` lines are comments, whitespace trimmed, each pattern
    cleaned (``tests/`` is ``tests``, a leading ``/`` dropped), ``!`` an exception."""
    patterns = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            continue
        exception = line.startswith("!")
        line = line[1:].strip() if exception else line
        line = posixpath.normpath(line)
        if len(line) > 1 and line.startswith("/"):
            line = line.lstrip("/")
        patterns.append(IgnorePattern(_glob_regex(line, double_star=True), exception))
    return patterns


def ignored(path: str, patterns: list[IgnorePattern]) -> bool:
    excluded = False
    for pattern in patterns:
        if pattern.exception == excluded and pattern.matches(path):
            excluded = not pattern.exception
    return excluded


@cache
def build_context() -> frozenset[str]:
    """What `docker build .` sends: the working copy less what .dockerignore excludes."""
    path = ROOT / ".dockerignore"
    patterns = dockerignore(path.read_text(encoding="utf-8")) if path.exists() else []
    return frozenset(file for file in working_copy() if not ignored(file, patterns))


# -- the Dockerfile ---------------------------------------------------------------------------


@dataclass
class Dockerfile:
    base: str = ""
    workdir: str = "/opt/airflow"  # the official image's
    copies: list[tuple[list[str], str]] = field(default_factory=list)  # (sources, destination)
    runs: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def _instructions(text: str) -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # blank lines and comments, also inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def parse_dockerfile(text: str) -> Dockerfile:
    """The final stage's COPY/ADD, RUN, ENV and WORKDIR (the image is that stage)."""
    image = Dockerfile()
    for keyword, rest in _instructions(text):
        if keyword == "FROM":
            image = Dockerfile(base=rest.split()[0])
        elif keyword == "WORKDIR":
            image.workdir = posixpath.join(image.workdir, rest.strip())
        elif keyword == "ENV":
            words = shlex.split(rest)
            if words and "=" not in words[0]:
                image.env[words[0]] = rest.split(None, 1)[1].strip()
            else:
                image.env.update(word.split("=", 1) for word in words)
        elif keyword == "RUN":
            image.runs.append(rest)
        elif keyword in ("COPY", "ADD"):
            words = json.loads(rest) if rest.lstrip().startswith("[") else shlex.split(rest)
            flags = [word for word in words if word.startswith("--")]
            assert not any(flag.startswith("--from") for flag in flags), (
                f"{keyword} {rest}: copies from another stage or image; tests/test_image.py cannot tell what "
                "that brings in"
            )
            sources, destination = [word for word in words if not word.startswith("--")][:-1], words[-1]
            assert not any("://" in source or source.startswith("git@") for source in sources), (
                f"{keyword} {rest}: a remote source"
            )
            image.copies.append((sources, posixpath.normpath(posixpath.join(image.workdir, destination))
                                 + ("/" if destination.endswith("/") else "")))
    return image


@cache
def dockerfile() -> Dockerfile:
    return parse_dockerfile((ROOT / "Dockerfile").read_text(encoding="utf-8"))


def copied(image: Dockerfile, context: frozenset[str]) -> dict[str, str]:
    """Image path -> the context file COPY puts there."""
    directories = {"/".join(file.split("/")[:end])
                   for file in context for end in range(1, file.count("/") + 1)}
    landed: dict[str, str] = {}
    for sources, destination in image.copies:
        wildcard = any(char in source for source in sources for char in "*?[")
        into_directory = destination.endswith("/") or len(sources) > 1 or wildcard
        assert into_directory or len(sources) == 1, (
            f"COPY {sources} {destination}: several sources need a directory"
        )
        for source in sources:
            source = posixpath.normpath(source).lstrip("/")
            source = "" if source == "." else source
            if any(char in source for char in "*?["):
                regex = _glob_regex(source, double_star=False)
                matches = sorted(path for path in context | directories if regex.fullmatch(path))
            else:
                matches = [source] if source == "" or source in context or source in directories else []
            assert matches, f"COPY {source}: not in the build context (the build would fail)"
            for match in matches:
                if match == "" or match in directories:
                    prefix = f"{match}/" if match else ""
                    landed.update((posixpath.join(destination, file[len(prefix):]), file)
                                  for file in context if file.startswith(prefix))
                elif into_directory:
                    landed[posixpath.join(destination, posixpath.basename(match))] = match
                else:
                    landed[destination] = match
    return landed


@cache
def image_files() -> dict[str, str]:
    return copied(dockerfile(), build_context())


@cache
def image_root() -> str:
    """Where the project's import root is in the image: its PYTHONPATH."""
    root = dockerfile().env.get("PYTHONPATH", "")
    assert root.startswith("/") and ":" not in root, (
        f"the image's PYTHONPATH should be one directory, not {root!r}"
    )
    return root.rstrip("/")


def in_the_image_root() -> dict[str, str]:
    """Path under the image's import root -> context file."""
    prefix = image_root() + "/"
    return {path[len(prefix):]: source for path, source in image_files().items() if path.startswith(prefix)}


# -- the project's imports --------------------------------------------------------------------


def _imports(path: Path, *, names_as_modules: bool = False) -> set[str]:
    """The modules a file imports, wherever (a function's imports count too); with
    ``names_as_modules``, ``from a import b`` also gives ``a.b``, which may be a submodule."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            if names_as_modules:
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def third_party(files) -> set[str]:
    """Modules of other distributions that ``files`` import (``from a.b import c``: ``a.b``)."""
    return {name for file in files for name in _imports(ROOT / file)
            if name.split(".")[0] not in PROJECT_PACKAGES | set(sys.stdlib_module_names)}


def project_module_file(name: str) -> str | None:
    path = name.replace(".", "/")
    for candidate in (f"{path}.py", f"{path}/__init__.py"):
        if candidate in working_copy():
            return candidate
    return None


def static_closure(start) -> set[str]:
    """Project files ``start`` imports, directly or not, in function bodies too."""
    seen, todo = set(), list(start)
    while todo:
        file = todo.pop()
        if file in seen:
            continue
        seen.add(file)
        for name in _imports(ROOT / file, names_as_modules=True):
            if name.split(".")[0] in PROJECT_PACKAGES:
                parts = name.split(".")
                # the module and its parent packages, as Python imports them
                todo += [found for end in range(1, len(parts) + 1)
                         if (found := project_module_file(".".join(parts[:end]))) is not None]
    return seen


def python_files(prefixes, excluding=()) -> list[str]:
    return sorted(file for file in working_copy() if file.endswith(".py") and file.startswith(tuple(prefixes))
                  and not file.startswith(tuple(excluding)) and "__pycache__/" not in file)


def runtime_files() -> list[str]:
    return python_files(RUNTIME_DIRS, excluding=(SANDBOX,))


# A fresh interpreter with only ``root`` as the project: loads every DAG file the way the
# dag-processor does (with the default districts directory, then with ``districts`` if given),
# imports every plugin module, lists the project modules loaded and maps modules to the
# distributions that install them.
PROBE = r"""
import importlib, json, os, runpy, sys
from importlib import metadata

root, request = os.path.realpath(sys.argv[1]), json.loads(sys.argv[2])

def dag_ids():
    found = []
    for name in sorted(os.listdir(os.path.join(root, "dags"))):
        if name.endswith(".py"):
            namespace = runpy.run_path(os.path.join(root, "dags", name), run_name="probe_" + name[:-3])
            found += [value.dag_id for value in namespace.values() if type(value).__name__ == "DAG"]
    return sorted(found)

os.environ.pop("ONEROSTER_DISTRICTS_DIR", None)
report = {"dags_by_default": dag_ids()}
if request.get("districts"):
    os.environ["ONEROSTER_DISTRICTS_DIR"] = request["districts"]
    report["dags_with_districts"] = dag_ids()
for folder, _, names in os.walk(os.path.join(root, "plugins")):
    for name in sorted(names):
        if name.endswith(".py"):
            module = os.path.relpath(os.path.join(folder, name), root)[:-3].replace(os.sep, ".")
            importlib.import_module(module[: -len(".__init__")] if module.endswith(".__init__") else module)

# the DAG files ran as scripts, the way Airflow runs them; the installed packages are not the project's
installed = tuple(os.path.realpath(prefix) + os.sep for prefix in (sys.prefix, sys.base_prefix))
files = [os.path.realpath(module.__file__) for module in list(sys.modules.values())
         if isinstance(getattr(module, "__file__", None), str)]
dag_files = [name for name in os.listdir(os.path.join(root, "dags")) if name.endswith(".py")]
files = [f for f in files if not f.startswith(installed)] + [os.path.join(root, "dags", f) for f in dag_files]
report["project_modules"] = sorted({os.path.relpath(f, root) for f in files if f.startswith(root + os.sep)})
report["loaded_from_elsewhere"] = sorted(
    f for f in files for other in request["elsewhere"] if f.startswith(other + os.sep))

owner = {}
for dist in metadata.distributions():
    for file in dist.files or ():
        if file.suffix in (".py", ".so", ".pyd"):
            owner[os.path.normpath(str(dist.locate_file(file)))] = dist.metadata["Name"]
report["distributions"] = {}
for name in request["resolve"]:
    try:
        module = importlib.import_module(name)
    except Exception as error:
        report["distributions"][name] = "cannot import: " + repr(error)
        continue
    path = getattr(module, "__file__", None)
    found = owner.get(os.path.normpath(path)) if path else None
    if found is None:
        candidates = metadata.packages_distributions().get(name.split(".")[0], [])
        found = candidates[0] if len(candidates) == 1 else "no distribution found for " + repr(path)
    report["distributions"][name] = found
print(json.dumps(report))
"""


def probe(root: Path, *, districts: Path | None = None, elsewhere=(), resolve=()) -> dict:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(root), AIRFLOW__CORE__DAGS_FOLDER=str(root / "dags"),
               AIRFLOW__CORE__PLUGINS_FOLDER=str(root / "plugins"), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    request = {"districts": str(districts) if districts else None, "elsewhere": [str(p) for p in elsewhere],
               "resolve": sorted(resolve)}
    done = subprocess.run([sys.executable, "-c", PROBE, str(root), json.dumps(request)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"loading the DAGs and plugins from {root} failed:\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(file: str) -> list[Requirement]:
    found = []
    for line in (ROOT / file).read_text(encoding="utf-8").splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            found.append(Requirement(line))
    return found


def pins(file: str) -> dict[str, str]:
    return {normalised(req.name): str(req.specifier)[2:] for req in requirements(file)
            if len(req.specifier) == 1 and str(req.specifier).startswith("==")}


def installed_by(reqs: list[Requirement]) -> set[str]:
    """The distributions ``pip install`` of ``reqs`` brings in (from the virtualenv's metadata)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(req.name, frozenset(req.extras))
            for req in reqs if req.marker is None or req.marker.evaluate({"extra": ""})]
    while todo:
        name, extras = todo.pop()
        if (normalised(name), extras) in seen:
            continue
        seen.add((normalised(name), extras))
        try:
            needs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for need in map(Requirement, needs):
            if need.marker is None or any(need.marker.evaluate({"extra": extra}) for extra in ("", *extras)):
                todo.append((need.name, frozenset(need.extras)))
    return {name for name, _ in seen}


@pytest.fixture(scope="module")
def staged_image(tmp_path_factory) -> Path:
    """The image's import root rebuilt on disk from what the Dockerfile copies there."""
    root = tmp_path_factory.mktemp("image") / image_root().lstrip("/")
    for path, source in in_the_image_root().items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / source, root / path)
    return root


@pytest.fixture(scope="module")
def from_the_repository() -> dict:
    runtime, dev = third_party(runtime_files()), third_party(python_files(DEV_DIRS))
    report = probe(ROOT, resolve=runtime | dev)
    report["runtime_imports"], report["dev_imports"] = sorted(runtime), sorted(dev)
    return report


# -- the tests --------------------------------------------------------------------------------


def test_the_image_holds_no_sandbox_demo_district_tests_or_bench():
    landed = image_files()
    assert landed, "the Dockerfile copies nothing"
    wrong = {f"{source} -> {path}": kept_out(source) for path, source in landed.items() if kept_out(source)}
    assert wrong == {}, "the Dockerfile puts into the image what belongs to the demo or development"


def test_even_copying_the_whole_context_would_bring_in_only_the_integration():
    """A future `COPY . .` is safe: .dockerignore keeps the rest out of the build context."""
    everything = copied(Dockerfile(copies=[(["."], "/opt/airflow/")]), build_context())
    wrong = {source: kept_out(source) for source in everything.values() if kept_out(source)}
    assert wrong == {}, ".dockerignore lets into the build context what must not reach the image"
    assert {"requirements.txt", "constraints.txt"} <= build_context()


def test_every_module_the_dags_and_plugins_import_is_in_the_image(from_the_repository):
    in_image = set(in_the_image_root())
    imported = set(from_the_repository["project_modules"])
    assert {"dags/district_dags.py", "dags/oneroster_districts_00_of_16.py", "include/config.py"} <= imported
    assert sorted(imported - in_image) == [], "loaded by the DAGs and plugins but not in the image"
    assert [file for file in imported if file.startswith(SANDBOX)] == [], "the runtime imports the sandbox"
    # imports inside functions too, which loading the DAGs does not run
    loaded_by_airflow = [file for file in python_files(("dags/", "plugins/"))]
    reached = static_closure(loaded_by_airflow)
    assert [file for file in reached if file.startswith(SANDBOX)] == [], "the runtime imports the sandbox"
    assert sorted(reached - in_image) == [], "imported (in a function?) by the runtime; not in image"


def test_the_dags_load_from_the_image_alone(staged_image, tmp_path):
    """No district file ships: the image lists no DAG and no import error until a deployment
    mounts or copies its district files (here: the demo's, in a directory of their own)."""
    assert not (staged_image / "include" / "districts").exists()
    mounted = tmp_path / "districts"
    shutil.copytree(ROOT / "include" / "districts", mounted)
    report = probe(staged_image, districts=mounted, elsewhere=[ROOT])
    assert report["loaded_from_elsewhere"] == [], "the image's DAGs needed files from the repository"
    assert report["dags_by_default"] == []
    assert {"oneroster_demo", "oneroster_demo_v11"} <= set(report["dags_with_districts"])
    assert [file for file in report["project_modules"] if file.startswith(SANDBOX)] == []


def test_pip_installs_the_requirements_with_the_constraints_ci_tested():
    image, landed = dockerfile(), image_files()
    installs = []
    for run in image.runs:
        for command in re.split(r"&&|\|\||;", run):
            words = shlex.split(command)
            if "install" in words and any(posixpath.basename(word) in ("pip", "pip3")
                                          for word in words[:words.index("install")]):
                installs.append(words[words.index("install") + 1:])
    assert installs, "the Dockerfile installs nothing with pip"
    runtime_pins, constraint_pins = pins("requirements.txt"), pins("constraints.txt")
    for arguments in installs:
        files: dict[str, list[str]] = {"-r": [], "-c": []}
        specs, words = [], iter(arguments)
        for word in words:
            for short, long in (("-r", "--requirement"), ("-c", "--constraint")):
                if word in (short, long):
                    files[short].append(next(words))
                elif word.startswith(long + "="):
                    files[short].append(word.split("=", 1)[1])
                elif word.startswith(short) and len(word) > 2 and not word.startswith("--"):
                    files[short].append(word[2:])
                else:
                    continue
                break
            else:
                if not word.startswith("-"):
                    specs.append(word)
        sources = {option: [landed.get(posixpath.join(image.workdir, path)) for path in paths]
                   for option, paths in files.items()}
        command = "pip install " + " ".join(arguments)
        if any(spec.startswith(("/", ".")) for spec in specs):
            # the project itself, for its Airflow provider entry point: no dependency, no other package
            assert "--no-deps" in arguments and specs == [image_root()] and not files["-r"], (
                f"{command}: the project is installed from its directory alone, with --no-deps"
            )
            assert landed.get(posixpath.join(image_root(), "pyproject.toml")) == "pyproject.toml"
            continue
        assert sources["-c"] == ["constraints.txt"], f"{command}: not with constraints.txt"
        assert set(sources["-r"]) <= {"requirements.txt"}, f"{command}: not the runtime's requirements"
        for spec in map(Requirement, specs):
            pinned = str(spec.specifier)[2:]
            assert str(spec.specifier).startswith("=="), f"{spec}: not pinned"
            name = normalised(spec.name)
            assert constraint_pins.get(name) == pinned, f"{spec}: constraints.txt pins another"
            assert runtime_pins.get(name, pinned) == pinned, f"{spec}: requirements.txt pins another"
    # The base image is the Airflow and the Python CI tested.
    airflow = runtime_pins["apache-airflow"]
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    python = re.search(r"3\.\d+", pyproject.split("requires-python")[1]).group(0)
    base = rf"apache/airflow:(slim-)?{re.escape(airflow)}-python{re.escape(python)}"
    assert re.fullmatch(base, image.base), f"FROM {image.base}: not Airflow {airflow} on Python {python}"
    for file in ("requirements.txt", "requirements-dev.txt"):
        for name, version in pins(file).items():
            assert constraint_pins.get(name) == version, (
                f"{file} pins {name}=={version}, constraints.txt does not"
            )


def test_the_image_installs_the_project_for_its_connection_types():
    """pyproject.toml's provider entry point registers the connection types (their forms, the Test
    button): the image installs the project (no dependency, no package) as `make` does."""
    image = dockerfile()
    installs = [shlex.split(command) for run in image.runs for command in re.split(r"&&|\|\||;", run)
                if "pip" in command and "install" in command]
    assert [words for words in installs if "--no-deps" in words and image_root() in words], (
        "the Dockerfile does not install the project (pip install --no-deps <its directory>)"
    )
    assert "pyproject.toml" in build_context()


def test_requirements_hold_the_runtime_and_not_what_only_the_sandbox_tests_or_bench_use(from_the_repository):
    found = from_the_repository["distributions"]
    unresolved = {name: found[name] for name in from_the_repository["runtime_imports"]
                  if found[name].startswith(("cannot import", "no distribution"))}
    assert unresolved == {}
    runtime = {normalised(found[name]) for name in from_the_repository["runtime_imports"]}
    runtime_requirements = requirements("requirements.txt")
    installed = installed_by(runtime_requirements)
    assert sorted(runtime - installed) == [], "the runtime imports these; requirements.txt lacks them"
    dev = {normalised(found[name]) for name in from_the_repository["dev_imports"]
           if not found[name].startswith(("cannot import", "no distribution"))}
    dev_only = dev - runtime
    assert "aiosmtpd" in dev_only
    named = {normalised(req.name) for req in runtime_requirements}
    assert sorted(named & dev_only) == [], "only the sandbox, the tests or the benchmark use these"
    # `make demo` and `make test` install both files: they still get what the sandbox and tests need.
    everything = installed_by(runtime_requirements + requirements("requirements-dev.txt"))
    assert sorted(dev_only - everything) == [], (
        "the sandbox, tests or benchmark use these; neither requirements file installs them"
    )
