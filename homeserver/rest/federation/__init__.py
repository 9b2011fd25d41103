"""The server-server API surfaces: key server, notary, version, and the
request authenticator every inbound federation endpoint uses.

Each module exposes ``register_...(resource, ...)`` taking its dependencies
explicitly; ``workers/roles.py`` mounts them on the ``federation_inbound``
role.
"""
