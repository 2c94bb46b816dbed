"""An agent's tools as its YAML file declares them: HTTP tools, built-ins, and the actions an FAQ binds.

::

    tools:
      - name: order_status                 # an HTTP tool
        description: Look up an order by its number.
        url: https://shop.example.com/api/orders/{order_id}
        method: GET
        parameters:
          type: object
          properties: {order_id: {type: string, pattern: "^[0-9]{4,10}$"}}
          required: [order_id]
        timeout_s: 3
        auth: {header: Authorization, scheme: Bearer, secret: SHOP_TOKEN}   # AYBIZA_SECRET_SHOP_TOKEN
        keep: [status, delivery.eta]       # the response fields the model sees
      - builtin: transfer                  # to the agent's transfer_to, or target:
      - builtin: warm_transfer
      - builtin: end_call
      - builtin: collect_digits
        max_digits: 8
      - builtin: send_digits
      - builtin: faq_lookup

A secret is never in the file: ``auth.secret`` names it, and its value is the
environment variable ``AYBIZA_SECRET_<NAME>``, read through
:meth:`aybiza.config.Settings.secret` (only variables with that prefix can
be sent anywhere, so an agent file cannot send the server's own keys).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from ..spec_fields import HttpUrl, SecretName
from .schema import check_schema

__all__ = [
    "ACTIONS",
    "BUILTINS",
    "Action",
    "BuiltinName",
    "BuiltinToolSpec",
    "HttpToolSpec",
    "ToolAuth",
    "ToolSpec",
    "TOOL_NAME",
]

BuiltinName = Literal["transfer", "warm_transfer", "end_call", "collect_digits", "send_digits", "faq_lookup"]
BUILTINS: tuple[str, ...] = ("transfer", "warm_transfer", "end_call", "collect_digits", "send_digits", "faq_lookup")
"""Built-in tools, by the name the YAML uses."""

Action = Literal["transfer", "warm_transfer", "end_call"]
ACTIONS: tuple[str, ...] = ("transfer", "warm_transfer", "end_call")
"""What an FAQ entry may bind: the caller hears the answer, then the action runs."""

TOOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
"""Tool names both Bedrock and OpenAI accept."""

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ToolAuth(BaseModel):
    """An auth header built from a secret: ``<header>: <scheme> <value of AYBIZA_SECRET_<secret>>``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret: SecretName
    header: str = "Authorization"
    scheme: str = "Bearer"


class HttpToolSpec(BaseModel):
    """A tool that is an HTTP request: URL (``{argument}`` placeholders), method, arguments, timeout, auth."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = Field(min_length=1)
    url: HttpUrl
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    timeout_s: float = Field(default=3.0, gt=0, le=30)
    auth: ToolAuth | None = None
    keep: tuple[str, ...] = ()
    filler: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not TOOL_NAME.fullmatch(value) or value in BUILTINS:
            raise ValueError("a tool name is a letter then letters, digits, '_' or '-' (and not a built-in's name)")
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_schema(value)
        if value.get("type") != "object":
            raise ValueError("parameters must be a schema of type object")
        return value

    @model_validator(mode="after")
    def _placeholders_are_arguments(self) -> HttpToolSpec:
        properties = self.parameters.get("properties", {})
        required = set(self.parameters.get("required", []))
        for name in _PLACEHOLDER.findall(self.url):
            if name not in properties or name not in required:
                raise ValueError(f"url placeholder {{{name}}} must be a required argument")
        return self

    def __hash__(self) -> int:
        # Frozen, but ``parameters`` is a dict: hash the whole spec as JSON (agents are cache keys).
        return hash(self.model_dump_json())

    @property
    def placeholders(self) -> tuple[str, ...]:
        """Arguments that go into the URL's path."""
        return tuple(_PLACEHOLDER.findall(self.url))


class BuiltinToolSpec(BaseModel):
    """A built-in tool, with its options (``target`` for transfers; digit collection's limits)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    builtin: BuiltinName
    description: str | None = None
    target: str | None = None
    max_digits: int = Field(default=16, ge=1, le=64)
    terminator: Literal["#", "*", ""] = "#"
    timeout_s: float = Field(default=8.0, gt=0, le=60)
    attempts: int = Field(default=2, ge=1, le=5)
    ring_s: float = Field(default=25.0, ge=5, le=120)

    @property
    def name(self) -> str:
        """The name the model calls it by."""
        return self.builtin


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "builtin" if "builtin" in value else "http"
    return "builtin" if isinstance(value, BuiltinToolSpec) else "http"


ToolSpec = Annotated[
    Annotated[HttpToolSpec, Tag("http")] | Annotated[BuiltinToolSpec, Tag("builtin")],
    Discriminator(_kind),
]
"""One entry of an agent's ``tools``: a mapping with ``builtin:`` is a built-in, anything else an HTTP tool."""
