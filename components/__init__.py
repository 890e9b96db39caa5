"""Pulumi components of cosmos-s3-export: one ComponentResource per concern."""
