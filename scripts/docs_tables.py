"""The tables in docs/ that are rendered from code, not kept by hand.

A page holds each table between two markers::

    <!-- BEGIN generated: airflow-settings (make docs-tables) -->
    | variable | default | what it sets |
    ...
    <!-- END generated: airflow-settings -->

``python scripts/docs_tables.py`` rewrites every block from its source (``make docs-tables``);
``--check`` rewrites nothing and exits 1 naming each block that differs (``make docs`` runs it,
and ``tests/test_docs.py``), so a setting added, renamed or re-described in its class and not in
the docs fails CI.

- ``airflow-settings``: ``recsys.settings.Settings`` (the Airflow side), as ``python -m recsys.settings`` prints it;
- ``serving-settings``: ``tasks.serve.config.Settings`` (the serving app, pydantic-settings);
- ``pipeline-params`` and ``rollback-params``: the Params of ``recommender_pipeline`` and
  ``recommender_rollback`` (the trigger form's fields), as the DAG files declare them.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "docs" / "configuration.md"]
BLOCK = re.compile(r"(<!-- BEGIN generated: (?P<name>[a-z-]+)[^>]*-->\n)(?P<body>.*?)"
                   r"(<!-- END generated: (?P=name) -->)", re.DOTALL)


def airflow_settings() -> str:
    from recsys.settings import table_markdown

    return table_markdown()


def serving_settings() -> str:
    from pydantic_core import PydanticUndefined

    from tasks.serve.config import Settings

    rows = ["| variable | default | what it sets |", "|---|---|---|"]
    for name, info in Settings.model_fields.items():
        if info.default is PydanticUndefined:
            default = "required"
        else:
            default = f"`{info.default}`"
        assert "|" not in str(info.description), name  # a cell may not hold the column separator
        rows.append(f"| `{name.upper()}` | {default} | {info.description} |")
    return "\n".join(rows) + "\n"


@functools.cache
def dag_bag():
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.0.x
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    return DagBag(dag_folder=str(ROOT / "dags"))


def dag_params(dag_id: str) -> str:
    """The DAG's Params: default (or "required"), what the trigger form accepts, the description."""
    import json

    bag = dag_bag()
    if dag_id not in bag.dags:
        raise SystemExit(f"{dag_id} does not import: {bag.import_errors}")
    rows = ["| Param | default | accepts | what it sets |", "|---|---|---|---|"]
    params = bag.dags[dag_id].params
    for name in params:
        param = params.get_param(name)
        schema = param.schema
        default = f"`{json.dumps(param.value)}`" if param.has_value else "required"
        accepts = [schema.get("type", "any")]
        if "minimum" in schema and "maximum" in schema:
            accepts.append(f"{schema['minimum']}–{schema['maximum']}")
        elif "minimum" in schema:
            accepts.append(f"≥ {schema['minimum']}")
        elif "maximum" in schema:
            accepts.append(f"≤ {schema['maximum']}")
        if "minLength" in schema:
            accepts.append(f"at least {schema['minLength']} characters")
        if "pattern" in schema:
            pattern = schema["pattern"]
            empty = re.fullmatch(r"\^\(\|(.*)\)\$", pattern)  # ^(|X)$: empty, or X
            accepts.append(f"empty or matching `^{empty[1]}$`" if empty else f"matching `{pattern}`")
        description = param.description or ""
        assert "|" not in "".join(accepts) + description, name  # a cell may not hold the column separator
        rows.append(f"| `{name}` | {default} | {', '.join(accepts)} | {description} |")
    return "\n".join(rows) + "\n"


SOURCES: dict[str, Callable[[], str]] = {
    "airflow-settings": airflow_settings,
    "serving-settings": serving_settings,
    "pipeline-params": lambda: dag_params("recommender_pipeline"),
    "rollback-params": lambda: dag_params("recommender_rollback"),
}


def render(text: str) -> str:
    """``text`` with every generated block rewritten from its source; an unknown block name is an error."""

    def block(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in SOURCES:
            raise SystemExit(f"unknown generated block {name!r}: known are {', '.join(SOURCES)}")
        return match.group(1) + SOURCES[name]() + match.group(4)

    return BLOCK.sub(block, text)


def stale(page: Path) -> list[str]:
    """Names of the blocks of ``page`` whose text differs from what their source renders."""
    text = page.read_text()
    fresh = {m["name"]: m["body"] for m in BLOCK.finditer(render(text))}
    return [m["name"] for m in BLOCK.finditer(text) if m["body"] != fresh[m["name"]]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is out of date")
    parser.add_argument("pages", nargs="*", type=Path, default=PAGES)
    args = parser.parse_args(argv)
    failed = False
    for page in args.pages:
        text = page.read_text()
        if not BLOCK.search(text):
            print(f"{page}: no generated block", file=sys.stderr)
            failed = True
        elif args.check:
            for name in stale(page):
                print(f"{page}: table {name!r} differs from its source: run `make docs-tables`", file=sys.stderr)
                failed = True
        else:
            page.write_text(render(text))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
    sys.exit(main())
