"""`is_live`: the SDK tests run live (against the double), never from recordings."""


def is_live() -> bool:
    return True
