"""The deployer identities of one environment: a deploy and a read-only preview identity per cloud."""

from __future__ import annotations

import json

import deployer as d
import pulumi
import pulumi_aws as aws
import pulumi_azure_native as azure_native
import pulumi_azuread as azuread


def build(config: d.BootstrapConfig) -> dict[str, pulumi.Output]:
    env = config.environment
    name = f"gh-{env}"
    caller = aws.get_caller_identity_output()
    region = aws.get_region_output()

    if config.oidc_provider_arn:
        provider_arn: pulumi.Input[str] = config.oidc_provider_arn  # adopted: one provider per account and URL
    else:
        provider_arn = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc-provider", url=d.GITHUB_ISSUER, client_id_lists=[d.AWS_AUDIENCE],
        ).arn

    def role(kind: str, preview: bool, policy) -> aws.iam.Role:
        subject = config.subject(preview=preview)
        r = aws.iam.Role(
            f"{name}-{kind}",
            description=f"GitHub Actions {kind} for {config.github_org}/{config.github_repo} environment "
                        f"{subject.rsplit(':', 1)[1]}",
            max_session_duration=3600,
            assume_role_policy=pulumi.Output.from_input(provider_arn).apply(
                lambda arn: json.dumps(d.github_trust_policy(arn, subject))),
        )
        aws.iam.RolePolicy(f"{name}-{kind}-policy", role=r.id, policy=policy)
        return r

    deploy_role = role("deploy", False, pulumi.Output.all(caller.account_id, region.region).apply(
        lambda v: json.dumps(d.deploy_policy(v[0], v[1]))))
    preview_role = role("preview", True, caller.account_id.apply(lambda a: json.dumps(d.preview_policy(a))))

    # --- Azure: one deployer application, a federated credential per GitHub environment ---
    app = azuread.Application(f"{name}-deployer", display_name=f"{config.github_repo}-deployer-{env}",
                              sign_in_audience="AzureADMyOrg")
    sp = azuread.ServicePrincipal(f"{name}-deployer-sp", client_id=app.client_id)
    preview_app = azuread.Application(f"{name}-previewer", display_name=f"{config.github_repo}-previewer-{env}",
                                      sign_in_audience="AzureADMyOrg")
    preview_sp = azuread.ServicePrincipal(f"{name}-previewer-sp", client_id=preview_app.client_id)
    for application, kind, preview in ((app, "deploy", False), (preview_app, "preview", True)):
        azuread.ApplicationFederatedIdentityCredential(
            f"{name}-{kind}-fic",
            application_id=application.id,
            display_name=f"github-{env}{'-preview' if preview else ''}",
            issuer=d.GITHUB_ISSUER,
            subject=config.subject(preview=preview),
            audiences=[d.ENTRA_AUDIENCE],
        )

    role_definition = azure_native.authorization.RoleDefinition(
        f"{name}-deployer-role",
        role_name=f"{config.github_repo} deployer ({env})",
        description="Manage the export's Cosmos SQL RBAC and diagnostics; never read account keys",
        scope=config.azure_resource_group_id,
        assignable_scopes=[config.azure_resource_group_id],
        permissions=[{"actions": d.AZURE_DEPLOY_ACTIONS, "not_actions": d.AZURE_DEPLOY_NOT_ACTIONS}],
    )
    azure_native.authorization.RoleAssignment(
        f"{name}-deployer-assignment",
        scope=config.azure_resource_group_id,
        principal_id=sp.object_id,
        principal_type="ServicePrincipal",
        role_definition_id=role_definition.id,
    )
    azure_native.authorization.RoleAssignment(
        f"{name}-previewer-assignment",
        scope=config.azure_resource_group_id,
        principal_id=preview_sp.object_id,
        principal_type="ServicePrincipal",
        role_definition_id=f"/subscriptions/{config.subscription_id}/providers/Microsoft.Authorization/"
                           f"roleDefinitions/{d.AZURE_READER_ROLE}",
    )
    # Entra: the deployer manages only applications it owns (admin consent happens by this assignment).
    graph = azuread.get_service_principal_output(client_id=d.MS_GRAPH_APP_ID)
    azuread.AppRoleAssignment(
        f"{name}-deployer-graph",
        app_role_id=d.GRAPH_APPLICATION_READWRITE_OWNEDBY,
        principal_object_id=sp.object_id,
        resource_object_id=graph.object_id,
    )
    return {
        # Set these as GitHub environment *variables* (not secrets: they are identifiers).
        "AWS_DEPLOY_ROLE_ARN": deploy_role.arn,
        "AWS_PREVIEW_ROLE_ARN": preview_role.arn,
        "AZURE_CLIENT_ID": app.client_id,
        "AZURE_PREVIEW_CLIENT_ID": preview_app.client_id,
        "AZURE_TENANT_ID": azuread.get_client_config_output().tenant_id,
        "AZURE_SUBSCRIPTION_ID": pulumi.Output.from_input(config.subscription_id),
        "githubSubjects": pulumi.Output.from_input([config.subject(), config.subject(preview=True)]),
    }
