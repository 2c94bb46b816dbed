"""An agent file's secret names and outgoing URLs are checked alike for its tools and its webhook."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aybiza.results.spec import WebhookSpec
from aybiza.tools.specs import HttpToolSpec, ToolAuth


def _tool(url: str) -> HttpToolSpec:
    return HttpToolSpec(name="order_status", description="Look up an order.", url=url)


@pytest.mark.parametrize("secret", ["shop_token", "SHOP-TOKEN", "1TOKEN", "", "A" * 65])
def test_a_secret_that_is_not_a_name_in_capitals_is_refused_by_tools_and_webhooks(secret: str) -> None:
    with pytest.raises(ValidationError, match="AYBIZA_SECRET_"):
        ToolAuth(secret=secret)
    with pytest.raises(ValidationError, match="AYBIZA_SECRET_"):
        WebhookSpec(url="https://crm.example.com/hook", secret=secret)


@pytest.mark.parametrize("url", ["ftp://crm.example.com/hook", "https:///no-host", "crm.example.com/hook", ""])
def test_only_http_urls_with_a_host_are_called_by_tools_and_webhooks(url: str) -> None:
    with pytest.raises(ValidationError, match="http:// or https://"):
        _tool(url)
    with pytest.raises(ValidationError, match="http:// or https://"):
        WebhookSpec(url=url, secret="CRM_WEBHOOK")


def test_well_formed_names_and_urls_are_kept_as_written() -> None:
    assert ToolAuth(secret="SHOP_TOKEN").secret == "SHOP_TOKEN"
    assert _tool("http://127.0.0.1:8081/orders").url == "http://127.0.0.1:8081/orders"
    spec = WebhookSpec(url="https://crm.example.com/hook", secret="CRM_WEBHOOK")
    assert (spec.url, spec.secret) == ("https://crm.example.com/hook", "CRM_WEBHOOK")
