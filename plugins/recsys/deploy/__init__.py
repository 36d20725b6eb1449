"""Build the serving image, roll it out, and roll back when the new version is unhealthy.

One concern per module:

- :mod:`~recsys.deploy.image`: the serving and jobs images (content tags, ECR, ``docker build`` and
  ``push``); an unchanged image is never rebuilt or pushed twice.
- :mod:`~recsys.deploy.ecs`: task-definition revisions (the jobs revision a run pins, the serving
  revision a roll registers) and the blocking roll of ``python -m recsys.rollback``
  (:mod:`recsys.ecs_rollout`, shared with the DAG's operator).
- :mod:`~recsys.deploy.smoke`: the smoke test every roll ends with.
- :mod:`~recsys.deploy.local`: ``RECSYS_DEPLOY=local``, the app on this machine.
- :mod:`~recsys.deploy.container`: ``RECSYS_DEPLOY=docker``, the serving container on a Docker engine.
- :mod:`~recsys.deploy.cli`: ``python -m recsys.deploy push-image | push-jobs-image | image-tag``.

Every module imports only the standard library and pydantic (the settings) at import time (the
providers and boto3 when called), so ``from recsys import deploy`` is cheap and
``deploy.<module>.<name>`` reaches them all.
"""

from recsys.deploy import cli, container, ecs, image, local, smoke

__all__ = ["cli", "container", "ecs", "image", "local", "smoke"]
