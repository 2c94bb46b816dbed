"""Field types an agent's YAML shares between its tools and its webhook.

A secret is named, never written, in an agent file: the name is capitals
(``SHOP_TOKEN``) and its value is ``AYBIZA_SECRET_<NAME>`` in the
environment, so an agent file can neither hold a key nor name one of the
server's own. An address the server calls out to is http(s) with a host.
Both are checked where the file is loaded, with a message that says how to
write it.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator

__all__ = ["HttpUrl", "SecretName"]

_SECRET_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")


def _secret_name(value: str) -> str:
    if not _SECRET_NAME.fullmatch(value):
        raise ValueError("secret is a name in capitals, digits and '_' (SHOP_TOKEN: the value is the environment"
                         " variable AYBIZA_SECRET_SHOP_TOKEN)")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("url must be an http:// or https:// URL")
    return value


SecretName = Annotated[str, AfterValidator(_secret_name)]
"""The name of an ``AYBIZA_SECRET_<NAME>`` variable."""

HttpUrl = Annotated[str, AfterValidator(_http_url)]
"""An http:// or https:// URL with a host."""
