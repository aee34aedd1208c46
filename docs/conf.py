"""Sphinx configuration for the txutp documentation (``sphinx-build -W -b html docs docs/_build/html``).

No intersphinx: the build must work offline (CI has no Internet). References to
Twisted and Python names that Sphinx cannot resolve are rendered as plain text.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

from txutp._version import __version__  # noqa: E402

project = "txutp"
author = "txutp developers"
copyright = "txutp developers"
version = release = __version__

extensions = ["sphinx.ext.autodoc"]
exclude_patterns = ["_build"]
root_doc = "index"
templates_path: list[str] = []
html_static_path: list[str] = []
html_theme = "alabaster"
html_theme_options = {"description": "uTP (BEP 29) as a Twisted transport", "fixed_sidebar": True}
pygments_style = "sphinx"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options: dict[str, object] = {}
autoclass_content = "both"


def _providedInterfaces(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    """Append the zope interfaces a class implements (``@implementer``) to its documentation."""
    if what != "class" or not isinstance(obj, type):
        return
    from zope.interface import implementedBy

    names = [f"``{i.__module__}.{i.__name__}``" for i in implementedBy(obj).interfaces()]
    if names:
        lines.extend(["", "**Provides:** " + ", ".join(names) + ".", ""])


_INTERFACE = re.compile(r"<InterfaceClass [\w.]*?(\w+)>")


def _readableSignature(
    app: Any, what: str, name: str, obj: Any, options: Any, signature: str | None, annotation: str | None
) -> tuple[str | None, str | None]:
    """Show ``IProtocolFactory`` where autodoc would print ``<InterfaceClass twisted....IProtocolFactory>``."""

    def clean(text: str | None) -> str | None:
        return None if text is None else _INTERFACE.sub(r"\1", text)

    return clean(signature), clean(annotation)


def setup(app: Any) -> None:
    app.connect("autodoc-process-docstring", _providedInterfaces)
    app.connect("autodoc-process-signature", _readableSignature)
