"""Configuration: defaults, the environment variables that set them, and refusals that name them.

Every test starts from an environment without `TIERQ_*` or `OPENAI_*` variables, in an empty
working directory (so no developer's `.env` is read), with `get_settings`' cache empty.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from tierq.core.catalog import SHIPPED_MODELS
from tierq.core.errors import ConfigurationError, TierqError
from tierq.core.settings import RetrySettings, Settings, TierSettings, default_tiers, get_settings


@pytest.fixture(autouse=True)
def clean_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name.upper().startswith(("TIERQ_", "OPENAI_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def configuration_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> ConfigurationError:
    """`get_settings()` with `env` set, which must fail; the error it raised."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as caught:
        get_settings()
    return caught.value


# --- defaults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "default"),
    [
        ("openai_api_key", None),
        ("openai_base_url", None),
        ("request_timeout_seconds", 120.0),
        ("result_ttl_seconds", 86_400),
        ("visibility_timeout_seconds", 3_600),
        ("max_request_bytes", 1024 * 1024),
        ("queue_prefix", "tierq."),
        ("key_prefix", "tierq:"),
        ("log_content", False),
        ("log_format", "auto"),
        ("log_level", "INFO"),
    ],
)
def test_a_setting_left_unset_has_its_default(field: str, default: object) -> None:
    assert getattr(Settings(_env_file=None), field) == default


def test_the_default_redis_is_database_zero_on_localhost() -> None:
    redis_url = Settings(_env_file=None).redis_url

    assert isinstance(redis_url, SecretStr)
    assert redis_url.get_secret_value() == "redis://127.0.0.1:6379/0"


def test_the_default_retry_policy_is_six_attempts_with_capped_jittered_back_off() -> None:
    assert Settings(_env_file=None).retry == RetrySettings(
        max_attempts=6, backoff_base_seconds=1, backoff_max_seconds=60, retry_after_max_seconds=120
    )


def test_the_default_tier_table_is_fast_standard_and_reasoning() -> None:
    tiers = Settings(_env_file=None).tiers

    assert tiers == {
        "fast": TierSettings(models=["gpt-4o-mini", "gpt-4.1-nano", "gpt-4.1-mini"]),
        "standard": TierSettings(models=["gpt-4o", "gpt-4.1"]),
        "reasoning": TierSettings(
            models=["o4-mini", "o3", "gpt-5-nano", "gpt-5-mini", "gpt-5"],
            reasoning=True,
            concurrency=50,
            request_timeout_seconds=600,
        ),
    }
    # The table itself lists no model: the catalog names each shipped model's tier.
    assert all(tier.models == [] for tier in default_tiers().values())


def test_a_tier_defaults_to_non_reasoning_100_in_flight_and_no_rate_limit() -> None:
    tier = TierSettings(models=["m"])

    assert (tier.reasoning, tier.concurrency, tier.rate_limit) == (False, 100, None)


def test_each_tier_has_its_own_queue_under_the_prefix() -> None:
    settings = Settings(_env_file=None, queue_prefix="acme.")

    assert settings.queue_for("fast") == "acme.fast"


def test_the_settings_know_each_models_tier() -> None:
    settings = Settings(_env_file=None)

    assert settings.tier_of("o3") == "reasoning"
    assert settings.tier_of("gpt-4o") == "standard"
    assert settings.tier_of("gpt-3.5-turbo") is None
    assert settings.known_models() == sorted(SHIPPED_MODELS)


def test_settings_cannot_be_changed_once_read() -> None:
    settings = Settings(_env_file=None)

    with pytest.raises(ValidationError):
        settings.result_ttl_seconds = 60  # type: ignore[misc]


# --- reading the environment --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "field", "parsed"),
    [
        ("TIERQ_RESULT_TTL_SECONDS", "600", "result_ttl_seconds", 600),
        ("TIERQ_REQUEST_TIMEOUT_SECONDS", "30.5", "request_timeout_seconds", 30.5),
        ("TIERQ_VISIBILITY_TIMEOUT_SECONDS", "7200", "visibility_timeout_seconds", 7200),
        ("TIERQ_MAX_REQUEST_BYTES", "2048", "max_request_bytes", 2048),
        ("TIERQ_QUEUE_PREFIX", "acme.", "queue_prefix", "acme."),
        ("TIERQ_KEY_PREFIX", "acme:", "key_prefix", "acme:"),
        ("TIERQ_LOG_CONTENT", "true", "log_content", True),
        ("TIERQ_LOG_FORMAT", "json", "log_format", "json"),
        ("TIERQ_LOG_LEVEL", "DEBUG", "log_level", "DEBUG"),
        (
            "OPENAI_BASE_URL",
            "http://127.0.0.1:8000/v1",
            "openai_base_url",
            "http://127.0.0.1:8000/v1",
        ),
    ],
)
def test_a_setting_is_read_from_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str, parsed: object
) -> None:
    monkeypatch.setenv(variable, value)

    assert getattr(get_settings(), field) == parsed


def test_a_nested_setting_is_read_from_a_double_underscore_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIERQ_RETRY__MAX_ATTEMPTS", "8")

    assert get_settings().retry == RetrySettings(max_attempts=8)


def test_a_nested_group_is_read_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERQ_RETRY", '{"max_attempts": 3, "backoff_max_seconds": 10}')

    assert get_settings().retry == RetrySettings(max_attempts=3, backoff_max_seconds=10)


def test_the_tier_table_is_read_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    table = {
        "cheap": {"models": ["gpt-4o-mini"], "rate_limit": "600/m"},
        "think": {"models": ["o3", "o4-mini"], "reasoning": True, "concurrency": 8},
    }
    monkeypatch.setenv("TIERQ_TIERS", json.dumps(table))

    settings = get_settings()

    assert settings.tiers == {
        "cheap": TierSettings(models=["gpt-4o-mini"], rate_limit="600/m"),
        "think": TierSettings(models=["o3", "o4-mini"], reasoning=True, concurrency=8),
    }
    assert settings.tier_of("o4-mini") == "think"


@pytest.mark.parametrize("variable", ["OPENAI_API_KEY", "TIERQ_OPENAI_API_KEY"])
def test_the_api_key_is_read_as_a_secret(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    monkeypatch.setenv(variable, "sk-live-do-not-print")

    key = get_settings().openai_api_key

    assert isinstance(key, SecretStr)
    assert key.get_secret_value() == "sk-live-do-not-print"


def test_secrets_never_appear_in_the_printed_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-do-not-print")
    monkeypatch.setenv("TIERQ_REDIS_URL", "redis://:hunter2@redis.internal:6379/0")

    settings = get_settings()

    for text in (repr(settings), str(settings), repr(settings.openai_api_key)):
        assert "sk-live-do-not-print" not in text
        assert "hunter2" not in text
    assert str(settings.openai_api_key) == "**********"
    assert settings.redis_url.get_secret_value() == "redis://:hunter2@redis.internal:6379/0"


def test_settings_are_read_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    first = get_settings()
    monkeypatch.setenv("TIERQ_RESULT_TTL_SECONDS", "600")

    assert get_settings() is first
    assert first.result_ttl_seconds == 86_400
    get_settings.cache_clear()
    assert get_settings().result_ttl_seconds == 600


def test_a_dotenv_file_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TIERQ_RESULT_TTL_SECONDS=120\nOPENAI_API_KEY=sk-from-file\n")

    settings = get_settings()

    assert settings.result_ttl_seconds == 120
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-from-file"


def test_the_environment_wins_over_the_dotenv_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("TIERQ_RESULT_TTL_SECONDS=120\n")
    monkeypatch.setenv("TIERQ_RESULT_TTL_SECONDS", "300")

    assert get_settings().result_ttl_seconds == 300


def test_settings_built_without_a_dotenv_file_ignore_it(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TIERQ_RESULT_TTL_SECONDS=120\n")

    assert Settings(_env_file=None).result_ttl_seconds == 86_400


# --- bad values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("TIERQ_RESULT_TTL_SECONDS", "a day", "valid integer"),
        ("TIERQ_RESULT_TTL_SECONDS", "0", "greater than or equal to 1"),
        ("TIERQ_REQUEST_TIMEOUT_SECONDS", "0", "greater than 0"),
        ("TIERQ_VISIBILITY_TIMEOUT_SECONDS", "30", "greater than or equal to 60"),
        ("TIERQ_MAX_REQUEST_BYTES", "100", "greater than or equal to 1024"),
        ("TIERQ_LOG_LEVEL", "verbose", "should match pattern"),
        ("TIERQ_LOG_FORMAT", "xml", "should match pattern"),
        ("TIERQ_LOG_CONTENT", "perhaps", "valid boolean"),
        ("TIERQ_RETRY__MAX_ATTEMPTS", "0", "greater than or equal to 1"),
        ("TIERQ_RETRY__RETRY_AFTER_MAX_SECONDS", "0", "greater than 0"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, complaint: str
) -> None:
    error = configuration_error(monkeypatch, **{variable: value})

    assert str(error).startswith("invalid settings:")
    line = next(line for line in str(error).splitlines() if line.strip().startswith(variable))
    assert line.strip().startswith(f"{variable}: ")
    assert complaint in line


def test_every_bad_value_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    error = configuration_error(monkeypatch, TIERQ_RESULT_TTL_SECONDS="-1", TIERQ_LOG_LEVEL="LOUD")

    assert "TIERQ_RESULT_TTL_SECONDS: " in str(error)
    assert "TIERQ_LOG_LEVEL: " in str(error)


def test_a_configuration_error_is_a_tierq_error_without_pydantics_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error = configuration_error(monkeypatch, TIERQ_RESULT_TTL_SECONDS="abc")

    assert isinstance(error, TierqError)
    assert error.__cause__ is None
    assert error.__suppress_context__


def test_a_bad_value_in_a_tier_is_refused_naming_the_tier_and_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = {"fast": {"models": ["gpt-4o-mini"], "rate_limit": "10 per day"}}

    error = configuration_error(monkeypatch, TIERQ_TIERS=json.dumps(table))

    assert "TIERQ_TIERS__FAST__RATE_LIMIT: " in str(error)
    assert "'10 per day' is not a Celery rate limit" in str(error)


def test_malformed_json_in_the_tier_table_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error = configuration_error(monkeypatch, TIERQ_TIERS="{fast: [gpt-4o-mini]}")

    assert "TIERQ_TIERS" in str(error)


def test_a_misspelt_variable_in_the_dotenv_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TIERQ_RESULT_TTL=600\n")

    with pytest.raises(ConfigurationError) as caught:
        get_settings()

    assert "TIERQ_RESULT_TTL: unknown setting" in str(caught.value)
    assert "did you mean TIERQ_RESULT_TTL_SECONDS?" in str(caught.value)


def test_a_misspelt_variable_in_the_dotenv_file_is_named_as_written(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TIERQ_RESULT_TTL=600\n")

    with pytest.raises(ConfigurationError) as caught:
        get_settings()

    assert "TIERQ_TIERQ_" not in str(caught.value)
    assert "  TIERQ_RESULT_TTL: unknown setting" in str(caught.value)


def test_a_misspelt_tierq_environment_variable_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error = configuration_error(monkeypatch, TIERQ_RETRY_MAX_ATTEMPTS="8")

    assert "TIERQ_RETRY_MAX_ATTEMPTS" in str(error)


# --- the tier table's rules ---------------------------------------------------------------------


def test_a_model_listed_in_two_tiers_is_refused() -> None:
    tiers = {
        "standard": TierSettings(models=["gpt-4o"]),
        "premium": TierSettings(models=["o3", "gpt-4o"]),
    }

    with pytest.raises(
        ValidationError, match="model 'gpt-4o' is in tiers 'standard' and 'premium'"
    ):
        Settings(tiers=tiers, _env_file=None)


def test_a_model_listed_in_two_tiers_by_the_environment_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = {"a": {"models": ["gpt-4o"]}, "b": {"models": ["gpt-4o"]}}

    error = configuration_error(monkeypatch, TIERQ_TIERS=json.dumps(table))

    assert "TIERQ_TIERS: Value error, model 'gpt-4o' is in tiers 'a' and 'b'" in str(error)


def test_an_empty_tier_table_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least one tier is needed"):
        Settings(tiers={}, _env_file=None)


@pytest.mark.parametrize("name", ["Fast", "1st", "fast tier", "", "t" * 33])
def test_a_tier_name_that_is_not_a_lowercase_identifier_is_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="must match"):
        Settings(tiers={name: TierSettings(models=["gpt-4o"])}, _env_file=None)


@pytest.mark.parametrize("name", ["fast", "tier-2", "a_b", "t" * 32])
def test_a_lowercase_tier_name_is_accepted(name: str) -> None:
    assert list(Settings(tiers={name: {"models": ["m"]}}, _env_file=None).tiers) == [name]


def test_a_tier_given_an_empty_model_list_is_refused() -> None:
    with pytest.raises(ValidationError, match="list at least one model"):
        TierSettings(models=[])


def test_a_tier_that_serves_no_model_is_refused() -> None:
    # Neither its own `models` nor any catalog entry's `tier` gives it one.
    with pytest.raises(ValidationError, match="tier 'bulk' serves no model"):
        Settings(tiers={"fast": {"models": ["gpt-4o-mini"]}, "bulk": {}}, _env_file=None)


@pytest.mark.parametrize("concurrency", [0, 1001])
def test_a_tier_concurrency_outside_1_to_1000_is_refused(concurrency: int) -> None:
    with pytest.raises(ValidationError):
        TierSettings(models=["m"], concurrency=concurrency)


@pytest.mark.parametrize("rate_limit", ["600/m", "10/s", "5/h", "100", "2.5/s"])
def test_a_rate_limit_in_celerys_grammar_is_accepted(rate_limit: str) -> None:
    assert TierSettings(models=["m"], rate_limit=rate_limit).rate_limit == rate_limit


@pytest.mark.parametrize("rate_limit", ["10/d", "fast", "/m", "10/min", "-1/s", ""])
def test_a_rate_limit_outside_celerys_grammar_is_refused(rate_limit: str) -> None:
    with pytest.raises(ValidationError, match="is not a Celery rate limit"):
        TierSettings(models=["m"], rate_limit=rate_limit)


def test_an_unknown_tier_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TierSettings(models=["m"], queue="x")  # type: ignore[call-arg]


# --- redelivery must not overlap a live job -----------------------------------------------------


# One tier whose calls use the global timeout, so the arithmetic below is the global one.
ONE_TIER = {"fast": TierSettings(models=["gpt-4o-mini"])}


def test_a_visibility_timeout_not_longer_than_a_call_plus_the_longest_wait_is_refused() -> None:
    # A 120 s call plus a retry-after of up to 120 s.
    with pytest.raises(ValidationError) as caught:
        Settings(tiers=ONE_TIER, visibility_timeout_seconds=240, _env_file=None)

    assert (
        "240 must exceed the longest attempt's calls (TIERQ_REQUEST_TIMEOUT_SECONDS, or a "
        "tier's, plus TIERQ_SPEND__FLEX_TIMEOUT_SECONDS where the tier runs flex) + the longest "
        "retry wait (240), or Redis delivers a job twice"
    ) in str(caught.value)


def test_a_visibility_timeout_just_past_a_call_plus_the_longest_wait_is_accepted() -> None:
    settings = Settings(tiers=ONE_TIER, visibility_timeout_seconds=241, _env_file=None)

    assert settings.visibility_timeout_seconds == 241


def test_the_longest_attempt_is_the_longest_of_any_tier_its_flex_call_included() -> None:
    # The default reasoning tier's calls may last 600 s, and its models run at flex: a flex
    # call of up to 900 s, then its fallback, + 120 s of retry-after.
    with pytest.raises(ValidationError, match=r"longest retry wait \(1620\)"):
        Settings(visibility_timeout_seconds=1600, _env_file=None)
    # Without flex, the calls alone: 600 + 120 s.
    with pytest.raises(ValidationError, match=r"longest retry wait \(720\)"):
        Settings(visibility_timeout_seconds=700, spend={"flex": False}, _env_file=None)


def test_the_longest_wait_is_the_longer_of_back_off_cap_and_retry_after_cap() -> None:
    retry = RetrySettings(backoff_max_seconds=600, retry_after_max_seconds=30)

    with pytest.raises(ValidationError, match=r"longest retry wait \(720\)"):
        Settings(tiers=ONE_TIER, retry=retry, visibility_timeout_seconds=700, _env_file=None)


def test_short_calls_and_waits_allow_a_short_visibility_timeout() -> None:
    settings = Settings(
        tiers=ONE_TIER,
        request_timeout_seconds=10,
        retry=RetrySettings(backoff_max_seconds=20, retry_after_max_seconds=30),
        visibility_timeout_seconds=60,
        _env_file=None,
    )

    assert settings.visibility_timeout_seconds == 60


def test_a_visibility_timeout_too_short_for_the_environment_fails_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error = configuration_error(monkeypatch, TIERQ_VISIBILITY_TIMEOUT_SECONDS="100")

    assert "TIERQ_VISIBILITY_TIMEOUT_SECONDS: 100 must exceed" in str(error)
    assert "Redis delivers a job twice" in str(error)


def test_a_visibility_timeout_too_short_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    error = configuration_error(monkeypatch, TIERQ_VISIBILITY_TIMEOUT_SECONDS="100")

    assert "TIERQ_: " not in str(error)
    assert "TIERQ_VISIBILITY_TIMEOUT_SECONDS" in str(error)


def test_another_tools_variable_in_a_shared_dotenv_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=postgres://db\nTIERQ_RESULT_TTL_SECONDS=600\n")

    assert get_settings().result_ttl_seconds == 600


def test_the_test_suites_own_variables_are_not_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERQ_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

    assert get_settings().redis_url.get_secret_value() == "redis://127.0.0.1:6379/0"


def test_one_field_of_a_default_tier_can_be_adjusted_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIERQ_TIERS__FAST__CONCURRENCY", "300")
    monkeypatch.setenv("TIERQ_TIERS__REASONING__RATE_LIMIT", "60/m")

    settings = get_settings()

    assert settings.tiers["fast"].concurrency == 300
    assert settings.tiers["fast"].models == Settings(_env_file=None).tiers["fast"].models
    assert settings.tiers["reasoning"].rate_limit == "60/m"
    assert settings.tiers["reasoning"].reasoning is True
    assert settings.tiers["standard"] == Settings(_env_file=None).tiers["standard"]


def test_a_full_tier_table_replaces_the_default_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERQ_TIERS", json.dumps({"bulk": {"models": ["gpt-4o-mini"]}}))

    assert list(get_settings().tiers) == ["bulk"]


def test_a_default_tiers_models_can_be_changed_without_losing_the_other_tiers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIERQ_TIERS__FAST__MODELS", '["my-fine-tune"]')

    tiers = get_settings().tiers

    assert "my-fine-tune" in tiers["fast"].models
    assert set(tiers) == {"fast", "standard", "reasoning"}


def test_a_tier_can_be_added_field_by_field_beside_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TIERQ_TIERS__BULK__MODELS", '["gpt-4.1"]')
    monkeypatch.setenv("TIERQ_TIERS__BULK__CONCURRENCY", "20")

    tiers = get_settings().tiers

    assert set(tiers) == {"fast", "standard", "reasoning", "bulk"}
    assert (tiers["bulk"].models, tiers["bulk"].concurrency) == (["gpt-4.1"], 20)
