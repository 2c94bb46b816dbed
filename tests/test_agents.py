"""Agent files: the default agent loads, bad files fail loudly, ids cannot escape the directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from aybiza.agents import AgentConfig, agent_exists, list_agents, load_agent
from aybiza.errors import ConfigError

AGENTS_DIR = Path(__file__).resolve().parents[1] / "agents"

MINIMAL = """\
name: Test Shop
greeting: Hello!
system_prompt: You are a shop assistant.
fallback: Sorry, I can help with opening hours.
faqs:
  - id: hours
    answer: We are open every day.
    questions: ["When are you open?"]
"""


def test_default_agent_loads_with_a_full_faq() -> None:
    agent = load_agent("default", AGENTS_DIR)
    assert agent.id == "default"
    assert agent.name and agent.greeting and agent.system_prompt and agent.fallback
    assert len(agent.faqs) >= 12
    assert all(len(faq.questions) >= 4 for faq in agent.faqs)
    assert len({faq.id for faq in agent.faqs}) == len(agent.faqs)
    assert "quieter" in agent.reprompt


def test_default_opening_hours_answer_says_open_and_monday() -> None:
    # The end-to-end call test listens for these two words.
    agent = load_agent("default", AGENTS_DIR)
    hours = next(faq for faq in agent.faqs if faq.id == "opening_hours")
    assert "open" in hours.answer.lower()
    assert "Monday" in hours.answer


def test_minimal_agent_gets_defaults(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text(MINIMAL)
    agent = load_agent("shop", tmp_path)
    assert agent.id == "shop"
    assert agent.language == "en"
    assert agent.voice == "piper:joe"
    assert agent.match_threshold == 0.5
    assert agent.cache_answers is True
    assert agent.residency is None and agent.cost_budget_usd is None
    assert agent.transfer_to is None and agent.languages == ("en",)
    assert agent.apology == "I'm sorry, we're having a technical problem on our side."
    assert agent.goodbye == "Please call us back in a few minutes. Goodbye."
    assert agent.retry_prompt == "Could you say that again in a moment?"
    assert agent.handoff == "Let me put you through to a colleague."


def test_agent_config_is_frozen() -> None:
    agent = load_agent("default", AGENTS_DIR)
    with pytest.raises(ValidationError):
        agent.name = "Someone else"
    assert hash(agent) == hash(load_agent("default", AGENTS_DIR))


def test_malformed_yaml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.yaml").write_text("name: [unclosed\ngreeting: hi\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_agent("broken", tmp_path)


def test_missing_field_is_a_config_error_naming_file_and_field(tmp_path: Path) -> None:
    without_fallback = MINIMAL.replace("fallback: Sorry, I can help with opening hours.\n", "")
    (tmp_path / "nofallback.yaml").write_text(without_fallback)
    with pytest.raises(ConfigError, match=r"nofallback\.yaml(.|\n)*fallback"):
        load_agent("nofallback", tmp_path)


def test_faq_without_phrasings_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text(MINIMAL.replace('["When are you open?"]', "[]"))
    with pytest.raises(ConfigError, match="questions"):
        load_agent("empty", tmp_path)


def test_unknown_field_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "typo.yaml").write_text(MINIMAL + "match_treshold: 0.3\n")
    with pytest.raises(ConfigError, match="match_treshold"):
        load_agent("typo", tmp_path)


def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "list.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_agent("list", tmp_path)


def test_missing_agent_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nobody"):
        load_agent("nobody", tmp_path)


@pytest.mark.parametrize("agent_id", ["../secret", "..", "a/b", "secret.yaml", "/etc/passwd", "", "x" * 65])
def test_path_traversal_and_odd_ids_are_rejected(tmp_path: Path, agent_id: str) -> None:
    # A valid agent file sits one level up: no id may reach it.
    (tmp_path / "secret.yaml").write_text(MINIMAL)
    inner = tmp_path / "agents"
    inner.mkdir()
    with pytest.raises(ConfigError, match="invalid agent id"):
        load_agent(agent_id, inner)


def test_id_in_file_must_match_file_name(tmp_path: Path) -> None:
    (tmp_path / "one.yaml").write_text("id: two\n" + MINIMAL)
    with pytest.raises(ConfigError, match="does not match"):
        load_agent("one", tmp_path)


def test_list_agents_lists_valid_ids_only(tmp_path: Path) -> None:
    for name in ("b-shop", "a_shop", "not valid"):
        (tmp_path / f"{name}.yaml").write_text(MINIMAL)
    (tmp_path / "notes.txt").write_text("ignore me")
    assert list_agents(tmp_path) == ["a_shop", "b-shop"]
    assert list_agents(tmp_path / "missing") == []
    assert "default" in list_agents(AGENTS_DIR)


def test_agent_config_round_trips_through_python() -> None:
    agent = load_agent("default", AGENTS_DIR)
    assert AgentConfig.model_validate(agent.model_dump()) == agent


def _load_with(tmp_path: Path, extra: str) -> AgentConfig:
    (tmp_path / "shop.yaml").write_text(MINIMAL + extra, encoding="utf-8")
    return load_agent("shop", tmp_path)


@pytest.mark.parametrize(("written", "kept"), [
    ("'+14155550123'", "+14155550123"),
    ("'+44 20 7946 0958'", "+442079460958"),
    ("'+1 (415) 555-0123'", "+14155550123"),
    ("sip:frontdesk@pbx.example.com", "sip:frontdesk@pbx.example.com"),
    ("SIPS:desk@10.0.0.5:5061", "sips:desk@10.0.0.5:5061"),
])
def test_transfer_to_takes_e164_numbers_and_sip_uris(tmp_path: Path, written: str, kept: str) -> None:
    assert _load_with(tmp_path, f"transfer_to: {written}\n").transfer_to == kept


@pytest.mark.parametrize("written", ["'4155550123'", "'+0123456'", "'+1415555012345678'", "'call me'", "'sip:'",
                                     "'tel:+14155550123'"])
def test_transfer_to_refuses_what_cannot_be_dialled(tmp_path: Path, written: str) -> None:
    with pytest.raises(ConfigError, match="transfer_to"):
        _load_with(tmp_path, f"transfer_to: {written}\n")


def test_failure_phrases_can_be_set_and_must_not_be_blank(tmp_path: Path) -> None:
    agent = _load_with(tmp_path, "apology: Sorry, our system is down.\ngoodbye: Bye now.\n"
                                 "retry_prompt: Say again?\nhandoff: Transferring you.\n")
    assert (agent.apology, agent.goodbye, agent.retry_prompt, agent.handoff) == (
        "Sorry, our system is down.", "Bye now.", "Say again?", "Transferring you.")
    for field in ("apology", "goodbye", "retry_prompt", "handoff"):
        with pytest.raises(ConfigError, match=field):
            _load_with(tmp_path, f"{field}: '  '\n")


def test_languages_are_primary_tags_and_include_the_agent_language(tmp_path: Path) -> None:
    assert _load_with(tmp_path, "languages: [en, ES, fil]\n").languages == ("en", "es", "fil")
    assert _load_with(tmp_path, "language: es-MX\n").languages == ("es",)  # default: the agent's own language
    assert _load_with(tmp_path, "language: en-GB\nlanguages: [fr, en]\n").languages == ("fr", "en")
    for bad in ("[]", "[en-GB]", "[english]", "[en, en]", "[de]"):
        with pytest.raises(ConfigError, match="language"):
            _load_with(tmp_path, f"languages: {bad}\n")


@pytest.mark.parametrize(("written", "kept"), [("EU", "EU"), ("us", "US"), ("Apac", "APAC"), ("caller", "caller"),
                                               ("CALLER", "caller"), ("null", None)])
def test_residency_is_a_zone_or_the_callers(tmp_path: Path, written: str, kept: str | None) -> None:
    assert _load_with(tmp_path, f"residency: {written}\n").residency == kept


def test_unknown_residency_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="residency"):
        _load_with(tmp_path, "residency: mars\n")


def test_a_file_that_is_not_utf8_is_a_config_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / "latin.yaml").write_bytes(MINIMAL.replace("Hello!", "Ol\xe1!").encode("latin-1"))
    with pytest.raises(ConfigError, match="latin.yaml"):
        load_agent("latin", tmp_path)


def test_agent_exists_needs_a_valid_id_and_a_file(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text(MINIMAL)
    assert agent_exists("shop", tmp_path)
    assert not agent_exists("nobody", tmp_path) and not agent_exists("../shop", tmp_path)
    assert agent_exists("default", AGENTS_DIR)


TOOLS = """\
transfer_to: '+14155550123'
tools:
  - name: order_status
    description: Where an order is.
    url: https://shop.example.com/api/orders/{order_id}
    method: get
    parameters:
      type: object
      properties: {order_id: {type: string}}
      required: [order_id]
    auth: {secret: SHOP_TOKEN}
    keep: [status]
  - builtin: transfer
  - builtin: warm_transfer
    target: 'sip:billing@pbx.example.com'
  - builtin: collect_digits
    max_digits: 6
"""


def test_tools_are_http_requests_or_built_ins(tmp_path: Path) -> None:
    agent = _load_with(tmp_path, TOOLS)
    order, transfer, warm, digits = agent.tools
    assert order.name == "order_status" and order.method == "GET" and order.placeholders == ("order_id",)  # type: ignore[union-attr]
    assert transfer.name == "transfer" and warm.target == "sip:billing@pbx.example.com"  # type: ignore[union-attr]
    assert digits.max_digits == 6 and agent.tool("collect_digits") is digits  # type: ignore[union-attr]


@pytest.mark.parametrize(("tools", "message"), [
    ("tools:\n  - builtin: teleport\n", "builtin"),
    ("tools:\n  - name: x\n    description: x\n    url: ftp://x\n", "http:// or https://"),
    ("tools:\n  - name: x\n    description: x\n    url: https://x/{id}\n", "placeholder"),
    ("tools:\n  - name: x\n    description: x\n    url: https://x\n    auth: {secret: lower}\n", "capitals"),
    ("tools:\n  - builtin: end_call\n  - builtin: end_call\n", "unique"),
    ("tools:\n  - builtin: transfer\n", "needs a target"),
])
def test_a_tool_that_cannot_work_is_refused_when_the_file_loads(tmp_path: Path, tools: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load_with(tmp_path, tools)


def test_an_faq_action_that_transfers_needs_somewhere_to_transfer_to(tmp_path: Path) -> None:
    action = MINIMAL.replace("    questions:", "    action: transfer\n    questions:")
    (tmp_path / "shop.yaml").write_text(action)
    with pytest.raises(ConfigError, match="transfer_to"):
        load_agent("shop", tmp_path)
    (tmp_path / "shop.yaml").write_text(action + "transfer_to: '+14155550123'\n")
    assert load_agent("shop", tmp_path).faqs[0].action == "transfer"


def test_the_default_agent_passes_callers_who_ask_for_a_person_to_its_front_desk() -> None:
    agent = load_agent("default", AGENTS_DIR)
    [person] = [faq for faq in agent.faqs if faq.action is not None]
    assert person.action == "transfer" and agent.transfer_to == "+16035550142"


def test_an_agent_with_tools_is_hashable_like_any_agent(tmp_path: Path) -> None:
    agent = _load_with(tmp_path, TOOLS)
    assert hash(agent) == hash(_load_with(tmp_path, TOOLS))  # agents are cache keys (answer fingerprints)
