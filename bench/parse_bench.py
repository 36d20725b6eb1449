"""DAG parse time, the way a dag-processor pays it, against a one-task DAG parsed in the same run.

Each sample is a fresh interpreter that imports Airflow's parsing machinery first (a
dag-processor has it loaded already), then times ``DagBag.process_file`` on the file.
Prints the median per DAG file and the ratio to the baseline DAG. Target: under 0.2 s.

    .venv/bin/python bench/parse_bench.py [--repeat 7] [--compute local|docker|ecs]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BASELINE = '''
import pendulum
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import dag, task


@dag(dag_id="baseline", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
def baseline():
    @task
    def one():
        return 1

    one() >> BashOperator(task_id="two", bash_command="true")


baseline()
'''

SAMPLE = '''
import json, sys, time
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.0.x
    from airflow.models.dagbag import DagBag
import airflow.sdk  # noqa: F401  (loaded in any dag-processor)
bag = DagBag(dag_folder=sys.argv[2])  # warm: Airflow's own lazy imports
start = time.perf_counter()
bag.process_file(sys.argv[1])
elapsed = time.perf_counter() - start
heavy = [m for m in ("boto3", "botocore", "pandas", "numpy", "torch") if m in sys.modules]
print(json.dumps({"seconds": elapsed, "errors": {k: str(v)[-300:] for k, v in bag.import_errors.items()},
                  "heavy": heavy}))
'''


def sample(path: Path, warm_dir: Path, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", SAMPLE, str(path), str(warm_dir)], env=env, cwd=warm_dir,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--compute", default=os.environ.get("RECSYS_COMPUTE", "local"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "warm").mkdir()
        (tmp / "warm" / "warm.py").write_text(BASELINE.replace('"baseline"', '"warm"'))
        base = tmp / "baseline.py"
        base.write_text(BASELINE)
        env = {**os.environ, "PYTHONPATH": str(ROOT / "plugins"), "RECSYS_COMPUTE": args.compute,
               "AIRFLOW__CORE__LOAD_EXAMPLES": "false"}
        results = {"baseline": [], "recommender_pipeline": []}
        heavy: set[str] = set()
        for _ in range(args.repeat):  # interleaved: both see the same machine load
            results["baseline"].append(sample(base, tmp / "warm", env)["seconds"])
            ours = sample(ROOT / "dags" / "recommender_pipeline.py", tmp / "warm", env)
            if ours["errors"]:
                raise SystemExit(f"import errors: {ours['errors']}")
            heavy.update(ours["heavy"])
            results["recommender_pipeline"].append(ours["seconds"])
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"DAG parse (RECSYS_COMPUTE={args.compute}, median of {args.repeat} fresh interpreters)")
    for name, seconds in med.items():
        print(f"  {name:22s} {seconds * 1000:8.1f} ms   {seconds / med['baseline']:5.2f}x baseline")
    print(f"  heavy modules loaded while parsing: {sorted(heavy) or 'none'}; target 200 ms: "
          f"{'met' if med['recommender_pipeline'] <= 0.2 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
