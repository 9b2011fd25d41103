"""Process logging: stdlib logging to stderr, Twisted's log routed into it."""

from __future__ import annotations

import logging
import sys


def setup_logging(instance: str, level: str = "INFO") -> None:
    """Log lines carry the instance name so a stack's merged output reads well."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {instance} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)
