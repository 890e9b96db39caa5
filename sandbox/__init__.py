"""Local emulation of the whole chain of trust: doubles, services, demo."""
