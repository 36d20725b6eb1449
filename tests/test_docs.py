"""The documentation: README's links resolve, the configuration page carries the tables the settings
classes render (scripts/docs_tables.py), and the mkdocs site builds with --strict (no link or anchor
between pages that points nowhere). `make docs`, part of `make lint`, runs the last two as well."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import docs_tables  # noqa: E402

PAGE = ROOT / "docs" / "configuration.md"


def test_the_configuration_page_carries_the_tables_the_settings_classes_render():
    names = [m["name"] for m in docs_tables.BLOCK.finditer(PAGE.read_text())]
    assert sorted(names) == sorted(docs_tables.SOURCES), names
    assert docs_tables.stale(PAGE) == [], "run `make docs-tables` and commit docs/configuration.md"


def test_a_table_that_differs_from_its_class_fails_the_check_and_is_rewritten(tmp_path, capsys):
    page = tmp_path / "configuration.md"
    original = PAGE.read_text()
    assert "| `RECSYS_BUCKET` |" in original
    page.write_text(re.sub(r"\| `RECSYS_BUCKET` \|[^\n]*", "| `RECSYS_BUCKET` | `old` | kept by hand |", original))
    assert docs_tables.main(["--check", str(page)]) == 1
    assert "'airflow-settings' differs from its source" in capsys.readouterr().err
    assert docs_tables.main([str(page)]) == 0
    assert page.read_text() == original
    assert docs_tables.main(["--check", str(page)]) == 0


def test_a_page_without_its_markers_fails_the_check(tmp_path):
    page = tmp_path / "configuration.md"
    page.write_text("# Configuration\n\nno table here\n")
    assert docs_tables.main(["--check", str(page)]) == 1


def test_every_setting_of_both_classes_is_on_the_configuration_page():
    from recsys.settings import Settings, variable
    from tasks.serve.config import Settings as ServeSettings

    text = PAGE.read_text()
    for name in Settings.model_fields:
        assert f"| `{variable(name)}` |" in text, name
    for name in ServeSettings.model_fields:
        assert f"| `{name.upper()}` |" in text, name


def test_the_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200, "README.md stays short: put detail in docs/"
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert local, "README links into docs/"
    for link in local:
        path = link.split("#", 1)[0]
        assert path and (ROOT / path).exists(), f"README.md links to {link}, which does not exist"
    # every docs page the site's navigation has is reachable from the README or the docs' index
    index = (ROOT / "docs" / "index.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{page.name}" in text or f"({page.name})" in index, page.name


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs is not installed in this venv: `make setup` installs pyproject's docs group")
def test_the_site_builds_with_strict_checks(tmp_path):
    # not --quiet: it hides the warnings that --strict counts, and the build then passes with them
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                          "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()
