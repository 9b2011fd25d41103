"""Path prefixes shared by the client API servlets."""

V3 = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"
#: Versioned paths served under v3 and the legacy r0 prefix alike.
V3_AND_R0 = ("/_matrix/client/v3", "/_matrix/client/r0")


def paths(suffix: str, prefixes: tuple[str, ...] = V3_AND_R0) -> list[str]:
    """``suffix`` under each prefix."""
    return [p + suffix for p in prefixes]
