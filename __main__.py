"""cosmos-s3-export: the chain of trust from an ECS task to Cosmos DB and S3, no static secret.

Kept thin on purpose: config is read and validated once, components are in
`components/`. Deployment and every config key: README.md.
"""

from components.program import main

main()
