"""`cosmos-export doctor`: walk the chain of trust one link at a time.

Each step prints `ok   <step>: <detail>` or `FAIL <step>: <reason>`; the walk
stops at the first broken link, whose reason is the last line printed. A `warn`
line is a finding that breaks no link (the account still accepting account
keys) and the walk goes on. Tokens are never printed: only the AWS token's
decoded claims.
"""

from __future__ import annotations

import base64
import email.utils
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
import requests
from azure.core.exceptions import ClientAuthenticationError
from azure.cosmos import exceptions as cosmos_exceptions
from botocore.exceptions import BotoCoreError, ClientError

from cosmos_export import contract, identity, source
from cosmos_export.settings import WorkerSettings
from cosmos_export.storage import Bucket
from cosmos_export.storage import client as s3_client


@dataclass
class StepResult:
    step: str
    ok: bool
    detail: str
    #: A finding that breaks no link of the chain (printed `warn`, the walk goes on).
    warning: bool = False


class _Broken(Exception):
    pass


class _Warn(Exception):
    pass


class Doctor:
    def __init__(
        self,
        settings: WorkerSettings,
        *,
        session: boto3.Session | None = None,
        credential: Any = None,
        s3: Any = None,
        echo: Callable[[str], None] = print,
    ):
        self.settings, self.echo = settings, echo
        self.session = session or identity.aws_session(settings)
        self._credential, self._s3 = credential, s3
        self.results: list[StepResult] = []
        #: Passed checks that still need the operator's attention (printed after the steps).
        self.warnings: list[str] = []

    def run(self) -> bool:
        steps: list[tuple[str, Callable[[], str]]] = [
            ("aws identity", self.aws_identity),
        ]
        if self.settings.identity_mode == "workload":
            steps += [("aws web identity token", self.aws_token)]
        steps += [
            ("entra token exchange", self.entra_exchange),
            ("cosmos account", self.cosmos_account),
            ("cosmos key auth", self.cosmos_key_auth),
            *[(f"cosmos container {name}", self._container_step(name)) for name in self.settings.cosmos_containers],
            ("change feed mode", self.change_feed_mode),
            ("s3 write probe", self.s3_probe),
        ]
        for name, step in steps:
            try:
                detail = step()
            except _Broken as e:
                self._record(name, False, str(e))
                return False
            except _Warn as e:
                self._record(name, True, str(e), warning=True)
                continue
            except Exception as e:  # an unexpected failure is still reported as this step's reason
                self._record(name, False, f"{type(e).__name__}: {e}")
                return False
            self._record(name, True, detail)
        return True

    def _record(self, step: str, ok: bool, detail: str, warning: bool = False) -> None:
        self.results.append(StepResult(step, ok, detail, warning))
        self.echo(f"{'warn' if warning else 'ok  ' if ok else 'FAIL'} {step}: {detail}")

    # --- steps ---------------------------------------------------------------

    def aws_identity(self) -> str:
        sts = identity.sts_client(self.session, self.settings)
        try:
            who = sts.get_caller_identity()
        except (ClientError, BotoCoreError) as e:
            raise _Broken(
                f"no usable AWS credentials ({e}); in ECS check the task role is set on the task "
                "definition, on a laptop log in to the AWS profile"
            ) from None
        return f"{who['Arn']} (account {who['Account']})"

    def aws_token(self) -> str:
        sts = identity.sts_client(self.session, self.settings)
        try:
            token = identity.web_identity_token(sts, self.settings)
        except identity.IdentityError as e:
            raise _Broken(str(e)) from None
        claims = identity.token_claims(token)
        problems = []
        if claims["aud"] not in (contract.TOKEN_EXCHANGE_AUDIENCE, [contract.TOKEN_EXCHANGE_AUDIENCE]):
            problems.append(f"aud is {claims['aud']!r}, expected {contract.TOKEN_EXCHANGE_AUDIENCE!r}")
        if claims["alg"] != contract.SIGNING_ALGORITHM:
            problems.append(f"signed with {claims['alg']}, Entra needs {contract.SIGNING_ALGORITHM}")
        if not self.settings.sts_endpoint and not re.match(contract.AWS_ISSUER_PATTERN, str(claims["iss"])):
            problems.append(f"iss {claims['iss']!r} is not an AWS account issuer")
        shown = (
            f"iss={claims['iss']} sub={claims['sub']} aud={claims['aud']} alg={claims['alg']} "
            f"expires in {int(claims['exp'] - time.time())}s"
        )
        if problems:
            raise _Broken(f"{'; '.join(problems)} ({shown})")
        return shown + " (the Entra federated credential must list exactly this iss and sub)"

    def credential(self) -> Any:
        if self._credential is None:
            self._credential = identity.azure_credential(self.settings, self.session)
        return self._credential

    def entra_exchange(self) -> str:
        host = urlsplit(self.settings.cosmos_endpoint).hostname or ""
        # The scope the Cosmos SDK asks for: scheme://host/.default, without the port.
        scope = contract.cosmos_scope(host)
        try:
            token = self.credential().get_token(scope)
        except (identity.IdentityError, ClientAuthenticationError) as e:
            raise _Broken(identity.explain_auth_error(e)) from None
        return f"access token for {scope}, expires in {int(token.expires_on - time.time())}s"

    def cosmos_account(self) -> str:
        try:
            self._client = source.cosmos_client(self.settings, self.credential())
            level = source.check_consistency(self._client, self.settings.min_consistency)
        except cosmos_exceptions.CosmosHttpResponseError as e:
            raise _Broken(source.explain_cosmos_error(e, self.settings)) from None
        except source.SourceError as e:
            raise _Broken(str(e)) from None
        return f"{self.settings.cosmos_endpoint} consistency {level} (minimum {self.settings.min_consistency})"

    def cosmos_key_auth(self) -> str:
        """Whether the account still accepts account keys, seen from here without any key.

        An account read signed with a made-up master key: an account with key auth
        disabled refuses it with "Local Authorization is disabled"; one that still
        accepts keys refuses the signature itself (401, wrong key). No key is read,
        used or printed; the worker has no management access to ask Azure directly.
        """
        fake = base64.b64encode(os.urandom(32)).decode()
        headers = {
            "x-ms-date": email.utils.formatdate(usegmt=True).lower(),
            "x-ms-version": "2020-07-15",
            "authorization": requests.utils.quote(f"type=master&ver=1.0&sig={fake}", safe=""),
        }
        try:
            response = requests.get(
                self.settings.cosmos_endpoint, headers=headers, timeout=30, verify=self.settings.cosmos_tls_verify
            )
        except requests.RequestException as e:
            raise _Warn(f"could not tell ({type(e).__name__}: {e})") from None
        body = response.text.lower()
        if response.status_code == 401 and "local authorization is disabled" in body:
            return "account keys refused: the account accepts Entra tokens only (disableLocalAuth true)"
        if response.status_code == 401:  # a 403 (firewall, ...) says nothing about keys
            account = self.settings.account_name
            raise _Warn(
                f"the account still accepts account keys (disableLocalAuth false; HTTP "
                f"{response.status_code} to a made-up key, not 'Local Authorization is disabled'): this "
                "worker uses none, but anyone holding a key reads every container. Disable key auth: "
                f"az cosmosdb update --name {account} --resource-group <group> --disable-local-auth true"
            )
        if response.ok:
            raise _Warn(
                f"the endpoint answered HTTP {response.status_code} to a request signed with a made-up key: "
                "it checks no authorization at all (an emulator?)"
            )
        raise _Warn(f"could not tell (HTTP {response.status_code})")

    def _container_step(self, name: str) -> Callable[[], str]:
        def step() -> str:
            try:
                container = source.container_client(self._client, self.settings.cosmos_database, name)
                ranges = source.feed_ranges(container)
                reader = source.FeedRangeReader(container, ranges[0], self.settings.model_copy(update={"page_size": 1}))
                page = next(iter(reader.change_feed(start_time="Beginning", mode="LatestVersion")), None)
            except cosmos_exceptions.CosmosHttpResponseError as e:
                raise _Broken(source.explain_cosmos_error(e, self.settings)) from None
            except source.SourceError as e:
                raise _Broken(str(e)) from None
            got = f"{len(page.docs)} item(s)" if page else "no items yet"
            return f"metadata read, {len(ranges)} feed range(s), change feed page read ({got})"

        return step

    def change_feed_mode(self) -> str:
        """AllVersionsAndDeletes: one read from now on one feed range, which Cosmos refuses (400) on an account
        without continuous backup and the all-versions opt-in. LatestVersion: passes with a warning."""
        mode = self.settings.change_feed_mode
        if mode == "LatestVersion":
            self.warnings.append(
                f"{contract.Env.CHANGE_FEED_MODE}=LatestVersion: deletes are not captured between snapshots; a "
                f"state rebuilt from incrementals (materialize, restore) keeps documents deleted since the last "
                f"snapshot. Schedule periodic snapshots, or use AllVersionsAndDeletes (needs continuous backup)"
            )
            return "LatestVersion (no deletes between snapshots; see the warning below)"
        name = self.settings.cosmos_containers[0]
        try:
            container = source.container_client(self._client, self.settings.cosmos_database, name)
            reader = source.FeedRangeReader(
                container, source.feed_ranges(container)[0], self.settings.model_copy(update={"page_size": 1})
            )
            list(reader.change_feed(start_time="Now", mode="AllVersionsAndDeletes"))
        except cosmos_exceptions.CosmosHttpResponseError as e:
            if e.status_code == 400:
                first = (e.message or "").splitlines()[0] if e.message else ""
                raise _Broken(
                    f"{contract.Env.CHANGE_FEED_MODE}=AllVersionsAndDeletes but the account refuses an "
                    f"all-versions change feed read on {name} (400: {first}): it needs continuous backup (7 or "
                    f"30 days) and the all-versions-and-deletes change feed enabled on the account. Enable "
                    f"them, or set {contract.Env.CHANGE_FEED_MODE}=LatestVersion (deletes are then not "
                    f"captured between snapshots)"
                ) from None
            raise _Broken(source.explain_cosmos_error(e, self.settings)) from None
        except source.SourceError as e:
            raise _Broken(str(e)) from None
        return f"AllVersionsAndDeletes: the account serves an all-versions change feed read ({name})"

    def s3_probe(self) -> str:
        bucket = Bucket(self._s3 or s3_client(self.settings, self.session), self.settings.bucket)
        account = self.settings.account_name
        key = f"{self.settings.prefix}/{account}/{self.settings.cosmos_database}/_doctor/probe-{uuid.uuid4().hex}.txt"
        try:
            bucket.put(key, b"cosmos-export doctor probe\n", kms_key_arn=self.settings.kms_key_arn)
        except (ClientError, BotoCoreError) as e:
            raise _Broken(
                f"cannot write s3://{self.settings.bucket}/{key}: {e}. The task role needs s3:PutObject "
                f"on the export prefix (and kms:GenerateDataKey on the bucket key via S3)"
            ) from None
        try:
            bucket.delete(key)
            tail = "written and deleted"
        except ClientError:
            tail = "written (no s3:DeleteObject: the probe object stays; the bucket lifecycle expires it)"
        return f"s3://{self.settings.bucket}/{key} {tail}"
