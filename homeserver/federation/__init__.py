"""Federation: keys, discovery, request authentication, ACLs and the outbound sender.

Pure logic (``request_auth``, ``acl``, ``backoff``) takes plain data and
returns plain data. ``keyring``, ``discovery`` and ``sender`` do I/O through
interfaces they are given (a store, a DNS resolver, an HTTP client, a
clock); ``homeserver.http.federation_client`` is the concrete HTTP client.
"""
