"""The install does not lean on this machine: every pin comes from a source the files name.

Static checks (no network): every requirements and lock file is parsed, and a pin fails when
only a source the files do not name could supply it (a local version label such as ``+cpu``
without the index that serves it, a path, a wheel folder, a ``file:`` index); the locks agree
with each other and with pyproject.toml's dependency groups; torch's own dependencies are in
the lock that installs beside it.

The ``pypi`` tests resolve each lock with ``pip --isolated install --dry-run`` against PyPI
alone (pip's configuration files and PIP_* variables ignored), as a user's machine would.
They need the network to PyPI: where it cannot be reached they skip with the reason, except
under RECSYS_REQUIRE_PYPI=1 (CI), where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib.metadata import requires, version
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPI = "https://pypi.org/simple"
LOCKS = ("requirements.txt", "requirements/jobs.lock", "requirements/serve.lock")
SOURCE_OPTIONS = {"-i": "index", "--index-url": "index", "--extra-index-url": "index", "-f": "links",
                  "--find-links": "links"}


def requirement_files(root: Path = ROOT) -> list[Path]:
    """Every file pip may be given: the locks, requirements/, the compat pins."""
    return sorted({*root.glob("requirements*.txt"), *root.glob("requirements*.lock"),
                   *root.glob("requirements/*.txt"), *root.glob("requirements/*.lock"),
                   *root.glob("tests/compat/*.txt")})


@dataclass
class ReqFile:
    path: Path
    sources: list[tuple[str, str]] = field(default_factory=list)  # ("index" | "links", where)
    includes: list[Path] = field(default_factory=list)  # -r / -c files
    reqs: list[tuple[int, str]] = field(default_factory=list)  # (line number, requirement text)
    no_index: bool = False


def logical_lines(text: str) -> list[tuple[int, str]]:
    """pip's reading: comments dropped, backslash continuations joined."""
    out, buf, start = [], "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if not buf:
            start = number
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            out.append((start, buf.strip()))
        buf = ""
    return out


def parse(path: Path) -> ReqFile:
    parsed = ReqFile(path)
    for number, line in logical_lines(path.read_text()):
        if line.startswith("-"):
            words = shlex.split(line)
            opt, args = words[0], words[1:]
            if opt.startswith("--") and "=" in opt:  # --index-url=URL
                opt, first = opt.split("=", 1)
                args = [first, *args]
            if opt in SOURCE_OPTIONS:
                parsed.sources.append((SOURCE_OPTIONS[opt], args[0]))
            elif opt in ("-r", "--requirement", "-c", "--constraint"):
                target = args[0]
                if not target.startswith(("http://", "https://")):
                    parsed.includes.append((path.parent / target).resolve())
            elif opt == "--no-index":
                parsed.no_index = True
            continue
        parsed.reqs.append((number, re.sub(r"\s--hash[= ]\S+", "", line).strip()))
    return parsed


def all_sources(path: Path, seen: frozenset = frozenset()) -> list[tuple[str, str]]:
    """The sources a file names, with those of the files it includes (-r, -c)."""
    parsed = parse(path)
    out = list(parsed.sources)
    for inc in parsed.includes:
        if inc not in seen and inc.exists():
            out += all_sources(inc, seen | {path})
    return out


def is_local(where: str) -> bool:
    return not where.startswith("https://")


def source_problems(path: Path, root: Path = ROOT) -> list[str]:
    """Why pins of ``path`` could only come from a source the files do not name."""
    rel = path.relative_to(root)
    parsed = parse(path)
    sources = all_sources(path)
    problems = [f"{rel}: {kind} {where} is on this machine (or not https), not a source a user has"
                for kind, where in parsed.sources if is_local(where)]
    other_indexes = [w for kind, w in sources if kind == "index" and not is_local(w) and w.rstrip("/") != PYPI]
    for number, text in parsed.reqs:
        path_like = text.startswith((".", "/", "~", "file:")) or text.endswith((".whl", ".tar.gz", ".zip"))
        if path_like and " @ " not in text:
            problems.append(f"{rel}:{number}: {text!r} is a path: a user's machine has no such file")
            continue
        try:
            req = Requirement(text)
        except InvalidRequirement as err:
            problems.append(f"{rel}:{number}: {text!r} is not a requirement pip reads ({err})")
            continue
        if req.url and is_local(req.url):
            problems.append(f"{rel}:{number}: {req.name} @ {req.url} points at this machine")
        for spec in req.specifier:
            if "+" in spec.version and not other_indexes:
                problems.append(
                    f"{rel}:{number}: {req.name}{spec} has a local version label (+{spec.version.split('+')[1]}), "
                    "which PyPI never serves, and no --index-url/--extra-index-url https://... in the file "
                    "names the index that does")
    return problems


def pins(lock: str) -> dict[tuple[str, str], str]:
    """(package, marker) -> version of a lock."""
    out = {}
    for _, text in parse(ROOT / lock).reqs:
        req = Requirement(text)
        (spec,) = req.specifier
        out[(canonicalize_name(req.name), str(req.marker or ""))] = spec.version
    return out


def installed_pins(lock: str) -> dict[str, str]:
    """The lock's pins that apply to this interpreter."""
    out = {}
    for _, text in parse(ROOT / lock).reqs:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate():
            out[canonicalize_name(req.name)] = next(iter(req.specifier)).version
    return out


# -- static ----------------------------------------------------------------------------------------

def test_every_file_names_the_source_of_every_pin():
    problems = [p for f in requirement_files() for p in source_problems(f)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("text, why", [
    ("torch==2.13.0+cpu\n", "local version label"),
    ("--find-links /opt/wheels\ntorch==2.13.0\n", "on this machine"),
    ("--extra-index-url file:///opt/pypi/simple\nsoupsieve==4.1.2\n", "on this machine"),
    ("./vendor/thing-1.0-py3-none-any.whl\n", "is a path"),
    ("thing @ file:///opt/wheels/thing-1.0-py3-none-any.whl\n", "points at this machine"),
])
def test_the_check_catches_each_kind_of_machine_only_source(tmp_path, text, why):
    (tmp_path / "requirements.txt").write_text(text)
    problems = source_problems(tmp_path / "requirements.txt", tmp_path)
    assert len(problems) == 1 and why in problems[0], problems


def test_a_local_label_with_its_index_named_passes(tmp_path):
    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "torch.txt").write_text(
        "--index-url https://download.pytorch.org/whl/cpu\ntorch==2.13.0+cpu\n")
    (tmp_path / "requirements.txt").write_text("-r requirements/torch.txt\nnumpy==2.4.6 \\\n    --hash=sha256:00\n")
    assert source_problems(tmp_path / "requirements/torch.txt", tmp_path) == []
    assert source_problems(tmp_path / "requirements.txt", tmp_path) == []


def test_the_check_sees_the_locks_and_torchs_file():
    files = requirement_files()
    assert {ROOT / lock for lock in LOCKS} <= set(files) and ROOT / "requirements" / "torch.txt" in files


def test_torch_is_pinned_to_the_cpu_build_from_pytorchs_index():
    """A bare or PyPI torch is a multi-GB CUDA build on Linux; the +cpu pin only exists on the CPU index."""
    torch = parse(ROOT / "requirements" / "torch.txt")
    assert torch.sources == [("index", "https://download.pytorch.org/whl/cpu")]
    linux = [Requirement(t) for _, t in torch.reqs if Requirement(t).marker.evaluate({"sys_platform": "linux"})]
    assert [str(r.specifier) for r in linux] == ["==2.13.0+cpu"]
    for lock in LOCKS:
        assert "torch" not in {name for name, _ in pins(lock)}, f"{lock} must not pin torch (PyPI's is CUDA)"


def test_the_locks_carry_a_hash_for_every_pin_and_name_no_other_source():
    for lock in LOCKS:
        text = (ROOT / lock).read_text()
        written_by_lock = "via the following command:\n#    make lock\n" in text
        assert written_by_lock, f"{lock}: not written by `make lock` (scripts/lock.sh)"
        for number, line in logical_lines(text):
            assert line.startswith("-c ") or "--hash=sha256:" in line, f"{lock}:{number}: {line[:60]} has no hash"
        assert not parse(ROOT / lock).sources, f"{lock} names an index: the locks are PyPI's alone"


def test_the_images_and_the_venv_run_the_same_versions():
    """One boto3/botocore (and numpy, pandas...) in the venv, the jobs image and the serving image
    (markers may differ: tzdata is pandas' on Windows only, Airflow's everywhere)."""
    venv: dict[str, set[str]] = {}
    for (name, _), ver in pins("requirements.txt").items():
        venv.setdefault(name, set()).add(ver)
    for lock in ("requirements/jobs.lock", "requirements/serve.lock"):
        for (name, _), ver in pins(lock).items():
            assert ver in venv.get(name, ()), f"{lock} pins {name}=={ver}, requirements.txt {venv.get(name)}"
    assert pins("requirements/jobs.lock")[("boto3", "")] == pins("requirements/serve.lock")[("boto3", "")]


def test_the_locks_hold_the_pins_of_pyprojects_groups():
    """A pin edited in pyproject.toml without `make lock` is caught here."""
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]
    venv = installed_pins("requirements.txt")
    for lock, names in (("requirements.txt", list(groups)), ("requirements/jobs.lock", ["stages"]),
                        ("requirements/serve.lock", ["serving"])):
        locked = installed_pins(lock)
        for group in names:
            for text in groups[group]:
                req = Requirement(text)
                name = canonicalize_name(req.name)
                assert name in locked, f"{lock}: {name} of group {group} missing: run make lock"
                assert req.specifier.contains(locked[name], prereleases=True), \
                    f"{lock}: {name}=={locked[name]} but pyproject.toml says {req} (group {group}): run make lock"
                assert locked[name] == venv[name]


def test_torchs_own_dependencies_are_pinned_beside_it():
    """torch installs --no-deps (requirements/torch.txt): what it needs must be in the jobs lock."""
    locked = installed_pins("requirements/jobs.lock")
    needs = [Requirement(r) for r in requires("torch") or []]
    for req in needs:
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        assert name in locked, f"torch {version('torch')} needs {req}: add it to pyproject's stages group"
        assert req.specifier.contains(locked[name], prereleases=True), \
            f"torch needs {req}, jobs.lock has {locked[name]}"


def test_the_dockerfiles_install_the_locks_with_their_hashes():
    jobs = (ROOT / "tasks" / "train" / "Dockerfile").read_text()
    serve = (ROOT / "tasks" / "serve" / "Dockerfile").read_text()
    assert "requirements/torch.txt" in jobs and "requirements/jobs.lock" in jobs and "--require-hashes" in jobs
    assert "requirements/serve.lock" in serve and "--require-hashes" in serve


# -- PyPI ------------------------------------------------------------------------------------------

def pypi_unreachable() -> str | None:
    try:
        with urllib.request.urlopen(f"{PYPI}/pip/", timeout=15):
            return None
    except (urllib.error.URLError, OSError) as err:
        return f"PyPI ({PYPI}) cannot be reached from here: {err}"


@pytest.fixture(scope="module")
def pypi():
    why = pypi_unreachable()
    if why:
        if os.environ.get("RECSYS_REQUIRE_PYPI") == "1":
            pytest.fail(f"RECSYS_REQUIRE_PYPI=1 but {why}")
        pytest.skip(why)


@pytest.mark.pypi
@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_resolves_on_pypi_alone(pypi, lock, tmp_path):
    """pip as on a user's machine: no configuration file, no PIP_* variable, PyPI only; every
    pin (for this interpreter's markers), its hash and the lock's completeness (--require-hashes
    refuses a dependency the lock does not pin)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # global files too (--isolated skips the user's only)
    report = tmp_path / "report.json"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--require-hashes", "--index-url", PYPI, "--report", str(report), "-r", str(ROOT / lock)],
        env=env, capture_output=True, text=True, timeout=1200, check=False)
    assert res.returncode == 0, f"{lock} does not resolve on PyPI alone:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    got = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"]
           for i in json.loads(report.read_text())["install"]}
    assert got == installed_pins(lock)
    for item in json.loads(report.read_text())["install"]:
        url = item["download_info"]["url"]
        assert url.startswith("https://files.pythonhosted.org/"), f"{item['metadata']['name']} from {url}"


def test_markers_select_one_pin_per_package():
    """The universal lock may pin two versions behind exclusive markers (soupsieve 4.x needs
    Python >= 3.11.5; Debian 12's python3 is 3.11.2): exactly one applies to any Python 3.11+."""
    for lock in LOCKS:
        by_name: dict[str, list[str]] = {}
        for name, marker in pins(lock):
            by_name.setdefault(name, []).append(marker)
        for name, markers in by_name.items():
            if len(markers) < 2:
                continue
            for py in ("3.11.2", "3.11.7", "3.12.3", "3.13.1"):
                env = {"python_full_version": py, "python_version": py.rsplit(".", 1)[0]}
                hits = [m for m in markers if m and Marker(m).evaluate(env)]
                assert len(hits) <= 1, f"{lock}: {name} has {len(hits)} pins for Python {py}: {hits}"
