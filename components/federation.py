"""The account's outbound web identity federation (a per-account singleton)."""

from __future__ import annotations

from typing import Literal

import pulumi
import pulumi_aws as aws


class OutboundFederation(pulumi.ComponentResource):
    issuer: pulumi.Output[str]

    def __init__(self, name: str, mode: Literal["create", "adopt"], opts: pulumi.ResourceOptions | None = None):
        super().__init__("cosmos-s3-export:aws:OutboundFederation", name, None, opts)
        if mode == "create":
            # Only one stack per account may own it; every other stack adopts.
            fed = aws.iam.OutboundWebIdentityFederation(f"{name}-federation", opts=pulumi.ResourceOptions(parent=self))
            self.issuer = fed.issuer_identifier
        elif mode == "adopt":
            # Fails at preview with a clear AWS error if federation was never enabled.
            self.issuer = aws.iam.get_outbound_web_identity_federation_output(
                opts=pulumi.InvokeOutputOptions(parent=self)
            ).issuer_identifier
        else:
            raise ValueError(f"federation mode must be 'create' or 'adopt', not {mode!r}")
        self.register_outputs({"issuer": self.issuer})
