"""Property-based: any bad worker environment or stack config value gives a clear error naming it, never a traceback."""

from __future__ import annotations

import os
import subprocess
from unittest import mock

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from components.config import CONFIG_KEYS, ConfigError, full_key, load_stack_config
from cosmos_export.contract import Env
from cosmos_export.settings import SettingsError, load_settings
from sandbox import mocked_stack
from sandbox.mocked_stack import stack_config
from tests.reliability.harness import env_int, record

EXAMPLES = env_int("RELIABILITY_HYPOTHESIS_EXAMPLES", 150)

GOOD_ENV = {
    Env.IDENTITY_MODE: "workload",
    Env.AWS_REGION: "eu-west-1",
    Env.AZURE_TENANT_ID: "11111111-2222-3333-4444-555555555555",
    Env.AZURE_CLIENT_ID: "22222222-2222-3333-4444-555555555555",
    Env.COSMOS_ENDPOINT: "https://acme.documents.azure.com:443/",
    Env.COSMOS_DATABASE: "orders",
    Env.COSMOS_CONTAINERS: "orders,customers",
    Env.BUCKET: "acme-export",
    Env.PREFIX: "cosmos",
}
ENV_NAMES = sorted({v for k, v in vars(Env).items() if k.isupper()})

# Anything an environment variable can hold (no NUL, no lone surrogates).
env_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40)

# Values that are certainly invalid, per variable.
INVALID = {
    Env.AWS_REGION: st.sampled_from(["EU-WEST-1", "eu_west_1", "euwest1", "eu-west", "us-east-1a", " eu-west-1"]),
    Env.AZURE_TENANT_ID: env_text.filter(lambda s: len(s.strip()) > 0 and len(s) != 36),
    Env.AZURE_CLIENT_ID: st.sampled_from(["not-a-guid", "1123264d-ae8e-547e-ac68-0d6146de780", "{GUID}"]),
    Env.TOKEN_DURATION_SECONDS: st.one_of(
        st.integers(max_value=59).map(str),
        st.integers(min_value=3601).map(str),
        st.sampled_from(["5m", "1e3", "three hundred", "300.5"]),
    ),
    Env.COSMOS_ENDPOINT: st.sampled_from(
        ["http://acme.documents.azure.com/", "acme.documents.azure.com", "https://", "ftp://x", "https:///path"]
    ),
    # Cosmos allows dots, dashes and inner spaces ('order lines', '-x'): contract.cosmos_id_problem.
    Env.COSMOS_CONTAINERS: st.sampled_from([",", "a#b", "orders,orders", "a?b", "a/b", "x" * 300, "bestellungen-ä"]),
    Env.COSMOS_DATABASE: st.sampled_from(["ends with space ", "a/b", "a\\b", "x" * 300, ".."]),
    Env.MIN_CONSISTENCY: env_text.filter(
        lambda s: s.strip() and s not in ("Eventual", "ConsistentPrefix", "Session", "BoundedStaleness", "Strong")
    ),
    Env.BUCKET: st.sampled_from(["Upper", "a", "a..b", "-dash", "under_score", "x" * 64]),
    Env.PREFIX: st.sampled_from(["/lead", "trail/", "a//b"]),
    Env.KMS_KEY_ARN: st.sampled_from(["key-123", "arn:aws:kms:eu-west-1:123:key/x", "arn:aws:s3:::bucket"]),
    Env.CONCURRENCY: st.one_of(st.integers(max_value=0), st.integers(min_value=65)).map(str),
    Env.PART_SIZE_MB: st.one_of(st.integers(max_value=4), st.integers(min_value=5121)).map(str),
    Env.PAGE_SIZE: st.one_of(st.integers(max_value=0), st.integers(min_value=10_001)).map(str),
    Env.COMPRESSION: st.sampled_from(["gz", "ZSTD", "brotli", "none"]),
    Env.CHANGE_FEED_MODE: st.sampled_from(["latest", "AllVersions", "Incremental"]),
    Env.IDENTITY_MODE: st.sampled_from(["ecs", "Workload", "keys"]),
    Env.STS_ENDPOINT: st.sampled_from(["http://sts.eu-west-1.amazonaws.com", "sts.amazonaws.com"]),
    Env.COSMOS_TLS_VERIFY: st.sampled_from(["maybe", "/no/such/ca.pem"]),
}


def _load(env: dict[str, str]) -> object:
    with mock.patch.dict(os.environ, env, clear=True):
        return load_settings()


@hsettings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(INVALID)), data=st.data())
def test_every_invalid_worker_variable_is_named_with_its_fix(name, data):
    value = data.draw(INVALID[name])
    with pytest.raises(SettingsError) as e:
        _load({**GOOD_ENV, name: value})
    lines = [p for p in e.value.problems if p.startswith(f"{name}=")]
    assert lines, e.value.problems
    assert all("; " in p or "required" in p for p in lines)  # the what and the fix
    if value.strip():
        assert repr(value) in lines[0] or repr(value.strip()) in lines[0] or name == Env.COSMOS_CONTAINERS


@hsettings(max_examples=EXAMPLES, deadline=None)
@given(name=st.sampled_from(ENV_NAMES), value=env_text)
def test_any_worker_variable_value_loads_or_fails_cleanly(name, value):
    try:
        _load({**GOOD_ENV, name: value})
    except SettingsError as e:
        # Every line names a variable ("NAME=value: what; fix"); the drawn one when its value was the problem.
        assert all(p.split("=", 1)[0] in ENV_NAMES for p in e.problems), e.problems
    # Anything else (ValidationError, TypeError, ...) propagates and fails the test.


@hsettings(max_examples=EXAMPLES, deadline=None)
@given(key=st.sampled_from(sorted(k for k in CONFIG_KEYS if ":" not in k or k == "aws:region")), value=env_text)
def test_any_stack_config_value_loads_or_names_the_key(key, value):
    config = stack_config("prod", {key: value})
    try:
        load_stack_config(config.get, "prod", config.keys())
    except ConfigError as e:
        # The drawn key is the only change from a valid stack, so it is the one named.
        assert any(p.startswith(full_key(key)) for p in e.problems), e.problems


def test_bad_stack_config_declares_no_resource(monkeypatch):
    created = []
    original = mocked_stack._Mocks.new_resource

    def spy(self, args):
        created.append(args.typ)
        return original(self, args)

    monkeypatch.setattr(mocked_stack._Mocks, "new_resource", spy)
    for key, value in (("bucketName", "Bad_Bucket"), ("tokenDurationSeconds", "99999"), ("schedule", "every day")):
        with pytest.raises(ConfigError) as e:
            mocked_stack.run_stack("dev", {key: value})
        assert any(p.startswith(f"cosmos-s3-export:{key}") for p in e.value.problems)
    assert created == []
    record(
        "Stack config: hypothesis over every key (+ 3 explicit programs)",
        trials=EXAMPLES + 3,
        documents=0,
        outcome="ConfigError naming the key; no traceback; no resource declared",
    )


def test_bad_worker_environment_exits_2_and_writes_nothing(moto_server, rel_bucket, rel_session, tmp_path):
    from tests.reliability.sandbox_world import WORKER

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EXPORT_"))}
    env.update(
        GOOD_ENV,
        **{
            Env.BUCKET: rel_bucket,
            Env.S3_ENDPOINT: moto_server.url,
            Env.PREFIX: "bad-env",
            Env.CONCURRENCY: "0",
            Env.COMPRESSION: "brotli",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        },
    )
    done = subprocess.run([WORKER, "run", "--mode", "snapshot"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "EXPORT_CONCURRENCY='0'" in done.stderr and "EXPORT_COMPRESSION='brotli'" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    s3 = rel_session.client("s3", endpoint_url=moto_server.url)
    assert s3.list_objects_v2(Bucket=rel_bucket, Prefix="bad-env").get("KeyCount", 0) == 0
    record(
        "Worker settings: hypothesis over every variable (+ CLI exit check)",
        trials=2 * EXAMPLES + 1,
        documents=0,
        outcome="SettingsError naming the variable, value and fix; exit 2; no traceback; no S3 object",
    )
