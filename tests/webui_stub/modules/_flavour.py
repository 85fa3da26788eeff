"""Which host the stand-in imitates: set by tests/webui_stub/install.py before anything else loads."""
FLAVOUR = "a1111"


def is_forge() -> bool:
    return FLAVOUR == "forge2"
