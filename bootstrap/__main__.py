"""Bootstrap: the keyless deployer identities of one environment (run once, by an admin)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pulumi
from deployer import BootstrapConfig
from identities import build

_cfg = pulumi.Config()
config = BootstrapConfig(
    github_org=_cfg.require("githubOrg"),
    github_repo=_cfg.require("githubRepo"),
    environment=_cfg.require("environment"),
    azure_resource_group_id=_cfg.require("azureResourceGroupId"),
    oidc_provider_arn=_cfg.get("oidcProviderArn") or "",
)
for key, value in build(config).items():
    pulumi.export(key, value)
