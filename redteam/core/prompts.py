"""The text formats shared by the probes, the unlearning methods and the demo zoo.

MUSE's KnowMem uses few-shot "Question: q\\nAnswer: a\\n\\n" prompts; the zoo trains its LM on the
same format so that the probes ask in the form the model learnt, and the unlearning methods
forget in that form too. Keeping the format in one place keeps all three in agreement.
"""

from __future__ import annotations

from dataclasses import dataclass

from redteam.core.errors import InputError
from redteam.core.templates import render_bounded

QA_SEPARATOR = "\n\n"


def qa_block(question: str, answer: str | None = None) -> str:
    """One question/answer block; without an answer it ends at "Answer:" for generation."""
    if answer is None:
        return f"Question: {question}\nAnswer:"
    return f"Question: {question}\nAnswer: {answer}"


def few_shot_prompt(examples: list[tuple[str, str]], question: str) -> str:
    """Few-shot QA prompt: solved examples, then the question left open."""
    blocks = [qa_block(q, a) for q, a in examples]
    blocks.append(qa_block(question))
    return QA_SEPARATOR.join(blocks)


def context_qa_block(context: str, question: str, answer: str | None = None) -> str:
    """Reading-comprehension block: a context, then a question answerable from it."""
    return f"Context: {context}\n" + qa_block(question, answer)


ANSWER_STOPS = (QA_SEPARATOR, "Question", "\nContext:", "\nAnswer:")


def cut_answer(generated: str) -> str:
    """Cut a generated answer at the end of its block, as MUSE does ("\\n\\n" or "Question"),
    or where the model starts another context or answer line."""
    for stop in ANSWER_STOPS:
        index = generated.find(stop)
        if index != -1:
            generated = generated[:index]
    return generated.strip()


PROMPT_STYLES = ("plain", "chat", "template", "auto")


@dataclass(frozen=True)
class PromptFormat:
    """How a question is put to an LLM and how its answer follows.

    ``plain`` is the "Question: …\\nAnswer:" form above (few-shot examples as earlier blocks);
    ``chat`` renders the tokenizer's own chat template (``apply_chat_template``), few-shot
    examples as earlier user/assistant turns and the answer in the assistant turn; ``template``
    renders a Jinja template of the user's (``question``, ``examples``, ``context``,
    ``system_prompt``) in a sandbox; ``auto`` stands for the one of these the model answers best
    in, chosen before the run (``redteam.core.answers.calibrate_prompt_format``). ``shots`` set here
    overrides the probes' own setting.
    """

    style: str = "plain"
    shots: int | None = None
    system_prompt: str | None = None
    template: str | None = None  # the Jinja source, for style "template"
    source: str = ""  # where the template came from, for the run record

    def __post_init__(self) -> None:
        if self.style not in PROMPT_STYLES:
            raise ValueError(f"unknown prompt style {self.style!r} (known: "
                             f"{', '.join(PROMPT_STYLES)})")

    @property
    def name(self) -> str:
        shots = "" if self.shots is None else f", {self.shots}-shot"
        return (f"template {self.source}" if self.style == "template" else self.style) + shots

    def question(self, tokenizer, question: str, examples: list[tuple[str, str]] = (),
                 context: str | None = None) -> str:
        """The prompt, ending where the model's answer begins."""
        examples = list(examples)
        if self.style == "auto":
            raise RuntimeError("the auto prompt format is calibrated into another before use")
        if self.style == "plain":
            asked = context_qa_block(context, question) if context else qa_block(question)
            return QA_SEPARATOR.join([*(qa_block(q, a) for q, a in examples), asked])
        if self.style == "chat":
            return self._chat(tokenizer, examples, question, context)
        return self._template(examples, question, context)

    def answer(self, answer: str) -> str:
        """The answer as the model is expected to write it right after ``question``'s prompt
        (what teacher-forced scoring puts there): plain prompts end at "Answer:"."""
        return f" {answer}" if self.style == "plain" else answer

    def cut(self, generated: str) -> str:
        """The answer in a generation: plain blocks end at the next block; a chat answer ends at
        the end-of-turn token, where generation stops."""
        return cut_answer(generated) if self.style == "plain" else generated.strip()

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return ANSWER_STOPS if self.style == "plain" else ()

    def _messages(self, examples, question, context) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt \
            else []
        for q, a in examples:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        asked = f"{context}\n\n{question}" if context else question
        return [*messages, {"role": "user", "content": asked}]

    def _chat(self, tokenizer, examples, question, context) -> str:
        if not getattr(tokenizer, "chat_template", None):
            raise InputError("--prompt-format chat: the tokenizer has no chat template")
        messages = self._messages(examples, question, context)
        return render_bounded(lambda: tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True),
            "the tokenizer's chat template")

    def _template(self, examples, question, context) -> str:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        return render_bounded(lambda: ImmutableSandboxedEnvironment().from_string(
            self.template or "").render(
                question=question, examples=[{"question": q, "answer": a} for q, a in examples],
                context=context or "", system_prompt=self.system_prompt or ""),
            self.source or "prompt template")


def load_prompt_format(spec: str, shots: int | None = None,
                       system_prompt: str | None = None) -> PromptFormat:
    """``auto``, ``plain``, ``chat`` or the path of a Jinja template file, as a
    ``PromptFormat``."""
    from pathlib import Path

    from redteam.core.untrusted import read_text_file

    if spec in ("auto", "plain", "chat"):
        return PromptFormat(spec, shots, system_prompt)
    path = Path(spec)
    if not path.exists():
        raise InputError(f"--prompt-format {spec}: not auto, plain, chat, or a template file")
    return PromptFormat("template", shots, system_prompt,
                        template=read_text_file(path, "prompt template"), source=str(path))
