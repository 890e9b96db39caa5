"""Export benchmark: the worker vs the SDK floor vs a naive export (see docs/performance.md)."""
