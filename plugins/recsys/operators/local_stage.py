"""``RECSYS_COMPUTE=local``: the stage as a subprocess of the worker."""

from __future__ import annotations

import re
from collections import deque
from functools import cached_property

from airflow.exceptions import AirflowException
from airflow.providers.standard.hooks.subprocess import SubprocessHook
from airflow.providers.standard.operators.bash import BashOperator

from recsys.operators import TAIL_LINES, stage_failure


class _TailLog:
    """A hook's logger that also keeps the last lines of the subprocess output."""

    def __init__(self, log, n: int = TAIL_LINES):
        self._log = log
        self.lines: deque[str] = deque(maxlen=n)

    def info(self, msg, *args, **kwargs):
        if msg == "%s" and len(args) == 1:  # SubprocessHook logs each output line as ("%s", line)
            self.lines.append(str(args[0]))
        return self._log.info(msg, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._log, name)


class TailingSubprocessHook(SubprocessHook):
    """``SubprocessHook`` whose logger also keeps the command's last output lines (``log.lines``)."""

    @property
    def log(self):
        if "_tail" not in self.__dict__:
            self.__dict__["_tail"] = _TailLog(super().log)
        return self.__dict__["_tail"]


class LocalStageOperator(BashOperator):
    """``BashOperator`` for a stage command: exit code 3 fails the task without retries,
    and the failure names the stage's own reason and its last log lines.

    :param bash_command: the stage command (see :func:`to_bash`).
    """

    @cached_property
    def subprocess_hook(self):
        return TailingSubprocessHook()

    def execute(self, context):
        try:
            return super().execute(context)
        except AirflowException as err:
            match = re.search(r"exit code (\d+)", str(err))
            if not match:
                raise
            raise stage_failure(self.task_id, int(match.group(1)), self.subprocess_hook.log.lines) from None
