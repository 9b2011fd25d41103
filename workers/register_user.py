"""``estuary register-user``: create a user through shared-secret registration.

Speaks the Synapse-compatible ``/_synapse/admin/v1/register`` nonce flow
(GET a nonce, POST the user with an HMAC-SHA1 over nonce, user, password and
admin flag keyed by ``registration.registration_shared_secret``), so it works
against any running Estuary (or Synapse) the operator can reach.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json
import sys
import urllib.error
import urllib.request
from typing import Any, Optional


def registration_mac(secret: str, nonce: str, user: str, password: str, admin: bool) -> str:
    """The hex HMAC-SHA1 the shared-secret endpoint expects."""
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha1)
    for part in (nonce, user, password):
        mac.update(part.encode("utf-8"))
        mac.update(b"\x00")
    mac.update(b"admin" if admin else b"notadmin")
    return mac.hexdigest()


def _call(method: str, url: str, body: Optional[dict[str, Any]] = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"{}")
        except ValueError:
            return e.code, {}


def register_user(base_url: str, secret: str, user: str, password: str, admin: bool = False, displayname: Optional[str] = None) -> dict[str, Any]:
    """Register ``user``; returns the server's response or raises RuntimeError."""
    url = base_url.rstrip("/") + "/_synapse/admin/v1/register"
    code, body = _call("GET", url)
    if code != 200 or "nonce" not in body:
        raise RuntimeError(f"could not get a registration nonce ({code}): {body.get('error', body)}")
    payload: dict[str, Any] = {
        "nonce": body["nonce"],
        "username": user,
        "password": password,
        "admin": admin,
        "mac": registration_mac(secret, body["nonce"], user, password, admin),
    }
    if displayname:
        payload["displayname"] = displayname
    code, body = _call("POST", url, payload)
    if code != 200:
        raise RuntimeError(f"registration refused ({code}): {body.get('errcode', '')} {body.get('error', body)}")
    return body


def cmd_register_user(args: Any, config: Any) -> int:
    section = config.sections.get("registration")
    secret = args.shared_secret or (section.registration_shared_secret if section is not None else None)
    if not secret:
        print("estuary: registration.registration_shared_secret is not set in the config (or pass --shared-secret)", file=sys.stderr)
        return 1
    base = args.url or "http://{}:{}".format(*config.router.listen)
    password = args.password
    if password is None:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Confirm password: "):
            print("estuary: passwords do not match", file=sys.stderr)
            return 1
    try:
        result = register_user(base, secret, args.user, password, admin=args.admin, displayname=args.displayname)
    except (RuntimeError, OSError) as e:
        print(f"estuary: {e}", file=sys.stderr)
        return 1
    print(f"registered {result.get('user_id', args.user)}{' (admin)' if args.admin else ''}")
    return 0
