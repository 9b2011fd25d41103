"""The process roles a config may assign to an instance.

Which URLs each role serves is the route table in ``workers/routes.py``; this
module only names the roles so the config can be validated without importing
the worker code.
"""

CLIENT_READER = "client_reader"
CLIENT_WRITER = "client_writer"
SYNC = "sync"
FEDERATION_INBOUND = "federation_inbound"
FEDERATION_SENDER = "federation_sender"
MEDIA = "media"
PUSHER = "pusher"
BACKGROUND = "background"
ADMIN = "admin"

ROLES = frozenset(
    {
        CLIENT_READER,
        CLIENT_WRITER,
        SYNC,
        FEDERATION_INBOUND,
        FEDERATION_SENDER,
        MEDIA,
        PUSHER,
        BACKGROUND,
        ADMIN,
    }
)

#: The role whose instances own stream shards and persist what they carry.
SHARD_OWNER_ROLE = CLIENT_WRITER

#: Roles of which exactly one instance is active at a time (others wait on a
#: PostgreSQL advisory lock, taking over when the active one dies).
SINGLETON_ROLES = frozenset({BACKGROUND})
