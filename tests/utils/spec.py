"""Validate request and response bodies against the spec's OpenAPI files.

Loads ``data/api/client-server/<file>.yaml`` from the spec checkout, inlines
every ``$ref`` (relative files and ``#/components/...``), and checks bodies
with jsonschema (Draft 2020-12, which OpenAPI 3.1 schemas follow).
"""

from __future__ import annotations

import copy
import re
import functools
import os
from typing import Any, Optional

import jsonschema
import yaml

SPEC_ROOT = os.environ.get("ESTUARY_MATRIX_SPEC", "/work/shared/matrix-spec")
API_DIR = os.path.join(SPEC_ROOT, "data", "api", "client-server")


@functools.lru_cache(maxsize=None)
def _load(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _resolve(node: Any, base_file: str, root: Any, depth: int = 0) -> Any:
    if depth > 60:
        return {}
    if isinstance(node, dict):
        if "$ref" in node:
            ref = node["$ref"]
            rest = {k: v for k, v in node.items() if k != "$ref"}
            file_part, _, pointer = ref.partition("#")
            if file_part:
                target_file = os.path.normpath(os.path.join(os.path.dirname(base_file), file_part))
                target_root = _load(target_file)
            else:
                target_file, target_root = base_file, root
            target = target_root
            for part in [p for p in pointer.split("/") if p]:
                target = target[part]
            resolved = _resolve(copy.deepcopy(target), target_file, target_root, depth + 1)
            if rest and isinstance(resolved, dict):
                resolved = {**resolved, **_resolve(rest, base_file, root, depth + 1)}
            return resolved
        return {k: _resolve(v, base_file, root, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, base_file, root, depth + 1) for v in node]
    return node


@functools.lru_cache(maxsize=None)
def _operation(api_file: str, path: str, method: str) -> dict:
    file_path = os.path.join(API_DIR, api_file)
    doc = _load(file_path)
    return _resolve(doc["paths"][path][method.lower()], file_path, doc)


def _strip_openapi(schema: Any) -> Any:
    """Drop OpenAPI-only keywords jsonschema does not know (harmless, but noisy).

    ``oneOf`` is read as ``anyOf``: the spec uses it for alternatives that
    may overlap (``GET /state/{type}/{key}`` answers "a state event, or its
    content", and a state event is also an object).
    """
    if isinstance(schema, dict):
        return {("anyOf" if k == "oneOf" else k): _strip_openapi(v) for k, v in schema.items() if k not in ("example", "examples", "x-addedInMatrixVersion", "x-changedInMatrixVersion")}
    if isinstance(schema, list):
        return [_strip_openapi(v) for v in schema]
    return schema


def response_schema(api_file: str, path: str, method: str, status: int) -> Optional[dict]:
    """The JSON schema of a documented response, or None if it has no body schema."""
    responses = _operation(api_file, path, method)["responses"]
    entry = responses.get(str(status))
    if entry is None:
        raise AssertionError(f"{method} {path} does not document status {status}")
    content = (entry.get("content") or {}).get("application/json") or {}
    schema = content.get("schema")
    return _strip_openapi(schema) if schema is not None else None


def request_schema(api_file: str, path: str, method: str) -> Optional[dict]:
    """The JSON schema of the request body, or None."""
    body = _operation(api_file, path, method).get("requestBody")
    if not body:
        return None
    return _strip_openapi(body["content"]["application/json"]["schema"])


def validate_response(api_file: str, path: str, method: str, status: int, body: Any) -> None:
    """Raise AssertionError unless ``body`` matches the documented response."""
    schema = response_schema(api_file, path, method, status)
    if schema is None:
        return
    try:
        jsonschema.Draft202012Validator(schema).validate(body)
    except jsonschema.ValidationError as e:
        raise AssertionError(f"{method} {path} {status} body does not match the spec: {e.message} in {body!r}")


def validate_request(api_file: str, path: str, method: str, body: Any) -> None:
    """Raise AssertionError unless ``body`` matches the documented request."""
    schema = request_schema(api_file, path, method)
    if schema is None:
        return
    try:
        jsonschema.Draft202012Validator(schema).validate(body)
    except jsonschema.ValidationError as e:
        raise AssertionError(f"{method} {path} request does not match the spec: {e.message}")


def validate_error(body: Any) -> None:
    """Raise AssertionError unless ``body`` is a standard error (``definitions/errors/error.yaml``).

    For refusals the spec requires but an endpoint's file does not list
    (``M_WEAK_PASSWORD`` on ``/account/password``...).
    """
    path = os.path.join(API_DIR, "definitions", "errors", "error.yaml")
    schema = _strip_openapi(_resolve(_load(path), path, _load(path)))
    try:
        jsonschema.Draft202012Validator(schema).validate(body)
    except jsonschema.ValidationError as e:
        raise AssertionError(f"error body does not match the spec: {e.message} in {body!r}")


@functools.lru_cache(maxsize=None)
def _route_table() -> list[tuple[str, "re.Pattern[str]", str, str]]:
    """``(METHOD, full-path regex, file, spec path)`` for every client-server operation."""
    table = []
    for file_name in sorted(os.listdir(API_DIR)):
        if not file_name.endswith(".yaml"):
            continue
        doc = _load(os.path.join(API_DIR, file_name))
        if not isinstance(doc, dict) or "paths" not in doc:
            continue
        try:
            base = doc["servers"][0]["variables"]["basePath"]["default"]
        except (KeyError, IndexError, TypeError):
            continue
        for spec_path, ops in doc["paths"].items():
            # The spec disambiguates duplicate paths with trailing spaces
            # ("/rooms/{roomId}/invite "): match on the path without them.
            pattern = re.escape(base + spec_path.rstrip())
            pattern = re.sub(r"\\\{\w+\\\}", "[^/]+", pattern)
            for method in ops:
                if method in ("get", "put", "post", "delete"):
                    table.append((method.upper(), re.compile("^" + pattern + "$"), file_name, spec_path))
    return table


def find_operation(method: str, path: str) -> Optional[tuple[str, str]]:
    """The ``(file, spec path)`` documenting ``METHOD path``, or None.

    The legacy ``/r0`` prefix is matched as ``/v3``.
    """
    path = path.split("?", 1)[0]
    if path.startswith("/_matrix/client/r0/"):
        path = "/_matrix/client/v3/" + path[len("/_matrix/client/r0/"):]
    from urllib.parse import unquote

    path = unquote(path)
    for m, pattern, file_name, spec_path in _route_table():
        if m == method.upper() and pattern.match(path):
            return file_name, spec_path
    return None


def find_operations(method: str, path: str) -> list[tuple[str, str]]:
    """Every ``(file, spec path)`` documenting ``METHOD path``."""
    path = path.split("?", 1)[0]
    if path.startswith("/_matrix/client/r0/"):
        path = "/_matrix/client/v3/" + path[len("/_matrix/client/r0/"):]
    from urllib.parse import unquote

    path = unquote(path)
    return [(f, p) for m, pattern, f, p in _route_table() if m == method.upper() and pattern.match(path)]


def check_exchange(method: str, path: str, status: int, body: Any, request_body: Any = None) -> None:
    """Validate a response of a client-server endpoint against the spec.

    When the request succeeded and its body is given as a JSON object, the
    request is checked against the documented request schema too: what the
    server accepts must be what the spec describes.

    A documented status is checked against its schema; an undocumented
    error status against the standard error schema; an undocumented success
    status is itself a failure. Paths the spec does not describe (Synapse
    admin API, OPTIONS) are not checked.
    """
    if method.upper() not in ("GET", "PUT", "POST", "DELETE"):
        return
    op = find_operation(method, path)
    if op is None:
        return
    file_name, spec_path = op
    responses = _operation(file_name, spec_path, method)["responses"]
    if status == 401 and isinstance(body, dict) and body.get("errcode") in ("M_MISSING_TOKEN", "M_UNKNOWN_TOKEN"):
        # UIA endpoints document 401 as the auth-flow body only, but an
        # access-token failure is the standard error (spec: "Using access
        # tokens"), as on every authenticated endpoint.
        validate_error(body)
    elif str(status) in responses:
        validate_response(file_name, spec_path, method, status, body)
    elif status >= 400:
        validate_error(body)
    else:
        raise AssertionError(f"{method} {spec_path} ({file_name}) does not document status {status}")
    if 200 <= status < 300 and isinstance(request_body, dict):
        # Several files may document one path (POST /rooms/{roomId}/invite:
        # by user ID in inviting.yaml, by third-party ID in
        # third_party_membership.yaml): the body must match one of them.
        errors = []
        for other_file, other_path in find_operations(method, path):
            try:
                validate_request(other_file, other_path, method, request_body)
                return
            except AssertionError as e:
                errors.append(e)
        if errors:
            raise errors[0]
