"""The chat task, MT-Bench style (the paper's discovery fitness, docs/paper.md §1/§6): multi-turn questions answered
by the trained model with its chat template, each turn graded 1-10 by an LLM judge (single-answer grading).
Fitness = mean rating over turns and questions, with a 95% confidence interval.

Questions: the MT-Bench prompts from the hub when online (``HuggingFaceH4/mt_bench_prompts``) or any local JSONL
of the same shape (``question_id``, ``category``, ``turns`` or ``prompt``: a list of strings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from podisco.data import load_rows
from podisco.errors import PodiscoError
from podisco.stats import Estimate, estimate
from podisco.tasks.judged.generation import chat_prompt, generate
from podisco.tasks.judged.judge import Judge

NAME = "chat"
VERSION = "1"
HUB_QUESTIONS = "HuggingFaceH4/mt_bench_prompts"

JUDGE_SYSTEM = "You are a careful, impartial judge of AI assistants' answers."
_FIRST_TURN = """Rate the assistant's answer to the user's question below for helpfulness, relevance, accuracy,
depth, creativity and level of detail. Explain briefly, be as objective as possible, then give your rating on a
scale of 1 to 10 in exactly this format: [[rating]], for example: Rating: [[5]].

[Question]
{question}

[The Start of Assistant's Answer]
{answer}
[The End of Assistant's Answer]"""
_SECOND_TURN = """Rate the assistant's answer to the user's SECOND question in the conversation below, with the
first exchange as context, for helpfulness, relevance, accuracy, depth, creativity and level of detail. Explain
briefly, then give your rating on a scale of 1 to 10 in exactly this format: [[rating]].

<|The Start of the Conversation|>
### User:
{q1}
### Assistant:
{a1}
### User:
{q2}
### Assistant:
{a2}
<|The End of the Conversation|>"""


@dataclass
class ChatQuestion:
    question_id: str
    category: str
    turns: list[str]


@dataclass
class ChatResult:
    score: float  # mean rating over graded turns
    stderr: float | None  # of the mean rating (podisco.stats: None for a single rating)
    graded: int
    malformed: int
    per_turn: dict[int, float] = field(default_factory=dict)
    answers: list[list[str]] = field(default_factory=list)

    @property
    def ci95(self) -> tuple[float, float] | None:
        return Estimate(self.score, self.stderr, self.graded).ci95


def load_questions(source: str = HUB_QUESTIONS, limit: int = 0) -> list[ChatQuestion]:
    rows = load_rows(source, "train")
    questions = []
    for i, row in enumerate(rows):
        turns = row.get("turns") or row.get("prompt")
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t for t in turns):
            raise PodiscoError(f"questions {source}: row {i}: 'turns' (or 'prompt') must be a non-empty list of text")
        questions.append(ChatQuestion(str(row.get("question_id", i)), str(row.get("category", "")), turns))
    return questions[:limit] if limit else questions


def answer(
    model, tokenizer, questions: list[ChatQuestion], max_new_tokens: int = 256, seed: int = 0
) -> list[list[str]]:
    """Every turn answered in order, each with the conversation so far (batched per turn index)."""
    answers: list[list[str]] = [[] for _ in questions]
    for turn in range(max(len(q.turns) for q in questions)):
        todo = [i for i, q in enumerate(questions) if turn < len(q.turns)]
        prompts = []
        for i in todo:
            messages = []
            for t in range(turn):
                messages += [
                    {"role": "user", "content": questions[i].turns[t]},
                    {"role": "assistant", "content": answers[i][t]},
                ]
            messages.append({"role": "user", "content": questions[i].turns[turn]})
            prompts.append(chat_prompt(tokenizer, messages))
        for i, text in zip(todo, generate(model, tokenizer, prompts, max_new_tokens, seed), strict=True):
            answers[i].append(text)
    return answers


def grade(judge: Judge, questions: list[ChatQuestion], answers: list[list[str]]) -> ChatResult:
    ratings: dict[int, list[float]] = {}
    for q, a in zip(questions, answers, strict=True):
        for turn in range(min(len(q.turns), len(a), 2)):
            if turn == 0:
                prompt = _FIRST_TURN.format(question=q.turns[0], answer=a[0])
            else:
                prompt = _SECOND_TURN.format(q1=q.turns[0], a1=a[0], q2=q.turns[1], a2=a[1])
            rating = judge.rating(JUDGE_SYSTEM, prompt)
            if rating is not None:
                ratings.setdefault(turn + 1, []).append(rating)
    values = [r for rs in ratings.values() for r in rs]
    if not values:
        raise PodiscoError("the judge gave no usable rating (every reply was malformed or missing)")
    rating = estimate(values)
    return ChatResult(
        rating.mean,
        rating.se,
        len(values),
        judge.stats.malformed,
        {t: sum(rs) / len(rs) for t, rs in sorted(ratings.items())},
        answers,
    )


def evaluate_chat(
    model, tokenizer, questions: list[ChatQuestion], judge: Judge, max_new_tokens: int = 256
) -> ChatResult:
    return grade(judge, questions, answer(model, tokenizer, questions, max_new_tokens))
