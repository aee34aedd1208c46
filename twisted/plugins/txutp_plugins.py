"""Twisted plugin drop-in for txutp (endpoint parsers and the twistd plugin arrive here).

No ``__init__.py`` may live in this directory, and this module must never
import the reactor.
"""
