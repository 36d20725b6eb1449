"""One code version per run (issue 30): with ``RECSYS_COMPUTE=ecs`` the run's ``plan`` resolves the
jobs image of this code's content tag to its ECR digest once and pins a jobs task-definition
revision running it; every ECS stage of the run runs that revision, whatever is pushed meanwhile.
Against the moto server (ECR's DescribeImages answers with the pushed manifest's digest)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from recsys import compute, deploy, infra, pipeline
from recsys.settings import Settings


@pytest.fixture
def ecs_stack(aws, boto, monkeypatch):
    out = infra.up(Settings(), ecs=True, default_subnets=True)
    monkeypatch.setenv("RECSYS_ECS_SUBNETS", ",".join(out["subnets"]))
    return out


def push(boto, tag: str, layer: str) -> str:
    """An image pushed to the jobs repository under ``tag`` (moto stores the manifest); its digest."""
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"digest": "sha256:" + "0" * 64, "size": 1, "mediaType": "x"},
                # moto's digest is that of the layers' digests: a different layer, a different image
                "layers": [{"digest": "sha256:" + layer * 64, "size": 1, "mediaType": "x"}]}
    out = boto("ecr").put_image(repositoryName=Settings().ecr_jobs_repository, imageTag=tag,
                                imageManifest=json.dumps(manifest),
                                imageManifestMediaType="application/vnd.docker.distribution.manifest.v2+json")
    return out["image"]["imageId"]["imageDigest"]


def image_of(boto, task_definition: str) -> str:
    return boto("ecs").describe_task_definition(taskDefinition=task_definition)["taskDefinition"][
        "containerDefinitions"][0]["image"]


def test_plan_pins_the_code_tag_by_digest_in_a_new_revision_and_reuses_it(ecs_stack, boto):
    settings = Settings(compute="ecs")
    tag = deploy.image.jobs_image_tag(settings)
    # what push-jobs-image pushes
    assert tag == deploy.image.image_tag(settings.project_root, deploy.image.JOBS_IMAGE_INPUTS)
    digest = push(boto, tag, "1")
    push(boto, "latest", "1")
    pinned = pipeline.pin_jobs_image(settings)
    assert pinned["jobs_image"] == f"{ecs_stack['jobs_repository']}@{digest}"
    assert pinned["jobs_task_definition"].endswith(f"task-definition/{settings.ecs_job_task_definition}:2")
    assert image_of(boto, pinned["jobs_task_definition"]) == pinned["jobs_image"]
    first = boto("ecs").describe_task_definition(taskDefinition=ecs_stack["jobs_task_definition"])["taskDefinition"]
    second = boto("ecs").describe_task_definition(taskDefinition=pinned["jobs_task_definition"])["taskDefinition"]
    # only the image changed: roles, sizes and the log configuration are the revision infra made
    for key in ("taskRoleArn", "executionRoleArn", "cpu", "memory", "networkMode"):
        assert second[key] == first[key], key
    assert second["containerDefinitions"][0]["logConfiguration"] == first["containerDefinitions"][0][
        "logConfiguration"]
    # the next run of the same code reuses the revision instead of registering another
    assert pipeline.pin_jobs_image(settings) == pinned
    arns = boto("ecs").list_task_definitions(familyPrefix=settings.ecs_job_task_definition)["taskDefinitionArns"]
    assert len(arns) == 2


def test_pushes_after_plan_change_nothing_for_the_running_run(ecs_stack, boto):
    settings = Settings(compute="ecs")
    tag = deploy.image.jobs_image_tag(settings)
    push(boto, tag, "1")
    pinned = pipeline.pin_jobs_image(settings)
    # mid-run: a new `latest` and a new code's tag are pushed, and another run of new code pins its own
    push(boto, "latest", "2")
    new_digest = push(boto, "f" * 16, "3")
    settings_new = Settings(compute="ecs")
    other = deploy.ecs.jobs_task_definition(boto("ecs"), settings_new, f"{ecs_stack['jobs_repository']}@{new_digest}")
    assert other != pinned["jobs_task_definition"]
    # the running run's revision still runs its digest: a digest names one image for good
    assert image_of(boto, pinned["jobs_task_definition"]) == pinned["jobs_image"]
    assert "@sha256:" in pinned["jobs_image"] and ":latest" not in pinned["jobs_image"]


class FakeTI:
    dag_id, task_id, run_id, map_index, try_number = "recommender_pipeline", "train", "manual__x", -1, 1

    def __init__(self, plan: dict, task_id: str):
        self.plan, self.task_id = plan, task_id

    def xcom_push(self, key, value):
        pass

    def xcom_pull(self, task_ids=None, **kwargs):
        return self.plan if task_ids == "plan" else None


def test_every_stage_runs_the_pinned_revision(ecs_stack, boto, aws_calls):
    """The RunTask call carries the plan's revision (family:revision), not the family (whose latest
    revision a push-and-`infra up` may change) and not `latest`."""
    settings = Settings(compute="ecs")
    push(boto, deploy.image.jobs_image_tag(settings), "1")
    pinned = pipeline.pin_jobs_image(settings)
    push(boto, "latest", "2")  # after plan
    # and a newer revision of the family, on `latest` (as `infra up` would register)
    newer = deploy.ecs.jobs_task_definition(boto("ecs"), settings, f"{ecs_stack['jobs_repository']}:latest")
    assert newer.endswith(":3")
    for stage in ("snapshot", "train"):
        ti = FakeTI(pinned, stage)  # its own task id: the provider reattaches to a task of the same one
        op = compute.compute_task(stage, ["python", "-m", "tasks.train", "--help"], settings)
        assert op.task_definition == compute.jobs_task_definition(settings)
        op.render_template_fields({"ti": ti, "task_instance": ti})
        op.awslogs_fetch_interval = timedelta(seconds=0.2)
        op.waiter_delay = 0
        with pytest.raises(Exception, match="pending|not in success|failed"):  # moto's container never runs
            op.execute({"ti": ti, "task_instance": ti})
    runs = [c for c in aws_calls if c.operation == "RunTask"]
    assert [c.params["taskDefinition"] for c in runs] == [pinned["jobs_task_definition"]] * 2
    assert runs[0].params["taskDefinition"].endswith(f"{settings.ecs_job_task_definition}:2")


def test_a_jobs_image_never_pushed_fails_plan_naming_the_fix(ecs_stack, boto):
    settings = Settings(compute="ecs")
    push(boto, "latest", "1")  # `latest` alone is not this code
    tag = deploy.image.jobs_image_tag(settings)
    with pytest.raises(deploy.image.ImageUnavailable, match=f"jobs image .*:{tag} is not in ECR.*make push-jobs-image"):
        pipeline.pin_jobs_image(settings)
    arns = boto("ecs").list_task_definitions(familyPrefix=settings.ecs_job_task_definition)["taskDefinitionArns"]
    assert len(arns) == 1  # nothing registered


def test_bundle_tag_wins_over_the_sources(monkeypatch):
    monkeypatch.setattr(deploy.image, "bundle_info", lambda: {"jobs_image_tag": "abc123"})
    assert deploy.image.jobs_image_tag(Settings()) == "abc123"


def test_other_backends_pin_nothing():
    assert pipeline.pin_jobs_image(Settings(compute="local")) == {}
