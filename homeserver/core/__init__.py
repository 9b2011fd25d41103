"""The pure Matrix core: plain data in, plain data out; no I/O, no reactor.

- :mod:`.ids`: identifier grammar (user / room / event IDs, aliases, server
  names, device IDs).
- :mod:`.canonical_json`: canonical JSON encoding and strict decoding.
- :mod:`.room_versions`: the registry of room versions 1-12 and their flags.
- :mod:`.events`: the immutable :class:`~.events.Event` built from PDUs.
- :mod:`.redaction`: the redaction algorithm of each room version.
- :mod:`.signing`: signing keys, JSON signatures, content / reference hashes,
  event IDs and v12 room IDs.
- :mod:`.builder`: building, hashing and signing new local events.
- :mod:`.power_levels`: user, send, named and notification levels.
- :mod:`.auth`: the authorisation rules, auth events selection and the
  checks made before auth.
- :mod:`.errors`: the exceptions above raise.
"""
