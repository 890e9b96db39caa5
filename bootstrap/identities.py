"""The deployer identities of one environment: a deploy and a read-only preview identity per cloud."""

from __future__ import annotations

import json

import deployer as d
import pulumi
import pulumi_aws as aws
import pulumi_azure_native as azure_native
import pulumi_azuread as azuread

from components import naming


def build(config: d.BootstrapConfig) -> dict[str, pulumi.Output]:
    env = config.environment
    name = f"gh-{env}"
    caller = aws.get_caller_identity_output()
    region = aws.get_region_output()

    if config.oidc_provider_arn:
        provider_arn: pulumi.Input[str] = config.oidc_provider_arn  # adopted: one provider per account and URL
    else:
        provider_arn = aws.iam.OpenIdConnectProvider(
            f"{name}-oidc-provider",
            url=d.GITHUB_ISSUER,
            client_id_lists=[d.AWS_AUDIENCE],
        ).arn

    scope = pulumi.Output.all(caller.account_id, region.region).apply(lambda v: d.scope_of(v[0], v[1], env))

    # The cap on every role the main program creates (components/naming.py names it; the deployer may
    # create and change roles only with it attached, and never edit or detach it).
    boundary = aws.iam.Policy(
        f"{name}-boundary",
        name=naming.boundary_name(env),
        description=f"Permissions boundary of every cosmos-s3-export role of stack {env}",
        policy=scope.apply(lambda s: json.dumps(d.boundary_policy(s))),
    )

    def role(kind: str, preview: bool, policy) -> aws.iam.Role:
        subject = config.subject(preview=preview)
        r = aws.iam.Role(
            f"{name}-{kind}",
            # Fixed names: the program's bucket policy names the CI deployer (forceDestroy stacks only).
            name=naming.deployer_role_name(env, kind),
            description=f"GitHub Actions {kind} for {config.github_org}/{config.github_repo} environment "
            f"{subject.rsplit(':', 1)[1]}",
            max_session_duration=3600,
            assume_role_policy=pulumi.Output.from_input(provider_arn).apply(
                lambda arn: json.dumps(d.github_trust_policy(arn, subject))
            ),
        )
        aws.iam.RolePolicy(f"{name}-{kind}-policy", role=r.id, policy=policy)
        return r

    deploy_role = role(
        "deploy", False, pulumi.Output.all(scope, boundary.arn).apply(lambda v: json.dumps(d.deploy_policy(v[0])))
    )
    preview_role = role("preview", True, scope.apply(lambda s: json.dumps(d.preview_policy(s))))

    # --- Azure: one deployer application, a federated credential per GitHub environment ---
    app = azuread.Application(
        f"{name}-deployer", display_name=f"{config.github_repo}-deployer-{env}", sign_in_audience="AzureADMyOrg"
    )
    sp = azuread.ServicePrincipal(f"{name}-deployer-sp", client_id=app.client_id)
    preview_app = azuread.Application(
        f"{name}-previewer", display_name=f"{config.github_repo}-previewer-{env}", sign_in_audience="AzureADMyOrg"
    )
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

    azure = d.azure_scope_of(config)
    definitions = {
        "account": (
            azure.account_id,
            d.AZURE_ACCOUNT_ACTIONS,
            "Manage the export's Cosmos SQL RBAC and request-log setting; never keys, never deletes of logs",
        ),
        "workspace": (
            azure.workspace_scope,
            azure.workspace_actions,
            "Send the Cosmos request logs to the workspace (create it where the stack does); never delete",
        ),
    }
    for part, (scope_id, actions, description) in definitions.items():
        definition = azure_native.authorization.RoleDefinition(
            f"{name}-deployer-{part}-role",
            role_name=f"{config.github_repo} deployer {part} ({env})",
            description=description,
            scope=scope_id,
            assignable_scopes=[scope_id],
            permissions=[{"actions": actions, "not_actions": d.AZURE_DEPLOY_NOT_ACTIONS}],
        )
        azure_native.authorization.RoleAssignment(
            f"{name}-deployer-{part}-assignment",
            scope=scope_id,
            principal_id=sp.object_id,
            principal_type="ServicePrincipal",
            role_definition_id=definition.id,
        )
        # Previews read the same two scopes (Reader: no data, no keys: those are actions, not reads).
        azure_native.authorization.RoleAssignment(
            f"{name}-previewer-{part}-assignment",
            scope=scope_id,
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
        # The main program's entraAppOwners must list this (with the owners who deploy from laptops).
        "AZURE_DEPLOYER_OBJECT_ID": sp.object_id,
        "permissionsBoundaryArn": boundary.arn,
        "githubSubjects": pulumi.Output.from_input([config.subject(), config.subject(preview=True)]),
    }
