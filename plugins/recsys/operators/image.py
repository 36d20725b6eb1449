"""The serving image operator (every ``RECSYS_DEPLOY``). Nothing of the amazon provider is
imported at parse time: the hook is built when the task runs."""

from __future__ import annotations

from collections.abc import Sequence

from recsys.compat import BaseOperator, fail


class ServingImageOperator(BaseOperator):
    """The serving image in ECR, built and pushed unless its tag is there already; returns its
    reference. The tag hashes the image's inputs (``recsys.deploy.image.image_tag``, or the one the
    bundle recorded), so an unchanged image is never rebuilt.

    :param repository: the ECR repository's name. (templated)
    :param require: fail when the image is missing and cannot be built here (a managed worker has
        no engine and no sources); when False, log why and return None instead (the local app
        runs from source and needs no image; the deploy still runs).
    :param aws_conn_id: the Airflow connection used for AWS credentials. (templated)
    :param region_name: the AWS region of the repository. (templated)
    """

    template_fields: Sequence[str] = ("repository", "aws_conn_id", "region_name")

    def __init__(self, *, repository: str, require: bool = True, aws_conn_id: str | None = "aws_default",
                 region_name: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.repository = repository
        self.require = require
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name

    def execute(self, context) -> str | None:

        from airflow.providers.amazon.aws.hooks.ecr import EcrHook

        from recsys import deploy
        from recsys.settings import Settings

        settings = Settings().model_copy(update={"ecr_repository": self.repository})
        try:
            return deploy.image.ensure_image(EcrHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name).conn,
                                       settings)
        except deploy.image.ImageUnavailable as err:
            if self.require:
                raise fail(str(err)) from None
            self.log.warning("serving image not built: %s (the local app runs from source)", err)
            return None
