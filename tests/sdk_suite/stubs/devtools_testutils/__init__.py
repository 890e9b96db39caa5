"""Stand-in for azure-sdk-for-python's `devtools_testutils` (not on PyPI), as much as the Cosmos tests import.

The SDK tests take their credential from `get_credential()` when the account is not the emulator: here
that is the double's account key, the same control credential the emulator path would use.
"""
