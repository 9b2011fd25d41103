"""The ``estuary`` command: run, stack, router, migrate, generate-config...

Only :func:`main` installs a reactor (the asyncio one, because the bus uses
redis.asyncio); everything below receives it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Optional, Sequence

from homeserver.config import ConfigError, HomeserverConfig, read_config_file

logger = logging.getLogger("estuary")

EXIT_CONFIG = 2


def _install_reactor() -> Any:
    from twisted.internet import asyncioreactor

    try:
        asyncioreactor.install()
    except Exception:
        pass  # already installed (tests, or a second call)
    from twisted.internet import reactor

    return reactor


def _load(path: str) -> HomeserverConfig:
    config = read_config_file(path)
    for key in config.unknown_keys:
        logger.warning("config: unknown key %s (ignored)", key)
    return config


def _check_routes(config: HomeserverConfig) -> None:
    from workers.nginx import unreachable_roles

    missing = list(unreachable_roles(config))
    if missing:
        raise ConfigError("instances", f"no instance has the role {missing[0]!r}, which serves some routes (add it to an instance)")


def cmd_run(args: argparse.Namespace) -> int:
    from workers.logging_setup import setup_logging

    config = _load(args.config)
    if args.instance is None:
        if len(config.instances) != 1:
            raise ConfigError("instances", "several instances are defined: pass --instance NAME")
        name = next(iter(config.instances))
    else:
        name = args.instance
    instance = config.instance(name)
    setup_logging(instance.name, args.log_level)
    reactor = _install_reactor()

    from twisted.internet import defer

    from workers.app import EstuaryProcess

    process = EstuaryProcess(reactor, config, instance)
    status = {"code": 0}

    def started_failed(failure: Any) -> None:
        if failure.check(ConfigError):
            print(f"estuary: config error: {failure.value}", file=sys.stderr)
            status["code"] = EXIT_CONFIG
        else:
            logger.error("startup failed: %s", failure.getTraceback())
            status["code"] = 1
        reactor.stop()

    def start() -> None:
        defer.ensureDeferred(process.start()).addErrback(started_failed)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", lambda: defer.ensureDeferred(process.stop()))
    reactor.run()
    return status["code"]


def cmd_router(args: argparse.Namespace) -> int:
    from workers.logging_setup import setup_logging

    config = _load(args.config)
    setup_logging("router", args.log_level)
    reactor = _install_reactor()
    from workers.router import build_router

    site, health = build_router(reactor, config)
    host, port = config.router.listen
    reactor.listenTCP(port, site, interface=host)
    health.start()
    logger.info("router listening on %s:%s for %d instances", host, port, len(config.instances))
    reactor.run()
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    from workers.logging_setup import setup_logging
    from workers.supervisor import run_stack

    config = _load(args.config)
    _check_routes(config)
    setup_logging("stack", args.log_level)
    reactor = _install_reactor()
    return run_stack(reactor, config, args.config, router=not args.no_router, log_level=args.log_level)


def cmd_migrate(args: argparse.Namespace) -> int:
    config = _load(args.config)
    dsn = config.database.dsn
    if not dsn:
        raise ConfigError("database.dsn", "is required for migrate (or set ESTUARY_DATABASE_DSN)")
    import psycopg2

    from storage.migrations import prepare_database_on_connection

    conn = psycopg2.connect(dsn)
    try:
        version = prepare_database_on_connection(conn)
    finally:
        conn.close()
    print(f"schema at version {version}")
    return 0


def cmd_generate_config(args: argparse.Namespace) -> int:
    from workers.generate import generate_config

    text = generate_config(args.server_name, layout=args.layout)
    if args.output and args.output != "-":
        if os.path.exists(args.output) and not args.force:
            print(f"estuary: {args.output} exists (use --force to overwrite)", file=sys.stderr)
            return 1
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def cmd_generate_nginx(args: argparse.Namespace) -> int:
    from workers.nginx import generate_nginx_config

    config = _load(args.config)
    _check_routes(config)
    sys.stdout.write(generate_nginx_config(config, listen=args.listen, server_name=args.server_name))
    return 0


def cmd_register_user(args: argparse.Namespace) -> int:
    from workers.register_user import cmd_register_user as run

    return run(args, _load(args.config))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="estuary", description="Estuary Matrix homeserver")
    p.add_argument("--log-level", default=os.environ.get("ESTUARY_LOG_LEVEL", "INFO"))
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one instance of the config in this process")
    run.add_argument("--config", "-c", required=True)
    run.add_argument("--instance", "-i")
    run.set_defaults(fn=cmd_run)

    stack = sub.add_parser("stack", help="run every instance of the config as supervised processes, plus the router")
    stack.add_argument("--config", "-c", required=True)
    stack.add_argument("--no-router", action="store_true", help="do not start the built-in router")
    stack.set_defaults(fn=cmd_stack)

    router = sub.add_parser("router", help="run the built-in reverse proxy")
    router.add_argument("--config", "-c", required=True)
    router.set_defaults(fn=cmd_router)

    mig = sub.add_parser("migrate", help="apply database migrations and exit")
    mig.add_argument("--config", "-c", required=True)
    mig.set_defaults(fn=cmd_migrate)

    gen = sub.add_parser("generate-config", help="write a starting config")
    gen.add_argument("--server-name", default="localhost")
    gen.add_argument("--layout", choices=["single", "three", "eight"], default="single", help="1, 3 or 8 processes")
    gen.add_argument("--output", "-o", default="-")
    gen.add_argument("--force", action="store_true")
    gen.set_defaults(fn=cmd_generate_config)

    reg = sub.add_parser("register-user", help="create a user with shared-secret registration (the server must be running)")
    reg.add_argument("--config", "-c", required=True)
    reg.add_argument("--user", "-u", required=True, help="localpart of the new user")
    reg.add_argument("--password", "-p", help="prompted for when absent")
    reg.add_argument("--admin", action="store_true", help="make the user a server admin")
    reg.add_argument("--displayname")
    reg.add_argument("--url", help="base URL of the server (default: the router's listen address)")
    reg.add_argument("--shared-secret", help="override registration.registration_shared_secret")
    reg.set_defaults(fn=cmd_register_user)

    ngx = sub.add_parser("generate-nginx-config", help="print an nginx config routing to the config's instances")
    ngx.add_argument("--config", "-c", required=True)
    ngx.add_argument("--listen", default="8008")
    ngx.add_argument("--server-name", default="_")
    ngx.set_defaults(fn=cmd_generate_nginx)
    return p


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command not in ("run", "router", "stack"):
        logging.basicConfig(level=args.log_level, format="%(levelname)s %(message)s")
    try:
        code = args.fn(args)
    except ConfigError as e:
        print(f"estuary: config error: {e}", file=sys.stderr)
        code = EXIT_CONFIG
    sys.exit(code)
