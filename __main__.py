"""cosmos-s3-export: the chain of trust from an ECS task to Cosmos DB and S3, no static secret.

Kept thin on purpose: config is read and validated once, components are in
`components/`. See docs/deploy.md.
"""

from components.program import main

main()
