"""The plan of the house, checked statically (no import runs): the stages under ``tasks/`` never import
Airflow or the Airflow side (``recsys``), and no stage imports another stage (nor a shared module a
stage). What stages share lives in
modules of their own (``tasks/layout.py``, ``schema.py``, ``storage.py``, ``table.py``, ``shards.py``,
``tasks/model/``...), so a stage can change, or ship in its own image, without dragging another along."""

from __future__ import annotations

import ast
from pathlib import Path

TASKS = Path(__file__).resolve().parents[1] / "tasks"


def stages(tasks: Path) -> set[str]:
    """A stage is a package with a command line: ``python -m tasks.<stage>``."""
    return {p.parent.name for p in tasks.glob("*/__main__.py")}


def imports(path: Path) -> list[str]:
    """Absolute module names ``path`` imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return names


def cross_stage(tasks: Path) -> list[tuple[str, str]]:
    """(file, module) of every import of a stage by another stage or by a shared module."""
    known = stages(tasks)
    found = set()
    for path in tasks.rglob("*.py"):
        parts = path.relative_to(tasks).parts
        own = parts[0] if len(parts) > 1 else None
        for name in imports(path):
            seg = name.split(".")
            if seg[0] == "tasks" and len(seg) > 1 and seg[1] in known and seg[1] != own:
                found.add((str(path.relative_to(tasks.parent)), name))
    return sorted(found)


def airflow_side(tasks: Path) -> list[tuple[str, str]]:
    """(file, module) of every import of Airflow or of ``recsys`` under ``tasks``."""
    return sorted({(str(path.relative_to(tasks.parent)), name) for path in tasks.rglob("*.py")
                   for name in imports(path) if name.split(".")[0] in ("airflow", "recsys")})


def test_no_stage_imports_another_stage():
    assert {"data", "train", "score", "publish", "serve"} <= stages(TASKS)  # not vacuous
    assert cross_stage(TASKS) == []


def test_the_stages_never_import_airflow_or_the_airflow_side():
    assert airflow_side(TASKS) == []


def test_the_checks_flag_a_cross_stage_import_and_airflow(tmp_path):
    tasks = tmp_path / "tasks"
    for stage in ("score", "publish"):
        (tasks / stage).mkdir(parents=True)
        (tasks / stage / "__main__.py").write_text("")
    (tasks / "score" / "x.py").write_text("from tasks.publish import finalize\nimport tasks.score.y\n"
                                          "import airflow.models\n")
    (tasks / "shards.py").write_text("from tasks.score import x\n")  # a shared module leaning on a stage
    assert cross_stage(tasks) == [("tasks/score/x.py", "tasks.publish"), ("tasks/score/x.py", "tasks.publish.finalize"),
                                  ("tasks/shards.py", "tasks.score"), ("tasks/shards.py", "tasks.score.x")]
    assert airflow_side(tasks) == [("tasks/score/x.py", "airflow.models")]
