"""Estuary's test suite (Twisted trial).

Standard-library log records are forwarded into Twisted's log, so under
trial they land in ``_trial_temp/test.log`` instead of the console.
"""

import logging

from twisted.logger import Logger

_twisted_log = Logger(namespace="estuary.tests")


class _ToTwisted(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            _twisted_log.info("{logger} {lvl}: {msg}", logger=record.name, lvl=record.levelname, msg=self.format(record))
        except Exception:
            self.handleError(record)


_root = logging.getLogger()
if not any(isinstance(h, _ToTwisted) for h in _root.handlers):
    _root.addHandler(_ToTwisted())
    _root.setLevel(logging.DEBUG)
