"""The chain of trust on loopback, configured the way the Pulumi program configures the real one.

STS double (the account issuer) -> Entra double (app, service principal, federated credential for
ROLE_ARN) -> Cosmos gateway double (the role assignment on /dbs/shop) -> moto S3. The `chain`
fixture (tests/runtime/conftest.py) starts it for one test.
"""

from __future__ import annotations

from cosmos_export import contract
from cosmos_export.settings import WorkerSettings

ISSUER = "https://7b3e9d21-4c6a-4f8e-b0d2-5a1c9e8f7d63.tokens.sts.global.api.aws"
ROLE_ARN = "arn:aws:iam::210987654321:role/workloads/CosmosExportTask"
TENANT = "c0ffee00-1234-4abc-9def-0123456789ab"
CLIENT_ID = "a11ce000-5678-4abc-8def-0123456789ab"
SP_OBJECT_ID = "b0b00000-9abc-4def-8123-0123456789ab"


class Chain:
    """STS + Entra + Cosmos doubles configured the way the Pulumi program configures the real ones."""

    def __init__(self, sts, entra, cosmos, urls, session, ca_bundle, bucket):
        self.sts, self.entra, self.cosmos, self.urls, self.session, self.ca_bundle, self.bucket = (
            sts,
            entra,
            cosmos,
            urls,
            session,
            ca_bundle,
            bucket,
        )

    def settings(self, **overrides) -> WorkerSettings:
        values = dict(
            identity_mode="workload",
            aws_region="us-east-1",
            azure_tenant_id=TENANT,
            azure_client_id=CLIENT_ID,
            azure_authority_host=self.urls["entra"],
            sts_endpoint=self.urls["sts"],
            cosmos_endpoint=self.urls["cosmos"],
            cosmos_account="acct",
            cosmos_database="shop",
            cosmos_containers="orders",
            cosmos_tls_verify=self.ca_bundle,
            bucket=self.bucket,
            s3_endpoint=self.urls["s3"],
        )
        values.update(overrides)
        return WorkerSettings(**values)

    def env(self) -> dict[str, str]:
        """The same configuration as environment variables, as an ECS task would see it."""
        s = self.settings()
        creds = self.session.get_credentials()
        return {
            contract.Env.IDENTITY_MODE: "workload",
            contract.Env.AWS_REGION: "us-east-1",
            contract.Env.AZURE_TENANT_ID: TENANT,
            contract.Env.AZURE_CLIENT_ID: CLIENT_ID,
            contract.Env.AZURE_AUTHORITY_HOST: s.azure_authority_host,
            contract.Env.STS_ENDPOINT: s.sts_endpoint,
            contract.Env.COSMOS_ENDPOINT: s.cosmos_endpoint,
            contract.Env.COSMOS_ACCOUNT: "acct",
            contract.Env.COSMOS_DATABASE: "shop",
            contract.Env.COSMOS_CONTAINERS: "orders",
            contract.Env.COSMOS_TLS_VERIFY: self.ca_bundle,
            contract.Env.BUCKET: self.bucket,
            contract.Env.S3_ENDPOINT: s.s3_endpoint,
            "AWS_ACCESS_KEY_ID": creds.access_key,
            "AWS_SECRET_ACCESS_KEY": creds.secret_key,
            "AWS_SESSION_TOKEN": creds.token,
        }
