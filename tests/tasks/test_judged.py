"""The LLM-judged tasks on the tiny path: a tiny model from a config, tiny local files, and a fake judge on
loopback that scores deterministically from the answer text."""

import json
import math
import re
import statistics

import numpy as np
import pytest

from podisco.llm_client import LLMSettings
from podisco.models import build_tiny_gpt2
from podisco.tasks.judged.judge import Judge, JudgeFormatError, parse_rating, parse_verdict
from podisco.tasks.judged.pairwise import judge_pairs, length_controlled_win_rate, win_rate
from tests.discovery.fake_llm_server import FakeLLMServer, reply
from tests.training.tiny import make_rows, make_tokenizer


def fake_rating(answer: str) -> int:
    return min(10, 1 + len(set(answer.split())))


def graded_answer(prompt: str) -> str:
    """The answer a chat grading prompt asks about: a first turn's answer, or the second answer of a second turn."""
    if "[The Start of Assistant's Answer]\n" in prompt:
        answer = prompt.split("[The Start of Assistant's Answer]\n", 1)[1]
        return answer.rsplit("\n[The End of Assistant's Answer]", 1)[0]
    return prompt.rsplit("### Assistant:\n", 1)[1].rsplit("\n<|The End of the Conversation|>", 1)[0]


def fake_judge(request: dict):
    """Ratings: 1 + distinct words of the graded answer (capped at 10). Verdicts: the longer response wins."""
    prompt = request["messages"][-1]["content"]
    if "[[A]]" in prompt:
        a = re.search(r"Response A\]\n(.*?)\n\[The End of Response A", prompt, re.S).group(1)
        b = re.search(r"Response B\]\n(.*?)\n\[The End of Response B", prompt, re.S).group(1)
        verdict = "C" if len(a) == len(b) else ("A" if len(a) > len(b) else "B")
        return reply(f"Longer is better here. [[{verdict}]]")
    return reply(f"Fine. Rating: [[{fake_rating(graded_answer(prompt))}]]")


@pytest.fixture
def judge(tmp_path):
    with FakeLLMServer(default=fake_judge) as server:
        yield Judge(LLMSettings(base_url=server.base_url, model="fake-judge"), tmp_path / "judge-cache"), server


@pytest.fixture(scope="module")
def tiny():
    tokenizer = make_tokenizer()
    return build_tiny_gpt2(len(tokenizer), n_layer=1, n_embd=16, n_head=2, n_positions=128), tokenizer


@pytest.mark.parametrize(
    ("reply_text", "message"),
    [("no rating at all", "found 0"), ("[[3]] then [[4]]", "found 2"), ("[[11]]", "outside"), ("[[x]]", "found 0")],
)
def test_the_rating_parser_rejects_malformed_replies(reply_text, message):
    with pytest.raises(JudgeFormatError, match=message):
        parse_rating(reply_text)
    assert parse_rating("Rating: [[7]]") == 7.0 and parse_rating("[[ 8.5 ]]") == 8.5
    assert parse_verdict("B is clearer. [[B]]") == "B"
    with pytest.raises(JudgeFormatError):
        parse_verdict("[[A]] or maybe [[B]]")


def test_chat_task_end_to_end_and_the_judge_cache(tiny, judge, tmp_path):
    from podisco.tasks.judged.chat import evaluate_chat, grade, load_questions

    model, tokenizer = tiny
    questions = tmp_path / "questions.jsonl"
    rows = [
        {"question_id": 1, "category": "writing", "turns": ["the movie was", "and the plot"]},
        {"question_id": 2, "category": "roleplay", "turns": ["a good story"]},
    ]
    questions.write_text("\n".join(json.dumps(r) for r in rows))
    the_judge, server = judge
    result = evaluate_chat(model, tokenizer, load_questions(str(questions)), the_judge, max_new_tokens=8)
    assert result.graded == 3 and set(result.per_turn) == {1, 2} and 1 <= result.score <= 10
    # the fake judge's grades, from the answers: both first turns, then the one second turn
    per_turn = {1: [fake_rating(a[0]) for a in result.answers], 2: [fake_rating(result.answers[0][1])]}
    ratings = per_turn[1] + per_turn[2]
    mean, se = statistics.mean(ratings), statistics.stdev(ratings) / math.sqrt(3)
    assert result.per_turn == pytest.approx({t: statistics.mean(r) for t, r in per_turn.items()})
    assert result.score == pytest.approx(mean) and result.stderr == pytest.approx(se)
    assert result.ci95 == pytest.approx((mean - 1.96 * se, mean + 1.96 * se))
    asked = len(server.requests)
    again = evaluate_chat(model, tokenizer, load_questions(str(questions)), the_judge, max_new_tokens=8)
    assert len(server.requests) == asked and again.score == result.score  # every grade came from the cache
    assert the_judge.stats.cache_hits == 3
    assert all("response_format" not in r.json for r in server.requests)  # prose replies, not JSON mode
    # answers graded differently, so the standard error is not 0: question 1 rated 4 then 2, question 2 rated 5
    graded = grade(the_judge, load_questions(str(questions)), [["a b c", "a a"], ["one two three four"]])
    se = math.sqrt(7 / 3) / math.sqrt(3)  # sample sd of (4, 2, 5) over sqrt(3)
    assert graded.per_turn == {1: 4.5, 2: 2.0} and graded.score == pytest.approx(11 / 3)
    assert graded.stderr == pytest.approx(se) and graded.ci95 == pytest.approx((11 / 3 - 1.96 * se, 11 / 3 + 1.96 * se))


def test_position_randomisation_cancels_a_judge_that_always_prefers_the_first(tmp_path):
    with FakeLLMServer(default=lambda request: reply("The first one. [[A]]")) as server:
        judge = Judge(LLMSettings(base_url=server.base_url, model="biased"), tmp_path / "cache")
        prefs = judge_pairs(judge, [f"task {i}" for i in range(200)], ["mine"] * 200, ["theirs"] * 200, seed=1)
    rate, se = win_rate(prefs)
    assert abs(rate - 0.5) < 0.1 and se > 0


def test_length_controlled_win_rate_removes_a_pure_length_effect():
    rng = np.random.default_rng(0)
    n = 400
    ours = rng.normal(400, 100, n).astype(int)
    theirs = rng.normal(300, 100, n).astype(int)
    d = ours - theirs
    # Length alone drives the judge: at equal length, a coin flip.
    wins = rng.random(n) < 1 / (1 + np.exp(-3 * np.tanh(d / d.std())))
    prefs = [float(w) for w in wins]
    raw, _ = win_rate(prefs)
    lc, lc_se = length_controlled_win_rate(prefs, ours.tolist(), theirs.tolist())
    assert raw > 0.7 and abs(lc - 0.5) < 0.1 and 0 < lc_se < 0.1


def test_alpaca_task_with_reference_outputs(tiny, judge, tmp_path):
    from podisco.tasks.judged.alpaca import answer_instructions, evaluate_alpaca, load_instructions

    model, tokenizer = tiny
    path = tmp_path / "alpaca.jsonl"
    # short references the model's answers can beat, and long ones they cannot
    rows = [{"instruction": f"the plot {i}", "output": "good" if i % 2 else "good " * 50} for i in range(6)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    the_judge, _ = judge
    rate = evaluate_alpaca(model, tokenizer, load_instructions(str(path)), the_judge, max_new_tokens=6)
    outputs = answer_instructions(model, tokenizer, rows, max_new_tokens=6)  # greedy: the answers judged above
    mine, theirs = [len(o) for o in outputs], [len(r["output"]) for r in rows]
    # the fake judge prefers the longer response in either position: 1 a win, 0 a loss, 0.5 a tie
    prefs = [0.5 if m == t else float(m > t) for m, t in zip(mine, theirs, strict=True)]
    assert prefs[0::2] == [0.0, 0.0, 0.0]  # the long references win
    assert rate.judged == 6 and rate.against == "reference outputs"
    assert rate.win_rate == pytest.approx(statistics.mean(prefs))
    assert rate.stderr == pytest.approx(statistics.stdev(prefs) / math.sqrt(6))
    lc, lc_se = length_controlled_win_rate(prefs, mine, theirs)
    assert (rate.length_controlled, rate.lc_stderr) == pytest.approx((lc, lc_se))


def test_tldr_task_trains_on_pairs_with_the_post_in_the_prompt(tiny, judge, tmp_path):
    from podisco.data import tokenize_pairs, validate_rows
    from podisco.tasks.judged.tldr import evaluate_tldr, load_pairs, load_posts
    from podisco.training.config import TrainConfig
    from podisco.training.preference import train_preference

    _, tokenizer = tiny
    pairs_file, posts_file = tmp_path / "pairs.jsonl", tmp_path / "posts.jsonl"
    rows = make_rows(16, seed=3)
    pairs_file.write_text("\n".join(json.dumps({**r, "prompt": "POST: " + r["prompt"]}) for r in rows))
    posts_file.write_text("\n".join(json.dumps({"prompt": f"POST: the movie {i}", "label": "good"}) for i in range(5)))
    pairs = load_pairs(str(pairs_file), fraction=0.5)
    assert len(pairs) == 8 and all(p["prompt"].startswith("POST: ") and p["prompt"].endswith("TL;DR:") for p in pairs)
    examples, _ = tokenize_pairs(validate_rows(pairs)[0], tokenizer, 64)
    sft = build_tiny_gpt2(len(tokenizer), n_layer=1, n_embd=16, n_head=2, n_positions=128)
    policy = build_tiny_gpt2(len(tokenizer), n_layer=1, n_embd=16, n_head=2, n_positions=128)
    config = TrainConfig(output_dir=str(tmp_path / "run"), batch_size=4, max_steps=2, precision="fp32")
    train_preference(config, policy, examples, tokenizer.pad_token_id, tokenizer)
    the_judge, _ = judge
    rates = evaluate_tldr(policy, tokenizer, load_posts(str(posts_file)), the_judge, sft, max_new_tokens=6)
    assert [r.against for r in rates] == ["human reference", "SFT model"] and all(r.judged == 5 for r in rates)


def test_cli_chat_against_a_loopback_judge(tiny, tmp_path):
    from podisco.cli.main import main

    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "turns": ["the movie", "and"]}) + "\n")
    with FakeLLMServer(default=fake_judge) as server:
        argv = ["task", "chat", "--model", str(tmp_path / "model"), "--questions", str(questions)]
        argv += ["--judge-base-url", server.base_url, "--judge-model", "fake", "--judge-cache", str(tmp_path / "c")]
        argv += ["--max-new-tokens", "5"]
        assert main(argv) == 0
        assert len(server.requests) == 2


def test_bad_question_rows_are_named(tmp_path):
    from podisco.errors import PodiscoError
    from podisco.tasks.judged.chat import load_questions

    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"turns": ["ok"]}) + "\n" + json.dumps({"turns": "not a list"}) + "\n")
    with pytest.raises(PodiscoError, match="row 1"):
        load_questions(str(path))


def test_engine_vllm_without_vllm_is_a_clear_error(tiny, tmp_path, capsys):
    import importlib.util

    from podisco.cli.main import main

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here")
    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "turns": ["the movie"]}) + "\n")
    argv = ["task", "chat", "--model", str(tmp_path / "model"), "--questions", str(questions), "--engine", "vllm"]
    assert main(argv + ["--judge-base-url", "http://127.0.0.1:9/v1"]) == 2  # a loopback judge needs no key
    assert "vLLM is not installed" in capsys.readouterr().err
