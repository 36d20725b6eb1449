"""The service's stable endpoint: the Application Load Balancer ``recsys.infra up`` makes or
adopts by name (against the moto server's ELBv2 and EC2 APIs), and the roll's smoke test that
defaults to it (exact ECS/ELBv2 responses through botocore's Stubber, :mod:`tests.ecs_responses`,
for a roll moto cannot complete)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from recsys import deploy, infra
from recsys.settings import Settings
from tests import ecs_responses as r


def counts(boto) -> dict[str, int]:
    elbv2, ec2 = boto("elbv2"), boto("ec2")
    balancers = elbv2.describe_load_balancers()["LoadBalancers"]
    return {"load_balancers": len(balancers), "target_groups": len(elbv2.describe_target_groups()["TargetGroups"]),
            "listeners": sum(len(elbv2.describe_listeners(LoadBalancerArn=b["LoadBalancerArn"])["Listeners"])
                             for b in balancers),
            "security_groups": len(ec2.describe_security_groups()["SecurityGroups"])}


def ingress(ec2, group: str) -> list[tuple[int, list[str], list[str]]]:
    rules = ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"][0]["IpPermissions"]
    return sorted((p["FromPort"], sorted(x["CidrIp"] for x in p.get("IpRanges", [])),
                   sorted(x["GroupId"] for x in p.get("UserIdGroupPairs", []))) for p in rules)


def test_infra_up_puts_the_service_behind_a_load_balancer_checking_readyz_and_prints_the_endpoint(aws, boto,
                                                                                                   capsys,
                                                                                                   aws_calls):
    out = infra.up(Settings(), ecs=True, default_subnets=True)
    elbv2, ec2, ecs = boto("elbv2"), boto("ec2"), boto("ecs")
    made = out["load_balancer"]

    lb = elbv2.describe_load_balancers(Names=["recsys-serve"])["LoadBalancers"][0]
    assert (lb["Type"], lb["Scheme"], lb["LoadBalancerArn"]) == ("application", "internet-facing",
                                                                  made["load_balancer"])
    assert sorted(z["SubnetId"] for z in lb["AvailabilityZones"]) == out["subnets"]
    assert out["endpoint"] == made["endpoint"] == f"http://{lb['DNSName']}"

    group = elbv2.describe_target_groups(Names=["recsys-serve"])["TargetGroups"][0]
    assert group["TargetGroupArn"] == made["target_group"]
    assert (group["TargetType"], group["Protocol"], group["Port"], group["VpcId"]) == ("ip", "HTTP", 8080,
                                                                                        lb["VpcId"])
    assert (group["HealthCheckPath"], group["Matcher"]) == ("/readyz", {"HttpCode": "200"})

    listener = elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"][0]
    assert (listener["Protocol"], listener["Port"]) == ("HTTP", 80)
    assert listener["DefaultActions"][0]["Type"] == "forward"
    assert listener["DefaultActions"][0]["TargetGroupArn"] == group["TargetGroupArn"]

    alb_group, tasks_group = lb["SecurityGroups"][0], made["security_groups"]["tasks"]
    assert made["security_groups"]["alb"] == lb["SecurityGroups"]
    assert ingress(ec2, alb_group) == [(80, ["0.0.0.0/0"], [])]  # the listener port, from anywhere
    assert ingress(ec2, tasks_group) == [(8080, [], [alb_group])]  # the app's port, from the ALB only

    service = ecs.describe_services(cluster="recsys", services=["recsys-serve"])["services"][0]
    assert service["loadBalancers"] == [{"targetGroupArn": group["TargetGroupArn"], "containerName": "recsys",
                                         "containerPort": 8080}]
    created = [c.params for c in aws_calls if c.operation == "CreateService"]
    assert [c["healthCheckGracePeriodSeconds"] for c in created] == [infra.HEALTH_CHECK_GRACE_SECONDS]  # moto drops it
    assert service["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"] == [tasks_group]

    # idempotent: a second run (here through the CLI) adopts everything by name and makes nothing
    before = counts(boto)
    assert infra.main(["up", "--default-subnets"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["endpoint"] == out["endpoint"] and printed["load_balancer"] == made
    assert counts(boto) == before == {"load_balancers": 1, "target_groups": 1, "listeners": 1,
                                      "security_groups": before["security_groups"]}


def test_a_load_balancer_and_target_group_of_that_name_are_adopted_and_the_health_check_set(aws, boto):
    elbv2, ec2 = boto("elbv2"), boto("ec2")
    subnets = infra.default_subnets(ec2)
    vpc = ec2.describe_subnets(SubnetIds=subnets)["Subnets"][0]["VpcId"]
    own_group = ec2.create_security_group(GroupName="team-edge", Description="the team's", VpcId=vpc)["GroupId"]
    lb = elbv2.create_load_balancer(Name="recsys-serve", Subnets=subnets, SecurityGroups=[own_group],
                                    Scheme="internet-facing", Type="application")["LoadBalancers"][0]
    tg = elbv2.create_target_group(Name="recsys-serve", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="ip",
                                   HealthCheckPath="/")["TargetGroups"][0]

    out = infra.up(Settings(), ecs=True, default_subnets=True)["load_balancer"]
    assert (out["load_balancer"], out["target_group"]) == (lb["LoadBalancerArn"], tg["TargetGroupArn"])
    assert out["security_groups"]["alb"] == [own_group]  # the adopted balancer's groups are left as they are
    assert ingress(ec2, out["security_groups"]["tasks"]) == [(8080, [], [own_group])]
    group = elbv2.describe_target_groups(Names=["recsys-serve"])["TargetGroups"][0]
    assert group["HealthCheckPath"] == "/readyz"
    assert [g["GroupName"] for g in ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["recsys-serve-alb"]}])["SecurityGroups"]] == []


def test_a_target_group_fargate_cannot_use_is_refused_by_name(aws, boto):
    ec2 = boto("ec2")
    vpc = ec2.describe_subnets(SubnetIds=infra.default_subnets(ec2))["Subnets"][0]["VpcId"]
    boto("elbv2").create_target_group(Name="recsys-serve", Protocol="HTTP", Port=8080, VpcId=vpc,
                                      TargetType="instance")
    with pytest.raises(infra.InfraError, match="target type instance.*need type ip.*RECSYS_ALB_NAME"):
        infra.up(Settings(), ecs=True, default_subnets=True)


def test_https_with_a_certificate_and_an_internal_scheme(aws, boto, monkeypatch):
    cert = boto("acm").request_certificate(DomainName="recs.example.com")["CertificateArn"]
    monkeypatch.setenv("RECSYS_ALB_CERTIFICATE_ARN", cert)
    monkeypatch.setenv("RECSYS_ALB_SCHEME", "internal")
    out = infra.up(Settings(), ecs=True, default_subnets=True)
    elbv2, ec2 = boto("elbv2"), boto("ec2")
    lb = elbv2.describe_load_balancers(Names=["recsys-serve"])["LoadBalancers"][0]
    listener = elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"][0]
    assert (lb["Scheme"], listener["Protocol"], listener["Port"]) == ("internal", "HTTPS", 443)
    assert listener["Certificates"][0]["CertificateArn"] == cert
    assert out["endpoint"] == f"https://{lb['DNSName']}"
    vpc_cidr = ec2.describe_vpcs(VpcIds=[lb["VpcId"]])["Vpcs"][0]["CidrBlock"]
    assert ingress(ec2, lb["SecurityGroups"][0]) == [(443, [vpc_cidr], [])]  # internal: the VPC only


def test_one_subnet_is_refused_before_anything_is_made(aws, boto, monkeypatch):
    subnet = infra.default_subnets(boto("ec2"))[0]
    monkeypatch.setenv("RECSYS_ECS_SUBNETS", subnet)
    with pytest.raises(infra.InfraError, match="two Availability Zones.*RECSYS_ALB_SUBNETS"):
        infra.up(Settings(), ecs=True)
    assert boto("ecs").list_clusters()["clusterArns"] == []
    assert boto("ecr").describe_repositories()["repositories"] == []
    infra.up(Settings(), ecs=True, alb=False)  # --no-alb: a service without one
    assert boto("elbv2").describe_load_balancers()["LoadBalancers"] == []


def test_a_service_made_without_a_load_balancer_is_attached_to_it_with_update_service(aws, boto, aws_calls):
    """ECS lets UpdateService add load balancers to a rolling-update service (moto accepts the call
    but does not store them: the exact request is what is checked)."""
    infra.up(Settings(), ecs=True, default_subnets=True, alb=False)
    aws_calls.clear()
    out = infra.up(Settings(), ecs=True, default_subnets=True)
    updates = [c.params for c in aws_calls if c.operation == "UpdateService"]
    assert updates == [{"cluster": "recsys", "service": "recsys-serve",
                        "loadBalancers": [{"targetGroupArn": out["load_balancer"]["target_group"],
                                           "containerName": "recsys", "containerPort": 8080}],
                        "healthCheckGracePeriodSeconds": infra.HEALTH_CHECK_GRACE_SECONDS,
                        "networkConfiguration": {"awsvpcConfiguration": {
                            "subnets": out["subnets"], "securityGroups": [out["load_balancer"]["security_groups"]
                                                                          ["tasks"]],
                            "assignPublicIp": "DISABLED"}}}]


class Readyz(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"status": "ready", "model_version": "v2"}).encode()
        self.send_response(200 if self.path == "/readyz" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def app():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Readyz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def endpoint_responses(fake: r.Ecs, port: int) -> None:
    """The smoke test's lookup of the service's endpoint, as ELBv2 answers it: the target group's
    load balancer, its listener forwarding there, its DNS name (here loopback: the app above)."""
    lb = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/recsys-serve/50dc6c495c0c9188"
    fake.elb_stub.add_response("describe_target_groups", {"TargetGroups": [
        {"TargetGroupArn": r.TARGET_GROUP, "TargetGroupName": "recsys-serve", "LoadBalancerArns": [lb]}]},
        {"TargetGroupArns": [r.TARGET_GROUP]})
    fake.elb_stub.add_response("describe_listeners", {"Listeners": [
        {"ListenerArn": lb.replace(":loadbalancer/", ":listener/") + "/f2f7dc8efc522ab2", "LoadBalancerArn": lb,
         "Port": port, "Protocol": "HTTP",
         "DefaultActions": [{"Type": "forward", "TargetGroupArn": r.TARGET_GROUP}]}]}, {"LoadBalancerArn": lb})
    fake.elb_stub.add_response("describe_load_balancers", {"LoadBalancers": [
        {"LoadBalancerArn": lb, "DNSName": "127.0.0.1", "Type": "application"}]}, {"LoadBalancerArns": [lb]})


def test_without_recsys_smoke_url_the_roll_smoke_tests_the_load_balancers_endpoint(app):
    """Healthy targets, then /readyz through the endpoint must report the new version; a
    version the endpoint does not serve fails the roll and rolls back. Before, no smoke test ran
    without RECSYS_SMOKE_URL."""
    from tests.test_ecs_roll import stable, stubbed

    port = app.server_address[1]
    task = r.running_task("t3", r.NEW, "10.0.1.5")
    with r.Ecs() as fake:
        fake.register()
        fake.describe(stable(r.NEW, load_balancer=True))
        fake.describe(stable(r.NEW, load_balancer=True))
        fake.running(task)
        fake.targets(("10.0.1.5", "healthy", None))
        endpoint_responses(fake, port)
        assert stubbed(fake, settle_attempts=1).execute({})["task_definition"] == r.NEW
        fake.assert_done()  # the endpoint was looked up and asked

    with r.Ecs() as fake:  # the rollback CLI's roll defaults to the same endpoint
        fake.register()
        fake.describe(stable(r.NEW, load_balancer=True))
        fake.describe(stable(r.NEW, load_balancer=True))
        fake.running(task)
        fake.targets(("10.0.1.5", "healthy", None))
        endpoint_responses(fake, port)
        deploy.ecs.deploy_ecs(fake.ecs, Settings(), "repo/recsys-serve:new", "v2", wait_delay=0, wait_attempts=2,
                          elbv2=fake.elbv2)
        fake.assert_done()


def test_a_version_the_endpoint_does_not_serve_fails_the_roll_and_rolls_back(app):
    from recsys.operators.ecs_roll import RollFailed
    from tests.test_ecs_roll import stable, stubbed

    port = app.server_address[1]
    task = r.running_task("t3", r.NEW, "10.0.1.5")
    with r.Ecs() as fake:
        fake.register()
        fake.describe(stable(r.NEW, load_balancer=True))
        fake.describe(stable(r.NEW, load_balancer=True))
        fake.running(task)
        fake.targets(("10.0.1.5", "healthy", None))
        endpoint_responses(fake, port)
        fake.stopped()
        fake.update(r.OLD)
        op = stubbed(fake, settle_attempts=1)
        op.model_version, op.smoke_timeout = "v9", 1.0
        with pytest.raises(RollFailed, match=rf"smoke test failed: http://127.0.0.1:{port}/readyz did not report "
                                             r"v9.*rolled back to recsys-serve:7"):
            op.execute({})
        fake.assert_done()


def test_a_service_whose_load_balancers_ecs_cannot_change_is_refused_with_what_to_do(aws, boto):
    ecs = boto("ecs")
    ecs.create_cluster(clusterName="recsys")
    taskdef = ecs.register_task_definition(family="other", containerDefinitions=[
        {"name": "recsys", "image": "x", "memory": 512}])["taskDefinition"]["taskDefinitionArn"]
    ecs.create_service(cluster="recsys", serviceName="recsys-serve", taskDefinition=taskdef, desiredCount=1,
                       deploymentController={"type": "CODE_DEPLOY"})
    with pytest.raises(infra.InfraError, match="CODE_DEPLOY deployment controller.*attach target group "
                                               "recsys-serve through it"):
        infra.up(Settings(), ecs=True, default_subnets=True)
