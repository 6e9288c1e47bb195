"""streamer.aws.clients: the factory observe uses for a deployment's boto3 clients."""

from __future__ import annotations

import pytest
from botocore.exceptions import ProfileNotFound

from streamer.aws import clients


def test_local_clients_use_fixed_credentials_the_endpoint_and_standard_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A developer's real credentials must not reach the local stack.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREALREALREAL")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "real-secret")
    c = clients.client("dynamodb", endpoint_url="http://127.0.0.1:1", region="eu-west-1", local=True)
    creds = c._request_signer._credentials
    assert (creds.access_key, creds.secret_key) == ("testing", "testing")
    assert c.meta.endpoint_url == "http://127.0.0.1:1"
    assert c.meta.region_name == "eu-west-1"
    assert c.meta.config.retries == {"total_max_attempts": 4, "mode": "standard"}  # retries + the first call


def test_clients_share_a_given_session_and_take_max_attempts() -> None:
    sess = clients.session(region="us-west-2", local=True)
    c = clients.client("stepfunctions", from_session=sess, max_attempts=5)
    assert c.meta.region_name == "us-west-2"
    assert c.meta.config.retries == {"total_max_attempts": 6, "mode": "standard"}


def test_an_unknown_profile_is_botocores_profile_not_found(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path) + "/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path) + "/credentials")
    with pytest.raises(ProfileNotFound):
        clients.client("dynamodb", profile="no-such-profile", region="us-east-1")
