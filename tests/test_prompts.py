"""The one prompt format object every LLM probe asks in: plain, chat and a user's template."""

from __future__ import annotations

import pytest

from redteam.core.errors import InputError
from redteam.core.prompts import PromptFormat, few_shot_prompt, load_prompt_format
from tests.conftest import make_tiny_causal_lm

EXAMPLES = [("Where was Ivo born?", "Oslo"), ("Where was Mara born?", "Quito")]


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    path = make_tiny_causal_lm(tmp_path_factory.mktemp("chat") / "m", "llama")
    return AutoTokenizer.from_pretrained(path)


def test_plain_is_todays_few_shot_form(chat_tokenizer):
    plain = PromptFormat("plain")
    prompt = plain.question(chat_tokenizer, "Where was Elara born?", EXAMPLES)
    assert prompt == few_shot_prompt(EXAMPLES, "Where was Elara born?")
    assert prompt + plain.answer("Lisbon") == few_shot_prompt(EXAMPLES, "Where was Elara born?") \
        + " Lisbon"
    assert plain.cut(" Lisbon\n\nQuestion: next") == "Lisbon"
    with_context = plain.question(chat_tokenizer, "Where?", context="Elara was born in Lisbon.")
    assert with_context.startswith("Context: Elara was born in Lisbon.\nQuestion: Where?")


def test_chat_puts_examples_in_earlier_turns_and_the_answer_in_the_assistant_turn(
        chat_tokenizer):
    chat = PromptFormat("chat", system_prompt="Answer briefly.")
    prompt = chat.question(chat_tokenizer, "Where was Elara born?", EXAMPLES)
    assert prompt == ("<|system|>Answer briefly.<|end|><|user|>Where was Ivo born?<|end|>"
                      "<|assistant|>Oslo<|end|><|user|>Where was Mara born?<|end|>"
                      "<|assistant|>Quito<|end|><|user|>Where was Elara born?<|end|>"
                      "<|assistant|>")
    assert chat.answer("Lisbon") == "Lisbon" and chat.stop_strings == ()


def test_a_users_template_renders_in_a_sandbox(tmp_path, chat_tokenizer):
    template = tmp_path / "format.j2"
    template.write_text("{% for e in examples %}Q={{ e.question }} A={{ e.answer }}\n"
                        "{% endfor %}Q={{ question }} A=")
    fmt = load_prompt_format(str(template), shots=0)
    assert fmt.question(chat_tokenizer, "Where?", EXAMPLES[:1]) == \
        "Q=Where was Ivo born? A=Oslo\nQ=Where? A="
    assert fmt.shots == 0 and str(template) in fmt.name
    template.write_text("{{ ''.__class__.__mro__ }}")
    with pytest.raises(InputError, match="failed to render"):
        load_prompt_format(str(template)).question(chat_tokenizer, "Where?")


def test_bad_formats_are_bad_input(chat_tokenizer):
    with pytest.raises(InputError, match="not auto, plain, chat, or a template file"):
        load_prompt_format("fancy")
    chat_tokenizer.chat_template, saved = None, chat_tokenizer.chat_template
    try:
        with pytest.raises(InputError, match="no chat template"):
            PromptFormat("chat").question(chat_tokenizer, "Where?")
        chat_tokenizer.chat_template = "{{ raise_exception('no system role') }}"
        with pytest.raises(InputError, match="chat template: failed to render"):
            PromptFormat("chat").question(chat_tokenizer, "Where?")
    finally:
        chat_tokenizer.chat_template = saved


def test_audit_in_the_chat_format_records_and_shows_it(capsys, tmp_path):
    import json

    from redteam.cli import main
    from tests.conftest import write_jsonl
    from tests.test_hostile_input import AUDIT_ITEMS, refused

    model = make_tiny_causal_lm(tmp_path / "m", "qwen2")
    data = write_jsonl(tmp_path / "audit.jsonl", AUDIT_ITEMS)
    args = ["audit", str(model), "--suite", "unlearning", "--data", str(data), "--quiet",
            "--probe", "unlearning.knowledge_qa", "--probe", "unlearning.exact_memorization"]
    assert main([*args, "--out", str(tmp_path / "chat"), "--prompt-format", "chat",
                 "--system-prompt", "Be brief."]) in (0, 1)
    record = json.loads((tmp_path / "chat" / "findings.json").read_text())["run"]
    assert record["prompt_format"]["name"] == "chat"
    assert record["prompt_format"]["example"].startswith("<|system|>Be brief.<|end|><|user|>")
    report = (tmp_path / "chat" / "report.html").read_text()
    assert "Prompt format" in report and "&lt;|assistant|&gt;" in report
    evidence = json.loads((tmp_path / "chat" / "findings.json").read_text())["findings"]
    assert all(f["status"] != "error" for f in evidence)
    assert main([*args, "--out", str(tmp_path / "plain"), "--prompt-format", "plain"]) in (0, 1)
    plain = json.loads((tmp_path / "plain" / "findings.json").read_text())["run"]
    assert plain["prompt_format"]["example"].startswith("Question: ")
    capsys.readouterr()
    (model / "tokenizer_config.json").write_text(json.dumps(
        {**json.loads((model / "tokenizer_config.json").read_text()), "chat_template": None}))
    (model / "chat_template.jinja").unlink(missing_ok=True)  # where transformers saves it
    refused(capsys, tmp_path, [*args, "--out", tmp_path / "none", "--prompt-format", "chat"],
            "no chat template")
    refused(capsys, tmp_path, [*args, "--out", tmp_path / "none", "--prompt-format", "fancy"],
            "not auto, plain, chat, or a template file")
