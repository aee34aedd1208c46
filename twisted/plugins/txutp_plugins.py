"""Twisted plugin drop-in for txutp: the ``utp:`` endpoint string parsers and the ``twistd utp`` plugin.

No ``__init__.py`` may live in this directory, and this module must never
import the reactor (not even indirectly): the parsers import the endpoints only
when a string is parsed, and ``ServiceMaker`` loads :mod:`txutp.tap` lazily.
"""

from twisted.application.service import ServiceMaker

from txutp._parsers import UTPClientParser, UTPServerParser

utpServerParser = UTPServerParser()
utpClientParser = UTPClientParser()
utpServiceMaker = ServiceMaker(
    "txutp",
    "txutp.tap",
    "Forward byte streams between any two endpoints (e.g. uTP <-> TCP), or echo, over uTP",
    "utp",
)
