"""``llm``: the paper's method over an OpenAI-compatible endpoint.

``paper`` mode keeps one growing conversation with the paper's feedback messages; ``archive`` mode sends a
fresh digest of the archive per request (top entries, diverse entries, shapes, training dynamics, recent
errors), so long runs never overflow the context. The conversation is persisted in the archive's message log,
so ``--resume`` continues it instead of starting over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from podisco.discovery.archive import Attempt
from podisco.discovery.proposers import prompts
from podisco.discovery.proposers.base import Context, Proposal
from podisco.llm_client import ChatClient, LLMError, LLMSettings

if TYPE_CHECKING:  # the server is built by loop.make_proposer; a plain LLM run never imports it
    from podisco.local_llm import LocalLLMServer


class LLMProposer:
    """``client`` asks the model; or ``local`` (a ``LocalLLMServer`` not yet started) and ``settings``: the
    server starts at the first proposal, so a run that fails while preparing never loads the model, and
    ``close()`` (run_discovery calls it whatever happens) stops it."""

    kind = "llm"

    def __init__(
        self,
        client: ChatClient | None = None,
        mode: str = "paper",
        top_k: int = 5,
        diverse_k: int = 3,
        local: LocalLLMServer | None = None,
        settings: LLMSettings | None = None,
    ) -> None:
        if mode not in ("paper", "archive"):
            raise ValueError(f"prompt mode must be 'paper' or 'archive', got {mode!r}")
        if client is None and (local is None or settings is None):
            raise ValueError("an LLM proposer needs a client, or a local server and the settings to ask it with")
        self.client, self.mode, self.top_k, self.diverse_k = client, mode, top_k, diverse_k
        self.local, self.settings = local, settings

    def _client(self) -> ChatClient:
        if self.client is None:
            assert self.local is not None and self.settings is not None
            self.local.start()
            endpoint = {"base_url": self.local.base_url, "model": self.local.model_name}
            self.client = ChatClient(replace(self.settings, **endpoint))
        return self.client

    def close(self) -> None:
        if self.local is not None:
            self.local.stop()

    # the conversation lives in the archive's message log
    def _conversation(self, context: Context) -> list[dict[str, str]]:
        return [{"role": m["role"], "content": m["content"]} for m in context.archive.messages(context.run_id)]

    def _say(self, context: Context, role: str, content: str) -> None:
        context.archive.add_message(context.run_id, context.generation, role, content)

    def propose(self, context: Context) -> Proposal:
        system = prompts.system_prompt(context.task.kind, context.task.describe(), context.baseline)
        if self.mode == "archive":
            messages = [{"role": "system", "content": system}, {"role": "user", "content": self._digest(context)}]
        else:
            conversation = self._conversation(context)
            if not conversation:
                self._say(context, "system", system)
                evaluated = context.archive.attempts(context.run_id, "evaluated")
                self._say(context, "user", prompts.first_message(evaluated))
            elif conversation[-1]["role"] == "assistant":
                self._say(context, "user", prompts.next_request(context.slot == 0))
            messages = self._conversation(context)
        try:
            reply = self._client().chat(messages, schema=prompts.REPLY_SCHEMA)
        except LLMError as error:
            return Proposal(error=f"the LLM endpoint failed: {error}")
        call = {
            "prompt": reply.prompt_tokens,
            "completion": reply.completion_tokens,
            "requests": reply.attempts,
            "latency_s": round(reply.latency_s, 3),
            "mode": reply.mode,
            "finish_reason": reply.finish_reason,
        }
        if self.mode == "paper":
            self._say(context, "assistant", reply.text)
        return Proposal(reply=reply.text, llm_tokens=call)

    def feedback(self, context: Context, attempts: Sequence[Attempt]) -> None:
        """Paper mode: one user message with the outcome of each of the generation's proposals."""
        if self.mode != "paper" or not attempts:
            return
        conversation = self._conversation(context)
        if not conversation or conversation[-1]["role"] != "assistant":
            return  # already fed back (a resumed run), or nothing asked yet
        best = context.archive.best(context.run_id)
        best_fitness = best[0].fitness if best else None
        lines = [prompts.feedback_message(a, best_fitness) for a in attempts]
        self._say(context, "user", "\n".join(lines) + "\n\n" + prompts.next_request(True))

    def _digest(self, context: Context) -> str:
        from podisco.discovery.proposers.selection import diverse_entries

        archive, run = context.archive, context.run_id
        top = archive.best(run, self.top_k)
        evaluated = archive.attempts(run, "evaluated")
        diverse = diverse_entries(evaluated, top, self.diverse_k)
        everything = archive.attempts(run)
        errors = [a for a in everything if a.status in ("invalid", "failed", "duplicate")][-5:]
        proposed = [a.name for a in everything if a.generation == context.generation]
        seeds = context.task.seed_archive()
        example = prompts.example_reply(*next(iter(seeds.items()))) if seeds else ""
        return prompts.archive_digest(top, diverse, errors, proposed, example)
