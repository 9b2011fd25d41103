"""The homeserver config: one YAML file for every process of a deployment.

The same file is read by every instance; ``--instance NAME`` says which of its
``instances`` a process is. :func:`load_config` parses and validates the whole
file into frozen section objects; :func:`read_config_file` adds the YAML
reading. Every problem is a :class:`ConfigError` naming the key path.
Documented key by key in ``sample_config.yaml``.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Mapping, Optional

import attrs

from homeserver.config._base import ConfigError, Reader, parse_listen
from homeserver.config.roles import ROLES, SHARD_OWNER_ROLE

__all__ = [
    "ConfigError",
    "HomeserverConfig",
    "InstanceConfig",
    "load_config",
    "read_config_file",
    "DEFAULT_STREAM_SHARDS",
    "parse_listen",
]

#: Streams whose shards are owned by one ``client_writer`` each, and the
#: shard count used when the config does not set one. The count is fixed at
#: install time (the database records it and refuses a change).
DEFAULT_STREAM_SHARDS: Mapping[str, int] = {
    "events": 16,
    "receipts": 4,
    "typing": 4,
    "presence": 4,
    "to_device": 8,
    "account_data": 4,
    "device_lists": 4,
    "push_rules": 4,
}

_SERVER_NAME = r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-]+)(:\d{1,5})?"


@attrs.frozen
class DatabaseConfig:
    """``database``: where PostgreSQL is. No DSN means the embedded one."""

    dsn: Optional[str]
    pool_size: int
    prepared_statements: bool = True


@attrs.frozen
class RedisConfig:
    """``redis``: where the bus is. No URL means the embedded one."""

    url: Optional[str]


@attrs.frozen
class InstanceConfig:
    """One process of the deployment."""

    name: str
    roles: frozenset[str]
    listen: tuple[str, int]
    replication_listen: tuple[str, int]
    metrics_listen: Optional[tuple[str, int]]
    #: stream -> the shards of that stream this instance owns (writers only).
    shards: Mapping[str, frozenset[int]]

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def http_base(self) -> str:
        host, port = self.listen
        return f"http://{_url_host(host)}:{port}"

    @property
    def replication_base(self) -> str:
        host, port = self.replication_listen
        return f"http://{_url_host(host)}:{port}"


@attrs.frozen
class RouterConfig:
    """``router``: the built-in reverse proxy for local runs."""

    listen: tuple[str, int]
    health_interval_seconds: float
    #: Networks of the reverse proxies (this router, nginx) whose ``X-Forwarded-For`` the
    #: instances believe for a client's address (rate limits, devices' last seen IP).
    trusted_proxies: tuple[Any, ...] = ()


@attrs.frozen
class HomeserverConfig:
    """The whole parsed config."""

    server_name: str
    public_baseurl: str
    signing_key_path: str
    data_dir: str
    database: DatabaseConfig
    redis: RedisConfig
    replication_secret: str
    router: RouterConfig
    stream_shards: Mapping[str, int]
    instances: Mapping[str, InstanceConfig]
    #: Feature sections registered in :data:`SECTIONS`, by name.
    sections: Mapping[str, Any]
    #: Key paths present in the file that no parser read.
    unknown_keys: tuple[str, ...]
    path: Optional[str] = None

    def instance(self, name: str) -> InstanceConfig:
        try:
            return self.instances[name]
        except KeyError:
            raise ConfigError("instances", f"no instance named {name!r}")

    def instances_with_role(self, role: str) -> list[InstanceConfig]:
        return [i for i in self.instances.values() if role in i.roles]

    def shard_owner(self, stream: str, shard: int) -> InstanceConfig:
        """The instance that writes ``shard`` of ``stream``."""
        for inst in self.instances.values():
            if shard in inst.shards.get(stream, ()):
                return inst
        raise LookupError(f"no owner for {stream}:{shard}")


def _trusted_proxies(rt: Reader) -> tuple[Any, ...]:
    from homeserver.http.server import DEFAULT_TRUSTED_PROXIES, parse_trusted_proxies

    values = rt.string_list("trusted_proxies", None)
    if values is None:
        return DEFAULT_TRUSTED_PROXIES
    try:
        return parse_trusted_proxies(values)
    except ValueError as e:
        raise ConfigError("router.trusted_proxies", f"must be IP addresses or CIDR networks ({e})")


#: Feature sections (registration, rate limits, media...) add a parser
#: here: ``SECTIONS["registration"] = parse_registration``. The parser gets a
#: :class:`Reader` for the section (empty mapping when absent) and returns a
#: frozen object found at ``config.sections[name]``.
SECTIONS: dict[str, Callable[[Reader], Any]] = {}

# The federation section (issue 8) registers itself here.
from homeserver.config.federation import FEDERATION_SECTIONS as _FEDERATION_SECTIONS  # noqa: E402

SECTIONS.update(_FEDERATION_SECTIONS)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _parse_shard_spec(value: Any, count: int, path: str) -> frozenset[int]:
    """``all``, an int, ``"0-7"``, or a list of those → a set of shard ids."""
    if value == "all":
        return frozenset(range(count))
    items = value if isinstance(value, list) else [value]
    out: set[int] = set()
    for item in items:
        if isinstance(item, bool):
            raise ConfigError(path, "expected shard numbers, ranges like 0-7, or all")
        if isinstance(item, int):
            lo = hi = item
        elif isinstance(item, str) and re.fullmatch(r"\d+(-\d+)?", item.strip()):
            a, _, b = item.strip().partition("-")
            lo, hi = int(a), int(b or a)
        else:
            raise ConfigError(path, "expected shard numbers, ranges like 0-7, or all")
        if lo > hi or hi >= count:
            raise ConfigError(path, f"shard {item!r} out of range 0-{count - 1}")
        out.update(range(lo, hi + 1))
    return frozenset(out)


def _parse_instance(name: str, r: Reader, stream_shards: Mapping[str, int]) -> InstanceConfig:
    if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", name):
        raise ConfigError(r.path, "instance names are letters, digits, '_' and '-'")
    roles = r.string_list("roles")
    if not roles:
        raise ConfigError(r.key_path("roles"), "must name at least one role")
    for role in roles:
        if role not in ROLES:
            raise ConfigError(r.key_path("roles"), f"unknown role {role!r} (known: {', '.join(sorted(ROLES))})")
    listen = r.listen("listen")
    replication_listen = r.listen("replication_listen")
    metrics_listen = r.listen("metrics_listen", None)
    shards: dict[str, frozenset[int]] = {}
    if r.has("shards"):
        raw = r.raw("shards")
        spath = r.key_path("shards")
        if SHARD_OWNER_ROLE not in roles:
            raise ConfigError(spath, f"only instances with the {SHARD_OWNER_ROLE} role own shards")
        if raw == "all":
            shards = {s: frozenset(range(n)) for s, n in stream_shards.items()}
        elif isinstance(raw, dict):
            for stream, spec in raw.items():
                if stream not in stream_shards:
                    raise ConfigError(f"{spath}.{stream}", f"unknown stream (known: {', '.join(sorted(stream_shards))})")
                shards[stream] = _parse_shard_spec(spec, stream_shards[stream], f"{spath}.{stream}")
        else:
            raise ConfigError(spath, "expected all, or a mapping of stream to shards")
    else:
        r.raw("shards", None)
    r.finish()
    return InstanceConfig(
        name=name,
        roles=frozenset(roles),
        listen=listen,
        replication_listen=replication_listen,
        metrics_listen=metrics_listen,
        shards=shards,
    )


def load_config(data: Any, path: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> HomeserverConfig:
    """Parse and validate a config document (already loaded from YAML)."""
    env = os.environ if env is None else env
    root = Reader(data)
    server_name = root.string("server_name", pattern=_SERVER_NAME, what="a server name like example.org or example.org:8448")
    base_dir = os.path.dirname(os.path.abspath(path)) if path else os.getcwd()
    data_dir = os.path.join(base_dir, root.string("data_dir", ".estuary"))
    public_baseurl = root.string("public_baseurl", "http://localhost:8008/", pattern=r"https?://.+", what="an http(s) URL")
    if not public_baseurl.endswith("/"):
        public_baseurl += "/"
    signing_key_path = os.path.join(base_dir, root.string("signing_key_path", os.path.join(data_dir, f"{server_name}.signing.key")))

    db = root.section("database")
    database = DatabaseConfig(
        dsn=env.get("ESTUARY_DATABASE_DSN") or db.string("dsn", None),
        pool_size=db.integer("pool_size", 10, minimum=1, maximum=200),
        prepared_statements=db.boolean("prepared_statements", True),
    )
    db.finish()
    rd = root.section("redis")
    redis = RedisConfig(url=env.get("ESTUARY_REDIS_URL") or rd.string("url", None, pattern=r"(redis|rediss|unix)://.*", what="a redis:// URL"))
    rd.finish()

    rep = root.section("replication")
    secret = rep.string("secret", None)
    if secret is None:
        secret = env.get("ESTUARY_REPLICATION_SECRET")
    if secret is None or len(secret) < 16:
        raise ConfigError("replication.secret", "is required: a random string of at least 16 characters shared by all instances")
    rep.finish()

    rt = root.section("router")
    router = RouterConfig(
        listen=rt.listen("listen", ("127.0.0.1", 8008)),
        health_interval_seconds=rt.number("health_interval_seconds", 2.0, minimum=0.1),
        trusted_proxies=_trusted_proxies(rt),
    )
    rt.finish()

    streams = root.section("streams")
    stream_shards = dict(DEFAULT_STREAM_SHARDS)
    for name in list(streams.data):
        if name not in DEFAULT_STREAM_SHARDS:
            continue
        stream_shards[name] = streams.integer(name, minimum=1, maximum=1024)
    streams.finish()

    instances: dict[str, InstanceConfig] = {}
    for name, ir in root.mapping_items("instances"):
        instances[name] = _parse_instance(name, ir, stream_shards)
    if not instances:
        raise ConfigError("instances", "must define at least one instance")

    _assign_default_shards(instances, stream_shards)
    _validate_layout(instances, stream_shards, router)

    sections: dict[str, Any] = {}
    for sname, parser in SECTIONS.items():
        sr = root.section(sname)
        sections[sname] = parser(sr)
        sr.finish()

    root.finish()
    return HomeserverConfig(
        server_name=server_name,
        public_baseurl=public_baseurl,
        signing_key_path=signing_key_path,
        data_dir=data_dir,
        database=database,
        redis=redis,
        replication_secret=secret,
        router=router,
        stream_shards=stream_shards,
        instances=instances,
        sections=sections,
        unknown_keys=tuple(root.unknown),
        path=path,
    )


def _assign_default_shards(instances: dict[str, InstanceConfig], stream_shards: Mapping[str, int]) -> None:
    """A lone ``client_writer`` that names no shards owns them all."""
    writers = [i for i in instances.values() if SHARD_OWNER_ROLE in i.roles]
    if len(writers) == 1 and not writers[0].shards:
        w = writers[0]
        instances[w.name] = attrs.evolve(w, shards={s: frozenset(range(n)) for s, n in stream_shards.items()})


def _validate_layout(instances: Mapping[str, InstanceConfig], stream_shards: Mapping[str, int], router: RouterConfig) -> None:
    if not any(SHARD_OWNER_ROLE in i.roles for i in instances.values()):
        raise ConfigError("instances", f"at least one instance needs the {SHARD_OWNER_ROLE} role")
    for stream, count in stream_shards.items():
        owners: dict[int, str] = {}
        for inst in instances.values():
            for shard in inst.shards.get(stream, ()):
                if shard in owners:
                    raise ConfigError(
                        f"instances.{inst.name}.shards.{stream}",
                        f"shard {shard} is already owned by instance {owners[shard]!r}",
                    )
                owners[shard] = inst.name
        missing = sorted(set(range(count)) - set(owners))
        if missing:
            raise ConfigError(f"streams.{stream}", f"shard {missing[0]} has no owner (every shard needs exactly one {SHARD_OWNER_ROLE})")
    seen: dict[tuple[str, int], str] = {router.listen: "router.listen"}
    for inst in instances.values():
        for key, addr in (("listen", inst.listen), ("replication_listen", inst.replication_listen), ("metrics_listen", inst.metrics_listen)):
            if addr is None:
                continue
            if addr in seen:
                raise ConfigError(f"instances.{inst.name}.{key}", f"{addr[0]}:{addr[1]} is also used by {seen[addr]}")
            seen[addr] = f"instances.{inst.name}.{key}"


def read_config_file(path: str, env: Optional[Mapping[str, str]] = None) -> HomeserverConfig:
    """Read and validate the YAML file at ``path``."""
    import yaml

    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError("", f"cannot read {path}: {e.strerror}")
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError("", f"{path} is not valid YAML{where}")
    return load_config(data, path=path, env=env)

from homeserver.config.accounts import ACCOUNT_SECTIONS as _ACCOUNT_SECTIONS  # noqa: E402

SECTIONS.update(_ACCOUNT_SECTIONS)

from homeserver.config.presence import PRESENCE_SECTIONS as _PRESENCE_SECTIONS  # noqa: E402

SECTIONS.update(_PRESENCE_SECTIONS)

from homeserver.config.server_notices import SERVER_NOTICES_SECTIONS as _SERVER_NOTICES_SECTIONS  # noqa: E402

SECTIONS.update(_SERVER_NOTICES_SECTIONS)

from homeserver.config.sync import SYNC_SECTIONS as _SYNC_SECTIONS  # noqa: E402

SECTIONS.update(_SYNC_SECTIONS)
