"""`get_credential`: the account key the harness gives the double (ACCOUNT_KEY)."""

import os


def get_credential(is_async: bool = False, **kwargs):
    return os.environ["ACCOUNT_KEY"]
