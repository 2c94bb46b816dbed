"""An agent's post-call webhook as its YAML file declares it.

::

    webhook:
      url: https://crm.example.com/hooks/aybiza
      secret: CRM_WEBHOOK        # the signing key is $AYBIZA_SECRET_CRM_WEBHOOK
      fields: [reason_for_call, callback_number]

The key is never in the file, as for tools (:mod:`aybiza.tools.specs`): the
file names it, the environment holds it, and only ``AYBIZA_SECRET_*`` can be
named, so an agent file cannot sign with (and so leak the MAC of) the
server's own keys. ``fields`` are what the receiver wants filled in from the
conversation; each is a name, or a name with a description the model reads.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..spec_fields import HttpUrl, SecretName

__all__ = ["FieldSpec", "WebhookSpec"]

_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class FieldSpec(BaseModel):
    """One field to extract: its name and what it means (the model is told; patterns know some names)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _FIELD_NAME.fullmatch(value):
            raise ValueError("a field name is lower-case letters, digits and '_' (reason_for_call)")
        return value


class WebhookSpec(BaseModel):
    """Where a call's results go, the name of the secret that signs them, and the fields they carry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: HttpUrl
    secret: SecretName
    fields: tuple[FieldSpec, ...] = ()
    timeout_s: float = Field(default=10.0, gt=0, le=60)

    @field_validator("fields", mode="before")
    @classmethod
    def _names_or_objects(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            value = [{"name": item} if isinstance(item, str) else item for item in value]
            names = [item.get("name") if isinstance(item, dict) else getattr(item, "name", None) for item in value]
            if len(set(names)) != len(names):
                raise ValueError("field names must be unique")
        return value
