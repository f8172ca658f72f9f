"""Error answers in the exact shape and wording the OpenAI API uses.

Clients classify errors by status, `type` and `code` (the openai SDK maps the status to an
exception class and copies `type`, `code` and `param` onto it), so every refusal the
simulator gives, whether from validation, rate limiting or an injected fault, is built
here and nowhere else.
"""

from dataclasses import dataclass, field

HELP_CENTER = "help.openai.com"
API_KEYS_URL = "https://platform.openai.com/account/api-keys"


@dataclass(slots=True)
class ApiError(Exception):
    """Raised when a request must be answered with an OpenAI-shaped error instead."""

    status: int
    message: str
    type: str | None = "invalid_request_error"
    param: str | None = None
    code: str | int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, object]:
        """The JSON body the API sends for this error."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def __str__(self) -> str:
        return f"{self.status} {self.code or self.type}: {self.message}"


def invalid_request(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 `invalid_request_error`, the API's answer to a malformed request."""
    return ApiError(400, message, param=param, code=code)


def missing_api_key() -> ApiError:
    """The 401 for a request without `Authorization: Bearer <key>`."""
    return ApiError(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization "
        "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password "
        "field (with blank username) if you're accessing the API from your browser and are "
        f"prompted for a username and password. You can obtain an API key from {API_KEYS_URL}.",
    )


def invalid_json_body() -> ApiError:
    """The 400 for a body that is not JSON."""
    return invalid_request(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
        "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what "
        "was sent was not valid JSON. If you have trouble figuring out how to fix this, please "
        f"contact us through our help center at {HELP_CENTER}.)"
    )


def unsupported_parameter(param: str, *, hint: str = "") -> ApiError:
    """The 400 for a parameter the chosen model does not accept."""
    message = f"Unsupported parameter: '{param}' is not supported with this model."
    return invalid_request(
        f"{message} {hint}" if hint else message, param=param, code="unsupported_parameter"
    )


def unsupported_default_only(param: str, value: object, default: object) -> ApiError:
    """The 400 for a value other than the default of a parameter a model takes only at it."""
    return invalid_request(
        f"Unsupported value: '{param}' does not support {value} with this model. "
        f"Only the default ({default}) value is supported.",
        param=param,
        code="unsupported_value",
    )


def unsupported_value(param: str, value: object, supported: tuple[str, ...]) -> ApiError:
    """The 400 for a value the API knows but the chosen model does not take."""
    listed = ", ".join(f"'{s}'" for s in supported[:-1])
    listed = f"{listed}, and '{supported[-1]}'" if listed else f"'{supported[-1]}'"
    return invalid_request(
        f"Unsupported value: '{param}' does not support '{value}' with this model. "
        f"Supported values are: {listed}.",
        param=param,
        code="unsupported_value",
    )


def output_cap_too_large(param: str, value: int, maximum: int) -> ApiError:
    """The 400 for `max_tokens`/`max_completion_tokens` above the model's maximum output."""
    return invalid_request(
        f"{param} is too large: {value}. This model supports at most {maximum} completion "
        f"tokens, whereas you provided {value}.",
        param=param,
        code="invalid_value",
    )


def stream_server_error() -> ApiError:
    """The error the API sends as an event when a stream fails after it has started."""
    return _DEFAULT_FAULTS[500]("")


def context_length_exceeded(window: int, prompt_tokens: int, output_tokens: int) -> ApiError:
    """The 400 for a request that does not fit the model's context window."""
    if output_tokens:
        message = (
            f"This model's maximum context length is {window} tokens. However, you requested "
            f"{prompt_tokens + output_tokens} tokens ({prompt_tokens} in the messages, "
            f"{output_tokens} in the completion). Please reduce the length of the messages "
            "or completion."
        )
    else:
        message = (
            f"This model's maximum context length is {window} tokens. However, your messages "
            f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages."
        )
    return invalid_request(message, param="messages", code="context_length_exceeded")


def rate_limit_message(
    model: str, kind: str, limit: int, used: int, requested: int, wait: str
) -> str:
    """The API's wording for a refused request; `kind` is `requests` or `tokens`."""
    unit = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
    return (
        f"Rate limit reached for {model} in organization org-simulator on {unit}: "
        f"Limit {limit}, Used {used}, Requested {requested}. Please try again in {wait}. "
        "Visit https://platform.openai.com/account/rate-limits to learn more."
    )


def fault(
    status: int, *, code: str | None, model: str, context_window: int, wait: str = "20s"
) -> ApiError:
    """The error an injected fault answers with: `status`, worded for `code` if given.

    `wait` is the "Please try again in ..." of a rate-limit message.
    """
    if code == "insufficient_quota":
        return ApiError(
            status,
            "You exceeded your current quota, please check your plan and billing details. "
            "For more information on this error, read the docs: "
            "https://platform.openai.com/docs/guides/error-codes/api-errors.",
            type="insufficient_quota",
            code="insufficient_quota",
        )
    if code == "context_length_exceeded":
        error = context_length_exceeded(context_window, context_window + 1, 0)
        error.status = status
        return error
    if status == 429 and code in (None, "rate_limit_exceeded"):
        return ApiError(
            429,
            rate_limit_message(model, "requests", 3, 3, 1, wait),
            type="requests",
            code="rate_limit_exceeded",
        )
    if status in _DEFAULT_FAULTS:
        error = _DEFAULT_FAULTS[status](model)
        if code is None or code == error.code:
            return error
    return ApiError(
        status,
        f"Simulated error {status} ({code or 'no code'}) requested by a [sim] directive.",
        type=_TYPE_BY_STATUS.get(status, "invalid_request_error"),
        code=code,
    )


# Status a `code=` directive implies when it comes without `fail=`.
STATUS_BY_CODE = {
    "insufficient_quota": 429,
    "rate_limit_exceeded": 429,
    "context_length_exceeded": 400,
    "invalid_api_key": 401,
    "model_not_found": 404,
    "server_error": 500,
}

_TYPE_BY_STATUS = {
    401: "invalid_request_error",
    403: "request_forbidden",
    429: "requests",
    500: "server_error",
    502: "cf_bad_gateway",
    503: "server_error",
}

_DEFAULT_FAULTS = {
    400: lambda model: invalid_request(
        "Simulated invalid request ([sim fail=400] directive).", code="invalid_value"
    ),
    401: lambda model: ApiError(
        401,
        f"Incorrect API key provided. You can find your API key at {API_KEYS_URL}.",
        code="invalid_api_key",
    ),
    403: lambda model: ApiError(
        403,
        "Country, region, or territory not supported",
        type="request_forbidden",
        code="unsupported_country_region_territory",
    ),
    404: lambda model: ApiError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        code="model_not_found",
    ),
    422: lambda model: ApiError(
        422, "Simulated unprocessable entity ([sim fail=422] directive).", code="invalid_value"
    ),
    500: lambda model: ApiError(
        500,
        "The server had an error processing your request. Sorry about that! You can retry "
        "your request, or contact us through our help center at help.openai.com if you keep "
        "seeing this error.",
        type="server_error",
    ),
    502: lambda model: ApiError(502, "Bad gateway.", type="cf_bad_gateway", code=502),
    503: lambda model: ApiError(
        503, "The engine is currently overloaded, please try again later.", type="server_error"
    ),
}


def flex_unavailable(model: str) -> ApiError:
    """The 429 a flex request meets when flex has no capacity for it (nothing is billed): not
    a rate limit, so it carries no `rate_limit_exceeded` code and no reset headers."""
    return ApiError(
        429,
        f"Resource unavailable: flex processing has no capacity for {model} right now. "
        "Retry later, or send the request at the default service tier.",
        type="service_unavailable_error",
        code="resource_unavailable",
    )
