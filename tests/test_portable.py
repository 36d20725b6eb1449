"""What `make run` and `make test` run works beyond GNU/Linux: no GNU-only tools in the scripts
they call, time limits through scripts/bounded.py, and `make help` lists every target."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOUNDED = [sys.executable, str(ROOT / "scripts" / "bounded.py")]
# Scripts on the path of make run / make test for any user (ensure_docker.sh's root-only install
# branch and .ci/as_user.sh are Linux and root by nature, and are not on it).
USER_SCRIPTS = ["Makefile", "scripts/env.sh", "scripts/run_embedded.sh", "scripts/docker_test_env.sh",
                "scripts/compat_matrix.sh", "scripts/ensure_uv.sh", "scripts/lock.sh", "scripts/ensure_postgres.sh"]
GNU_ONLY = {r"\bstat -c\b": "stat -c (BSD stat has -f)", r"(^|[\s;(|&])timeout\s": "GNU timeout (not on macOS)",
            r"\bsha256sum\b": "sha256sum (macOS has shasum)", r"\breadlink -f\b": "readlink -f",
            r"\bsed -i\b": "sed -i (BSD sed wants a suffix)", r"\bdate -d\b": "date -d",
            r"\b(mapfile|readarray)\b": "mapfile (bash 4; macOS ships bash 3.2)"}


@pytest.mark.parametrize("script", USER_SCRIPTS)
def test_user_facing_scripts_use_no_gnu_only_tool(script):
    text = (ROOT / script).read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    found = [why for pattern, why in GNU_ONLY.items() if re.search(pattern, code, re.MULTILINE)]
    assert not found, f"{script} uses {found}: use scripts/bounded.py or Python instead"


def test_bounded_passes_the_exit_status_through():
    assert subprocess.run([*BOUNDED, "30", "--", sys.executable, "-c", "raise SystemExit(3)"]).returncode == 3


def test_bounded_interrupts_at_the_limit_so_pytest_can_say_where_it_stood():
    child = "import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    print('interrupted', flush=True)\n"
    res = subprocess.run([*BOUNDED, "--signal", "INT", "--kill-after", "10", "1", "--", sys.executable, "-c", child],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 124 and "interrupted" in res.stdout
    assert "still running after 1s: sending SIGINT" in res.stderr


def test_bounded_kills_what_ignores_the_signal():
    child = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n"
    res = subprocess.run([*BOUNDED, "--kill-after", "1", "1", "--", sys.executable, "-c", child],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 124


def test_bounded_says_when_the_command_does_not_exist():
    res = subprocess.run([*BOUNDED, "5", "--", "no-such-command-here"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 127 and "no-such-command-here: command not found" in res.stderr


def test_make_help_lists_every_described_target():
    described = re.findall(r"^([a-z][a-z-]*):.*## (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert len(described) >= 20
    for target, what in described:
        assert re.search(rf"^  make {re.escape(target)}\s+{re.escape(what.strip())}$", out, re.MULTILINE), target
    assert "make setup" in out and "make lock" in out


def test_every_tracked_symlink_stays_inside_the_repository():
    """A clone must not depend on this machine: a symlink to a path outside the tree (a `.venv`
    linked to another checkout's venv was once committed) breaks every other user's `make run`."""
    import shutil

    if not shutil.which("git") or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    links = [line.split("\t", 1)[1] for line in listed.splitlines() if line.startswith("120000 ")]
    for link in links:
        target = (ROOT / link).parent / (ROOT / link).readlink() if (ROOT / link).is_symlink() else None
        assert target is not None, f"{link} is tracked as a symlink but is not one here"
        assert target.resolve().is_relative_to(ROOT.resolve()), f"{link} points outside the repository: {target}"
