"""WorkerSettings: exactly the contract.Env names, bad values reported with the variable, the value and the fix."""

from __future__ import annotations

import pytest

from cosmos_export import contract
from cosmos_export.contract import Env
from cosmos_export.settings import SettingsError, WorkerSettings, env_name, load_settings

GOOD = {
    Env.AWS_REGION: "eu-west-1",
    Env.AZURE_TENANT_ID: "11111111-2222-3333-4444-555555555555",
    Env.AZURE_CLIENT_ID: "22222222-2222-3333-4444-555555555555",
    Env.COSMOS_ENDPOINT: "https://prod-acct.documents.azure.com:443/",
    Env.COSMOS_DATABASE: "shop",
    Env.COSMOS_CONTAINERS: "orders, customers",
    Env.BUCKET: "acme-cosmos-exports",
}


@pytest.fixture()
def env(monkeypatch):
    for name in [v for k, v in vars(Env).items() if k.isupper()] + ["ECS_CONTAINER_METADATA_URI_V4"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in GOOD.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def problems(**overrides) -> list[str]:
    with pytest.raises(SettingsError) as err:
        load_settings(**overrides)
    return err.value.problems


def test_every_field_reads_a_contract_env_name():
    names = {v for k, v in vars(Env).items() if k.isupper()}
    assert {env_name(f) for f in WorkerSettings.model_fields} == names


def test_defaults_and_derived_values(env):
    s = load_settings()
    assert s.cosmos_containers == ("orders", "customers")
    assert (s.identity_mode, s.token_duration_seconds, s.min_consistency, s.change_feed_mode) == (
        "workload",
        contract.DEFAULT_WEB_IDENTITY_TOKEN_SECONDS,
        "Session",
        "LatestVersion",
    )
    assert s.account_name == "prod-acct" and s.sts_url == "https://sts.eu-west-1.amazonaws.com"
    assert s.cosmos_tls_verify is True and s.part_size_bytes == 64 * 1024 * 1024


def test_tuning_defaults_match_the_stack_defaults(env):
    """A worker started without the tuning variables behaves like one deployed with the stack's defaults."""
    from components.config import WorkerConfig

    s = load_settings()
    stack = WorkerConfig.model_fields
    assert s.compression == "zstd"
    assert (s.compression, s.concurrency, s.part_size_mb) == (
        stack["compression"].default,
        stack["concurrency"].default,
        stack["part_size_mb"].default,
    )


def test_cli_flags_override_the_environment(env):
    env.setenv(Env.CONCURRENCY, "3")
    assert load_settings().concurrency == 3
    assert load_settings(concurrency=8, cosmos_containers="a1").concurrency == 8
    assert load_settings(concurrency=None).concurrency == 3  # an absent flag keeps the env value


@pytest.mark.parametrize(
    "var,value,expected",
    [
        (Env.CONCURRENCY, "0", "EXPORT_CONCURRENCY='0': input should be greater than or equal to 1; use 1..64"),
        (
            Env.TOKEN_DURATION_SECONDS,
            "7200",
            "EXPORT_TOKEN_DURATION_SECONDS='7200': input should be less than or equal to 3600; use 60..3600 "
            "(Pulumi config cosmos-s3-export:tokenDurationSeconds)",
        ),
        (Env.COMPRESSION, "lz4", "EXPORT_COMPRESSION='lz4': input should be 'gzip' or 'zstd'; use 'gzip' or 'zstd'"),
        (
            Env.KMS_KEY_ARN,
            "alias-ish",
            "EXPORT_KMS_KEY_ARN='alias-ish': is not a KMS key ARN; use the full KMS key ARN (stack output kmsKeyArn), or unset it",
        ),
        (
            Env.COSMOS_ENDPOINT,
            "http://acct.documents.azure.com",
            "EXPORT_COSMOS_ENDPOINT='http://acct.documents.azure.com': is not an https URL; use the account URL",
        ),
        (
            Env.AZURE_CLIENT_ID,
            "my-app",
            "EXPORT_AZURE_CLIENT_ID='my-app': is not a GUID; set it to the Entra "
            "application's client id (stack output azureClientId)",
        ),
        (
            Env.PREFIX,
            "/exports/",
            "EXPORT_PREFIX='/exports/': must be non-empty with no leading, trailing or double '/'",
        ),
        (Env.MIN_CONSISTENCY, "Strongest", "EXPORT_MIN_CONSISTENCY='Strongest': input should be 'Eventual', "),
        (
            Env.COSMOS_CONTAINERS,
            "orders,orders",
            "EXPORT_COSMOS_CONTAINERS='orders,orders': a container is listed twice",
        ),
        (
            Env.COSMOS_TLS_VERIFY,
            "/nope/ca.pem",
            "EXPORT_COSMOS_TLS_VERIFY='/nope/ca.pem': is neither true/false nor an existing CA bundle file",
        ),
        (
            Env.QUERY_FILTER,
            "SELECT * FROM c",
            "EXPORT_QUERY_FILTER='SELECT * FROM c': must be only the condition after WHERE",
        ),
        (Env.AWS_REGION, "Ireland", "AWS_REGION='Ireland': is not an AWS region name"),
        (Env.BUCKET, "Bad_Bucket", "EXPORT_BUCKET='Bad_Bucket': is not a valid S3 bucket name"),
    ],
)
def test_bad_value_names_variable_value_and_fix(env, var, value, expected):
    env.setenv(var, value)
    [problem] = problems()
    assert problem.startswith(expected)


def test_missing_required_values_are_all_listed(env):
    for name in (Env.BUCKET, Env.COSMOS_DATABASE):
        env.delenv(name)
    assert problems() == [
        "EXPORT_COSMOS_DATABASE=(unset): is required; set it to the Cosmos database name "
        "(Pulumi config cosmos-s3-export:cosmosDatabase)",
        "EXPORT_BUCKET=(unset): is required; set it to the export bucket name (stack output bucketName)",
    ]


def test_workload_mode_needs_the_entra_ids_laptop_does_not(env):
    env.delenv(Env.AZURE_CLIENT_ID)
    assert problems() == [
        "EXPORT_AZURE_CLIENT_ID=(unset): is required in workload identity mode; set it to the "
        "Entra application's client id (stack output azureClientId)"
    ]
    assert load_settings(identity_mode="laptop").identity_mode == "laptop"


def test_laptop_mode_is_never_chosen_inside_ecs(env):
    env.setenv("ECS_CONTAINER_METADATA_URI_V4", "http://169.254.170.2/v4/abc")
    env.setenv(Env.IDENTITY_MODE, "laptop")
    assert problems() == [
        "EXPORT_IDENTITY_MODE='laptop': refused inside ECS (ECS_CONTAINER_METADATA_URI_V4 is set): "
        "a task must use its own role; set EXPORT_IDENTITY_MODE=workload"
    ]
    env.delenv(Env.IDENTITY_MODE)
    assert load_settings().identity_mode == "workload"  # the default, never a guess


def test_query_filter_needs_a_query_snapshot(env):
    env.setenv(Env.QUERY_FILTER, "c.status = 'open'")
    assert problems() == [
        "EXPORT_SNAPSHOT_SOURCE='changefeed': EXPORT_QUERY_FILTER only applies to query snapshots; "
        "set EXPORT_SNAPSHOT_SOURCE=query or unset EXPORT_QUERY_FILTER"
    ]
    assert load_settings(snapshot_source="query").query_filter == "c.status = 'open'"


def test_account_name_needed_for_an_ip_endpoint(env):
    env.setenv(Env.COSMOS_ENDPOINT, "https://127.0.0.1:8081")
    assert problems() == [
        "EXPORT_COSMOS_ACCOUNT=(unset): cannot be derived from "
        "EXPORT_COSMOS_ENDPOINT='https://127.0.0.1:8081'; set EXPORT_COSMOS_ACCOUNT to the account name"
    ]
    env.setenv(Env.COSMOS_ACCOUNT, "local")
    assert load_settings().account_name == "local"


def test_tls_verify_accepts_a_ca_bundle(env, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    env.setenv(Env.COSMOS_TLS_VERIFY, str(bundle))
    assert load_settings().cosmos_tls_verify == str(bundle)
    env.setenv(Env.COSMOS_TLS_VERIFY, "false")
    assert load_settings().cosmos_tls_verify is False
