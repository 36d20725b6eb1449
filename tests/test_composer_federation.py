"""Composer's keyless AWS access: the ``aws_default`` connection federates the worker's Google
identity to an AWS role (the amazon provider's ``assume_role_with_web_identity`` with
``assume_role_with_web_identity_federation: google``). Tested at the connection level: the extra
parses and the hook makes the STS call docs/managed.md documents. The Google ID token is the one
thing replaced (the google provider's loader needs a Google metadata server); STS is botocore's
Stubber, which validates the request against the service model: nothing leaves the machine."""

from __future__ import annotations

import json

import boto3
import pytest
from airflow.providers.amazon.aws.hooks import base_aws
from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from botocore.stub import ANY, Stubber

ROLE = "arn:aws:iam::123456789012:role/recsys-composer"
AUDIENCE = "recsys-composer-to-aws"
# docs/managed.md: the connection Composer's environment variable AIRFLOW_CONN_AWS_DEFAULT holds
EXTRA = {"role_arn": ROLE, "region_name": "eu-west-1",
         "assume_role_method": "assume_role_with_web_identity",
         "assume_role_with_web_identity_federation": "google",
         "assume_role_with_web_identity_federation_audience": AUDIENCE}


def test_the_connection_extra_federates_the_google_identity_to_the_role(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "extra": EXTRA}))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    asked = []

    def google_token_loader(self):
        asked.append(self.extra_config["assume_role_with_web_identity_federation_audience"])
        return lambda: "google-id-token-for-the-composer-service-account"

    monkeypatch.setattr(base_aws.BaseSessionFactory, "_get_google_identity_token_loader", google_token_loader)
    stubs = []
    real_client = boto3.session.Session.client

    def client(self, service_name, *args, **kwargs):
        made = real_client(self, service_name, *args, **kwargs)
        if service_name == "sts":
            stub = Stubber(made)
            stub.add_response("assume_role_with_web_identity", {"Credentials": {
                "AccessKeyId": "ASIAFEDERATEDROLE01", "SecretAccessKey": "s", "SessionToken": "t",
                "Expiration": "2030-01-01T00:00:00Z"}}, {
                "RoleArn": ROLE, "RoleSessionName": ANY,
                "WebIdentityToken": "google-id-token-for-the-composer-service-account"})
            stub.activate()
            stubs.append(stub)
        return made

    monkeypatch.setattr(boto3.session.Session, "client", client)
    hook = AwsBaseHook(aws_conn_id="aws_default", client_type="s3")
    assert hook.conn_config.assume_role_method == "assume_role_with_web_identity"
    assert hook.conn_config.role_arn == ROLE and hook.conn_config.region_name == "eu-west-1"
    credentials = hook.get_session().get_credentials().get_frozen_credentials()
    assert credentials.access_key == "ASIAFEDERATEDROLE01"  # the role's temporary credentials, no stored key
    assert asked == [AUDIENCE] and len(stubs) == 1
    stubs[0].assert_no_pending_responses()


def test_an_unknown_federation_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "extra": {
        **EXTRA, "assume_role_with_web_identity_federation": "gcp"}}))
    hook = AwsBaseHook(aws_conn_id="aws_default", client_type="s3")
    with pytest.raises(Exception, match="Unsupported federation: gcp"):
        hook.get_session().get_credentials().get_frozen_credentials()
