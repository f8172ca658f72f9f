"""A Chat Completions request body, validated the way the API validates it.

Clients must meet the same 400s here as in production (wrong parameters for reasoning
models, context overflow, malformed messages...), or bugs surface only against the real
API. `parse_chat_request` turns a JSON body into a `ChatRequest` holding only what
generation needs, or raises the API's `invalid_request_error`.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from tierq_simulator import errors
from tierq_simulator.catalog import spec_for
from tierq_simulator.config import SimulatorConfig
from tierq_simulator.directives import DirectiveError, Directives, parse_messages
from tierq_simulator.errors import ApiError, invalid_request
from tierq_simulator.tokens import count_prompt_tokens, estimate_tokens_from_characters

DEFAULT_OUTPUT_TOKENS_FOR_COST = 16  # output reserved when none is capped (rate-limit cost)
# Every top-level field of a Chat Completions request (the openai SDK's create() parameters);
# anything else is refused as the API refuses it.
KNOWN_PARAMETERS = frozenset(
    {
        "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
        "max_completion_tokens", "max_tokens", "messages", "metadata", "modalities", "model",
        "moderation", "n", "parallel_tool_calls", "prediction", "presence_penalty",
        "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
        "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier",
        "stop", "store", "stream", "stream_options", "temperature", "tool_choice", "tools",
        "top_logprobs", "top_p", "user", "verbosity", "web_search_options",
    }
)  # fmt: skip
# `service_tier` as requested -> the tier that serves it (and that the answer reports): a
# project without Scale Tier is served at `default` for auto and scale; `fast` is priority.
SERVED_TIERS = {
    "auto": "default",
    "default": "default",
    "flex": "flex",
    "scale": "default",
    "priority": "priority",
    "fast": "priority",
}
MAX_CHOICES = 128
MAX_TOP_LOGPROBS = 20
MAX_STOP_SEQUENCES = 4
ROLES = ("system", "assistant", "user", "function", "tool", "developer")
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
DEFAULT_REASONING_EFFORT = "medium"
# Sampling parameters reasoning models take only at their default value: any other value is
# refused with "Only the default (1) value is supported".
REASONING_DEFAULT_ONLY = {"temperature": 1, "top_p": 1}
# Parameters reasoning models refuse whatever the value, in the order the checks run.
REASONING_UNSUPPORTED = (
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "logprobs",
    "top_logprobs",
    "logit_bias",
)
_JSON_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a decimal",
    bool: "a boolean",
    dict: "an object",
    list: "an array",
    type(None): "null",
}

ResponseFormat = Literal["text", "json_object", "json_schema"]
ToolMode = Literal["none", "auto", "required"]


@dataclass(frozen=True, slots=True)
class FunctionTool:
    """A function the model may call."""

    name: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """`tool_choice` normalised: a mode, an optional allow-list and an optional forced tool."""

    mode: ToolMode = "auto"
    allowed: frozenset[str] | None = None
    forced: str | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What generation needs from a valid request."""

    model: str
    messages: list[Mapping[str, Any]]
    n: int
    stream: bool
    include_usage: bool
    max_output_tokens: int | None  # max_completion_tokens, else max_tokens
    stop: tuple[str, ...]
    seed: int | None
    logprobs: bool
    top_logprobs: int
    response_format: ResponseFormat
    json_schema: Mapping[str, Any] | None
    tools: tuple[FunctionTool, ...]
    tool_choice: ToolChoice
    parallel_tool_calls: bool
    reasoning_effort: str | None  # None: not a reasoning model
    service_tier: str  # the tier that serves the request: default, flex or priority
    prompt_tokens: int
    estimated_prompt_tokens: int  # from the characters, as the rate limiter estimates
    directives: Directives

    @property
    def token_cost(self) -> int:
        """Tokens charged against a TPM limit at admission, before the answer is known.

        As OpenAI's rate-limit guide describes: the larger of the output the request may
        produce (its cap, or `DEFAULT_OUTPUT_TOKENS_FOR_COST`, for each of its `n` choices)
        and its size estimated from its characters. The limiter settles the difference with
        the real usage once the answer is generated.
        """
        per_choice = self.max_output_tokens or DEFAULT_OUTPUT_TOKENS_FOR_COST
        return max(self.n * per_choice, self.estimated_prompt_tokens)


def _type_error(param: str, expected: str, value: object) -> ApiError:
    got = _JSON_TYPE_NAMES.get(type(value), "an unsupported type")
    return invalid_request(
        f"Invalid type for '{param}': expected {expected}, but got {got} instead.",
        param=param,
        code="invalid_type",
    )


def _missing(param: str) -> ApiError:
    return invalid_request(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def _invalid_value(param: str, value: object, supported: tuple[str, ...]) -> ApiError:
    listed = ", ".join(f"'{s}'" for s in supported[:-1]) + f", and '{supported[-1]}'"
    return invalid_request(
        f"Invalid value: '{value}'. Supported values are: {listed}.",
        param=param,
        code="invalid_value",
    )


def _number(
    body: Mapping[str, Any], param: str, low: float, high: float | None, *, integer: bool
) -> Any:
    value = body.get(param)
    if value is None:
        return None
    kind = "integer" if integer else "decimal"
    wrong_type = isinstance(value, bool) or not isinstance(value, int if integer else int | float)
    if wrong_type:
        raise _type_error(param, "an integer" if integer else "a number", value)
    if value < low:
        raise invalid_request(
            f"Invalid '{param}': {kind} below minimum value. Expected a value >= {low:g}, but "
            f"got {value} instead.",
            param=param,
            code=f"{kind}_below_min_value",
        )
    if high is not None and value > high:
        raise invalid_request(
            f"Invalid '{param}': {kind} above maximum value. Expected a value <= {high:g}, but "
            f"got {value} instead.",
            param=param,
            code=f"{kind}_above_max_value",
        )
    return value


def _bool(body: Mapping[str, Any], param: str, default: bool) -> bool:
    value = body.get(param)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _type_error(param, "a boolean", value)
    return value


def _messages(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    messages = body.get("messages")
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list):
        raise _type_error("messages", "an array", messages)
    if not messages:
        raise invalid_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got "
            "an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _type_error(param, "an object", message)
        role = message.get("role")
        if role is None:
            raise _missing(f"{param}.role")
        if role not in ROLES:
            raise _invalid_value(f"{param}.role", role, ROLES)
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _type_error(f"{param}.content", "one of a string or array", content)
    return messages


def _stop(body: Mapping[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise _type_error("stop", "one of a string or array of strings", stop)
    if len(stop) > MAX_STOP_SEQUENCES:
        raise invalid_request(
            f"Invalid 'stop': array too long. Expected an array with maximum length "
            f"{MAX_STOP_SEQUENCES}, but got an array with length {len(stop)} instead.",
            param="stop",
            code="array_above_max_length",
        )
    return tuple(s for s in stop if s)


def _response_format(
    body: Mapping[str, Any], messages: list[Mapping[str, Any]]
) -> tuple[ResponseFormat, Mapping[str, Any] | None]:
    fmt = body.get("response_format")
    if fmt is None:
        return "text", None
    if not isinstance(fmt, dict):
        raise _type_error("response_format", "an object", fmt)
    kind = fmt.get("type")
    if kind == "text":
        return "text", None
    if kind == "json_object":
        if not any("json" in str(m.get("content", "")).lower() for m in messages):
            raise invalid_request(
                "'messages' must contain the word 'json' in some form, to use "
                "'response_format' of type 'json_object'.",
                param="messages",
            )
        return "json_object", None
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise _missing("response_format.json_schema")
        if not isinstance(spec.get("name"), str):
            raise _missing("response_format.json_schema.name")
        schema = spec.get("schema")
        return "json_schema", schema if isinstance(schema, dict) else {}
    raise _invalid_value("response_format.type", kind, ("text", "json_object", "json_schema"))


def _tools(body: Mapping[str, Any]) -> tuple[FunctionTool, ...]:
    tools = body.get("tools")
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise _type_error("tools", "an array", tools)
    parsed = []
    for index, tool in enumerate(tools):
        param = f"tools[{index}]"
        if not isinstance(tool, dict):
            raise _type_error(param, "an object", tool)
        if tool.get("type") == "custom":
            continue  # accepted, never called: the simulator only calls function tools
        if tool.get("type") != "function":
            raise _invalid_value(f"{param}.type", tool.get("type"), ("function", "custom"))
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _missing(f"{param}.function.name")
        parameters = function.get("parameters")
        parsed.append(
            FunctionTool(function["name"], parameters if isinstance(parameters, dict) else {})
        )
    return tuple(parsed)


def _tool_choice(body: Mapping[str, Any], tools: tuple[FunctionTool, ...]) -> ToolChoice:
    choice = body.get("tool_choice")
    if choice is None:
        return ToolChoice("auto" if tools else "none")
    if "tools" not in body or body["tools"] is None:
        raise invalid_request(
            "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
            "specified.",
            param="tool_choice",
        )
    if choice in ("none", "auto", "required"):
        return ToolChoice(choice)
    names = {tool.name for tool in tools}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if name not in names:
            raise invalid_request(
                f"Invalid value for 'tool_choice': function '{name}' is not among 'tools'.",
                param="tool_choice",
                code="invalid_value",
            )
        return ToolChoice("required", forced=name)
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        mode = allowed.get("mode", "auto")
        listed = {
            str((tool.get("function") or {}).get("name"))
            for tool in allowed.get("tools") or ()
            if isinstance(tool, dict)
        }
        return ToolChoice("required" if mode == "required" else "auto", frozenset(listed) & names)
    if isinstance(choice, dict) and choice.get("type") == "custom":
        return ToolChoice("none")  # custom tools are never called
    raise _invalid_value("tool_choice", choice, ("none", "auto", "required"))


def _unknown_parameters(body: Mapping[str, Any]) -> None:
    unknown = [name for name in body if name not in KNOWN_PARAMETERS]
    if len(unknown) == 1:
        raise invalid_request(f"Unrecognized request argument supplied: {unknown[0]}")
    if unknown:
        raise invalid_request(f"Unrecognized request arguments supplied: {', '.join(unknown)}")


def _reasoning_effort(body: Mapping[str, Any], model: str, reasoning: bool) -> str | None:
    effort = body.get("reasoning_effort")
    if not reasoning:
        if effort is not None:
            raise errors.unsupported_parameter("reasoning_effort")
        return None
    if effort is None:
        return DEFAULT_REASONING_EFFORT
    if effort not in REASONING_EFFORTS:
        raise _invalid_value("reasoning_effort", effort, REASONING_EFFORTS)
    spec = spec_for(model)
    if spec is not None and effort not in spec.reasoning_efforts:
        raise errors.unsupported_value("reasoning_effort", effort, spec.reasoning_efforts)
    return str(effort)


def _service_tier(body: Mapping[str, Any], model: str) -> str:
    tier = body.get("service_tier")
    if tier is None:
        return SERVED_TIERS["auto"]
    if not isinstance(tier, str):
        raise _type_error("service_tier", "a string", tier)
    if tier not in SERVED_TIERS:
        raise _invalid_value("service_tier", tier, tuple(SERVED_TIERS))
    spec = spec_for(model)
    if SERVED_TIERS[tier] == "flex" and spec is not None and not spec.flex:
        # Flex is offered for some models only; the API refuses it for the others.
        raise errors.invalid_request(
            f"The model `{model}` does not support the service tier 'flex'.",
            param="service_tier",
            code="invalid_value",
        )
    return SERVED_TIERS[tier]


def _check_output_cap(model: str, param: str, value: int | None) -> None:
    """The API refuses an output cap above what the model can ever produce."""
    spec = spec_for(model)
    if spec is not None and value is not None and value > spec.max_output_tokens:
        raise errors.output_cap_too_large(param, value, spec.max_output_tokens)


def _check_reasoning_parameters(body: Mapping[str, Any]) -> None:
    if body.get("max_tokens") is not None:
        raise errors.unsupported_parameter(
            "max_tokens", hint="Use 'max_completion_tokens' instead."
        )
    for param, default in REASONING_DEFAULT_ONLY.items():
        value = body.get(param)
        if value is not None and value != default:
            raise errors.unsupported_default_only(param, value, default)
    for param in REASONING_UNSUPPORTED:
        if body.get(param) is not None:
            raise errors.unsupported_parameter(param)


def parse_chat_request(body: object, config: SimulatorConfig) -> ChatRequest:
    """Validate a request body like the API does; raise its 400 on the first problem."""
    if not isinstance(body, dict):
        raise _type_error("body", "an object", body)
    _unknown_parameters(body)
    model = body.get("model")
    if model is None:
        raise invalid_request("you must provide a model parameter")
    if not isinstance(model, str):
        raise _type_error("model", "a string", model)
    messages = _messages(body)
    reasoning = config.is_reasoning_model(model)
    if reasoning:
        _check_reasoning_parameters(body)
    effort = _reasoning_effort(body, model, reasoning)
    service_tier = _service_tier(body, model)

    stream = _bool(body, "stream", False)
    stream_options = body.get("stream_options")
    if stream_options is not None and not stream:
        raise invalid_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True

    _number(body, "temperature", 0, 2, integer=False)
    _number(body, "top_p", 0, 1, integer=False)
    _number(body, "frequency_penalty", -2, 2, integer=False)
    _number(body, "presence_penalty", -2, 2, integer=False)
    n = _number(body, "n", 1, MAX_CHOICES, integer=True) or 1
    max_completion = _number(body, "max_completion_tokens", 1, None, integer=True)
    max_tokens = _number(body, "max_tokens", 1, None, integer=True)
    _check_output_cap(model, "max_completion_tokens", max_completion)
    _check_output_cap(model, "max_tokens", max_tokens)
    seed = _number(body, "seed", -(2**63), 2**63 - 1, integer=True)
    logprobs = _bool(body, "logprobs", False)
    top_logprobs = _number(body, "top_logprobs", 0, MAX_TOP_LOGPROBS, integer=True)
    if top_logprobs is not None and not logprobs:
        raise invalid_request(
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true when "
            "'top_logprobs' is used.",
            param="top_logprobs",
            code="invalid_value",
        )
    response_format, json_schema = _response_format(body, messages)
    tools = _tools(body)
    tool_choice = _tool_choice(body, tools)

    prompt_tokens = count_prompt_tokens(messages, body.get("tools"), model)
    max_output = max_completion if max_completion is not None else max_tokens
    window = config.context_window_for(model)
    if prompt_tokens + (max_output or 0) > window:
        raise errors.context_length_exceeded(window, prompt_tokens, max_output or 0)

    try:
        directives = parse_messages(messages)
    except DirectiveError as exc:
        raise invalid_request(str(exc), param="messages", code="invalid_sim_directive") from None

    return ChatRequest(
        model=model,
        messages=messages,
        n=n,
        stream=stream,
        include_usage=include_usage,
        max_output_tokens=max_output,
        stop=_stop(body),
        seed=seed,
        logprobs=logprobs,
        top_logprobs=top_logprobs or 0,
        response_format=response_format,
        json_schema=json_schema,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=_bool(body, "parallel_tool_calls", True),
        reasoning_effort=effort,
        service_tier=service_tier,
        prompt_tokens=prompt_tokens,
        estimated_prompt_tokens=estimate_tokens_from_characters(messages, body.get("tools")),
        directives=directives,
    )
