"""``RECSYS_COMPUTE=docker``: the stage in the jobs image, through the docker provider."""

from __future__ import annotations

import os
import re

from airflow.providers.docker.exceptions import DockerContainerFailedException
from airflow.providers.docker.operators.docker import DockerOperator

from recsys import environment
from recsys.operators import stage_failure


class RecsysDockerOperator(DockerOperator):
    """``DockerOperator`` that forwards AWS/recsys variables from the worker at run time and
    fails without retries on the stage's exit code 3.

    :param command: the stage argv.
    """

    def execute(self, context):
        # Resolved on the worker at run time (never at parse time, so credentials do not end up in
        # the serialized DAG). The provider keeps private_environment in ``_private_environment``
        # (never rendered or serialized); setting ``private_environment`` would be ignored.
        self._private_environment = {
            **environment.for_stage(os.environ),
            **self._private_environment,
        }
        try:
            return super().execute(context)
        except DockerContainerFailedException as err:
            match = re.search(r"'StatusCode': (\d+)", str(err))
            logs = [x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in (err.logs or [])]
            lines = [line for chunk in logs for line in chunk.splitlines()]
            raise stage_failure(self.task_id, int(match.group(1)) if match else None, lines) from None
