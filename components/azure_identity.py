"""The Entra workload identity: app + service principal + federated credentials. No secret of any kind."""

from __future__ import annotations

import pulumi
import pulumi_azuread as azuread

from cosmos_export import contract

from .config import IdentityConfig


class WorkloadIdentity(pulumi.ComponentResource):
    client_id: pulumi.Output[str]
    object_id: pulumi.Output[str]
    tenant_id: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: IdentityConfig,
        *,
        issuer: pulumi.Input[str],
        task_role_arn: pulumi.Input[str],
        federation_enabled: bool = True,
        description: str = "ECS task role of the Cosmos DB export worker",
        opts: pulumi.ResourceOptions | None = None,
    ):
        """`federation_enabled` is the incident-response switch: False removes every federated credential.
        `description` says what the task role's credential is for (shown in Entra); the restore identity
        is this component again, with its own app name and role."""
        super().__init__("cosmos-s3-export:azure:WorkloadIdentity", name, None, opts)
        if 1 + len(args.additional_federated_credentials) > contract.MAX_FEDERATED_CREDENTIALS_PER_APP:
            raise ValueError(
                f"{1 + len(args.additional_federated_credentials)} federated credentials exceed Entra's limit of "
                f"{contract.MAX_FEDERATED_CREDENTIALS_PER_APP} per application"
            )
        child = pulumi.ResourceOptions(parent=self)
        deployer = azuread.get_client_config_output(opts=pulumi.InvokeOutputOptions(parent=self))
        # A CI deployer holding only Graph's Application.ReadWrite.OwnedBy manages (and revokes) only
        # applications it owns. Fixed owners (entraAppOwners: the CI deployer and the people who deploy
        # from laptops) keep the owner list the same whoever runs `pulumi up`.
        if args.entra_app_owners:
            owners: pulumi.Input[list[str]] = sorted(args.entra_app_owners, key=str.lower)
        else:
            pulumi.log.warn(
                "entraAppOwners is not set: the Entra app is owned by whoever deploys, so the owner "
                "changes between laptop and CI deploys; set it to the CI deployer's object id "
                "(bootstrap output AZURE_DEPLOYER_OBJECT_ID) and the users who deploy",
                resource=self,
            )
            owners = deployer.object_id.apply(lambda o: [o])
        app = azuread.Application(
            f"{name}-app",
            display_name=args.entra_app_display_name,
            sign_in_audience="AzureADMyOrg",
            owners=owners,
            opts=child,
        )
        sp = azuread.ServicePrincipal(f"{name}-sp", client_id=app.client_id, owners=owners, opts=child)
        if federation_enabled:
            azuread.ApplicationFederatedIdentityCredential(
                f"{name}-fic-ecs-task",
                application_id=app.id,  # the resource id, not client_id
                display_name="ecs-task",
                description=description,
                issuer=issuer,
                subject=task_role_arn,
                audiences=[contract.TOKEN_EXCHANGE_AUDIENCE],
                opts=child,
            )
            for extra in args.additional_federated_credentials:
                azuread.ApplicationFederatedIdentityCredential(
                    f"{name}-fic-{extra.name}",
                    application_id=app.id,
                    display_name=extra.name,
                    issuer=extra.issuer or issuer,
                    subject=extra.subject,
                    audiences=[contract.TOKEN_EXCHANGE_AUDIENCE],
                    opts=child,
                )
        self.client_id = app.client_id
        self.object_id = sp.object_id
        self.tenant_id = deployer.tenant_id
        self.register_outputs({"clientId": self.client_id, "objectId": self.object_id, "tenantId": self.tenant_id})
