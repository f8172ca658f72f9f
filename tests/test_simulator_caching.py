"""Prompt caching as the API reports it in `usage.prompt_tokens_details.cached_tokens`.

A prompt prefix of 1,024 tokens or more seen recently on the same model is reported as
cached, in steps of 128 tokens past the first 1,024; unused prefixes expire; `POST
/sim/reset` forgets them. A client that prices cached tokens, or counts on them, is checked
against those numbers.
"""

import httpx2
import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from tests import test_simulator as shared
from tests.support import eventually
from tests.test_simulator import configure
from tierq_simulator.caching import PromptCache

# The simulator fixtures of tests/test_simulator.py: one simulator process for this module.
base_url = shared.base_url
sim_client = shared.sim_client
client = shared.client
fresh_simulator = shared.fresh_simulator

LONG_INSTRUCTIONS = "The quick brown fox jumps over the lazy dog. " * 200  # ~2,000 tokens


def conversation(
    question: str, instructions: str = LONG_INSTRUCTIONS
) -> list[ChatCompletionMessageParam]:
    return [{"role": "system", "content": instructions}, {"role": "user", "content": question}]


def cached(completion: ChatCompletion) -> int:
    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details is not None
    return completion.usage.prompt_tokens_details.cached_tokens or 0


def create(
    client: openai.OpenAI, messages: list[ChatCompletionMessageParam], model: str = "gpt-4o"
) -> ChatCompletion:
    return client.chat.completions.create(model=model, messages=messages, max_tokens=5)


def test_a_repeated_prompt_is_cached_in_steps_of_128_past_1024(client: openai.OpenAI) -> None:
    messages = conversation("What does the fox do?")

    first = create(client, messages)
    again = create(client, messages)

    assert cached(first) == 0
    assert again.usage is not None
    prompt = again.usage.prompt_tokens
    assert prompt > 1024 + 128
    assert cached(again) == 1024 + 128 * ((prompt - 1024) // 128)


def test_a_shared_prefix_is_cached_up_to_where_the_prompts_differ(client: openai.OpenAI) -> None:
    create(client, conversation("What does the fox do?"))

    other_question = create(client, conversation("And the dog, what does it do all day long?"))
    other_instructions = create(
        client, conversation("What does the fox do?", "Be brief. " + LONG_INSTRUCTIONS)
    )

    assert other_question.usage is not None
    hit = cached(other_question)
    assert hit % 128 == 0
    assert 1024 <= hit < other_question.usage.prompt_tokens
    assert hit >= other_question.usage.prompt_tokens - 128 - 40  # all but the question's tail
    assert cached(other_instructions) == 0  # caching needs an exact prefix


def test_short_prompts_are_never_cached(client: openai.OpenAI) -> None:
    messages = conversation("Hi", instructions="Be brief. " * 50)  # ~150 tokens

    create(client, messages)
    again = create(client, messages)

    assert cached(again) == 0


def test_each_model_has_its_own_cache(client: openai.OpenAI) -> None:
    messages = conversation("What does the fox do?")
    create(client, messages, model="gpt-4o")

    other_model = create(client, messages, model="gpt-4.1-mini")
    same_model = create(client, messages, model="gpt-4o")

    assert cached(other_model) == 0
    assert cached(same_model) > 0


def test_a_streamed_answer_reports_cached_tokens_in_its_usage_chunk(client: openai.OpenAI) -> None:
    messages = conversation("What does the fox do?")
    expected = cached(create(client, messages)) or cached(create(client, messages))

    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )

    usage = chunks[-1].usage
    assert usage is not None
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == expected > 0


def test_sim_reset_forgets_cached_prompts(client: openai.OpenAI, sim_client: httpx2.Client) -> None:
    messages = conversation("What does the fox do?")
    create(client, messages)
    assert cached(create(client, messages)) > 0

    sim_client.post("/sim/reset").raise_for_status()

    assert cached(create(client, messages)) == 0


def test_a_prefix_unused_for_its_time_to_live_expires(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    # Given prefixes that live half a second without use
    configure(sim_client, prompt_cache_ttl_seconds=0.5)
    messages = conversation("What does the fox do?")
    create(client, messages)
    assert cached(create(client, messages)) > 0  # used again in time: still there

    # When nobody asks for longer than that, it is gone (each look uses it again, so the
    # looks are spaced wider than the time to live)
    eventually(
        lambda: cached(create(client, messages)),
        until=lambda hit: hit == 0,
        what="the cached prefix to expire",
        timeout=5,
        interval=0.75,
    )


def test_the_cache_keeps_at_most_its_cap_dropping_the_least_recently_used() -> None:
    # Unit level, with a fake clock: memory stays bounded however many prompts pass.
    now = [0.0]
    cache = PromptCache(ttl_seconds=600, max_prefixes=8, clock=lambda: now[0])  # 2 prompts
    prompts = [[{"role": "user", "content": f"{n} " + LONG_INSTRUCTIONS}] for n in range(3)]

    hits = []
    for messages in (*prompts, prompts[2], prompts[0]):
        now[0] += 1
        hits.append(cache.lookup_and_store("gpt-4o", messages, None, 1_500))

    assert len(cache) == 8  # 4 boundaries (1,024 to 1,408) for each of 2 prompts
    assert hits[:3] == [0, 0, 0]
    assert hits[3] == 1408  # 1,024 + 3 x 128, the longest boundary below 1,500
    assert hits[4] == 0  # the oldest prompt was dropped to make room


def test_the_time_to_live_counts_from_the_last_use() -> None:
    now = [0.0]
    cache = PromptCache(ttl_seconds=300, clock=lambda: now[0])
    messages = [{"role": "user", "content": LONG_INSTRUCTIONS}]

    cache.lookup_and_store("gpt-4o", messages, None, 1_500)
    now[0] = 299
    kept = cache.lookup_and_store("gpt-4o", messages, None, 1_500)
    now[0] = 299 + 299
    still = cache.lookup_and_store("gpt-4o", messages, None, 1_500)
    now[0] = 598 + 300
    expired = cache.lookup_and_store("gpt-4o", messages, None, 1_500)

    assert (kept, still, expired) == (1408, 1408, 0)
