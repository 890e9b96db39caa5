"""cosmos-export: exports Azure Cosmos DB containers to S3 from ECS with no static secrets."""

__version__ = "0.1.0"
