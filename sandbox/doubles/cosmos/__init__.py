"""Parts of the Cosmos DB gateway double (see sandbox/doubles/cosmos_gateway.py)."""
