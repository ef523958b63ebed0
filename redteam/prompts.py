"""The text formats shared by the probes, the unlearning methods and the demo zoo.

MUSE's KnowMem uses few-shot "Question: q\\nAnswer: a\\n\\n" prompts; the zoo trains its LM on the
same format so that the probes ask in the form the model learnt, and the unlearning methods
forget in that form too. Keeping the format in one place keeps all three in agreement.
"""

from __future__ import annotations

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
