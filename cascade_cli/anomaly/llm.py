"""The optional language-model step of the anomaly detector.

The threshold rule decides on its own, offline; this step asks a chat model about the same clip
and either keeps its rationale beside the rule's decision (the default) or lets its action stand
(`decides=True`). Any OpenAI-compatible endpoint works, a local server included, so the step
stays a plug-in: the `openai` package is an optional extra, and a reply that cannot be used never
stops the detector, it falls back and is counted.

What leaves the machine is deliberately small: the scalar statistics, the predicted class and its
probability, the policy text and the rule's decision. Never an embedding (the authors' agent sent
the whole 768-d vector), and never the API key in anything this module returns.
"""

from __future__ import annotations

import json
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cascade_cli.errors import UserError

ACTIONS = ("LOG", "ALERT")

# What a model reads before every clip. The reply format is spelled out because the reply is
# parsed by a program; the instruction to use only the given numbers keeps the rationale
# checkable against the statistics the detector recorded.
SYSTEM_PROMPT = """\
You assist a skeleton-based action-recognition system that watches for unusual behaviour.
For one clip you are given: the action class the classifier predicted and its probability,
scalar statistics that measure how unusual the clip looks to the detector, the written policy
in force, and the decision a fixed threshold rule reached under that policy.

Choose one action:
- LOG: record the clip without interrupting anyone.
- ALERT: bring the clip to a human operator's attention now.

Judge only from the policy and the values given; do not assume facts that are not stated.
Answer with one JSON object and nothing else, in this form:
{"action": "LOG" or "ALERT", "rationale": "one or two sentences naming the deciding values and policy"}
"""

# Sent when the key's variable is unset: some value must go out or the client refuses to start,
# and a fixed stand-in keeps the client from reaching for OPENAI_API_KEY, which would hand an
# OpenAI key to whatever server `url` names. Local servers without authentication ignore it.
_NO_KEY = "no-key-set"

_FENCED = re.compile(r"```[\w-]*[ \t]*\r?\n?(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class LLMSettings:
    """Where the model lives and how far to trust it; holds the key's variable name, never the key,
    so settings can be printed and recorded with a run."""

    url: str                 # base URL of any OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1
    model: str
    key_env: str = "CASCADE_LLM_API_KEY"   # environment variable holding the API key (may be unset for local servers)
    timeout_s: float = 30.0
    # False: the model only writes a rationale beside the threshold decision; True: its action is the decision
    decides: bool = False

    def __post_init__(self):
        if not self.url.strip():
            raise UserError("language-model step: the endpoint URL is empty")
        if not self.model.strip():
            raise UserError("language-model step: the model name is empty")
        if not self.timeout_s > 0:
            raise UserError(f"language-model step: timeout_s must be positive, got {self.timeout_s}")


@dataclass
class LLMReply:
    """One clip's outcome, with enough to audit it later: whether the model was heard at all, and
    what it said even when its action was not the one that stood."""

    action: str              # "LOG" or "ALERT": the decision that stands
    rationale: str           # the model's rationale, or why it fell back
    # True when the reply could not be used (time-out, HTTP or connection error, unparseable reply,
    # action not LOG/ALERT)
    fell_back: bool
    model_action: str | None  # what the model said, when it said something usable


class _Unusable(Exception):
    """A reply the detector cannot act on; its message says why, in words safe to record."""


class LLMDecider:
    """Asks the model about one clip at a time and never raises over what comes back.

    `calls` and `fallbacks` are kept so that a run can report how often the model was actually
    heard: a step that silently fell back on most clips would otherwise pass for a working one.
    """

    def __init__(self, settings: LLMSettings):
        try:
            import openai
        except ImportError:
            raise UserError("the language-model step needs the openai package: pip install 'cascade-cli[llm]' "
                            "(or openai itself)") from None
        self.settings = settings
        self.calls = 0
        self.fallbacks = 0
        self._openai = openai   # its exception classes, without importing it at module level
        # Kept only to strike it from whatever a server sends back; never formatted into text.
        self._key = os.environ.get(settings.key_env) or ""
        # No retries: a clip waits for one time-out at most, and a server that failed once is
        # counted as a fallback rather than hammered.
        self._client = openai.OpenAI(base_url=settings.url, api_key=self._key or _NO_KEY,
                                     timeout=settings.timeout_s, max_retries=0)

    def decide(self, statistics: dict[str, float], predicted_class: str, top_probability: float,
               policy_text: str, threshold_action: str) -> LLMReply:
        """A caller's mistake (a threshold action other than LOG/ALERT, a statistic that is not one
        number) raises ValueError before anything is sent; whatever the server does ends in a reply."""
        if threshold_action not in ACTIONS:
            raise ValueError(f"threshold_action must be LOG or ALERT, got {threshold_action!r}")
        clip = _clip_message(statistics, predicted_class, top_probability, policy_text, threshold_action)
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": clip}]
        self.calls += 1
        try:
            model_action, rationale = self._ask(messages)
        except _Unusable as why:
            self.fallbacks += 1
            return self._fall_back(str(why), threshold_action)
        action = model_action if self.settings.decides else threshold_action
        return LLMReply(action=action, rationale=self._without_key(rationale), fell_back=False,
                        model_action=model_action)

    def _ask(self, messages: list[dict]) -> tuple[str, str]:
        """The model's (action, rationale), or _Unusable naming the failure by its kind only: an
        exception's own text can carry a server's body or the URL's credentials."""
        errors = self._openai
        try:
            response = self._client.chat.completions.create(model=self.settings.model, messages=messages,
                                                            temperature=0)
        except errors.APITimeoutError:
            raise _Unusable(f"no reply within {self.settings.timeout_s:g} s") from None
        except errors.APIStatusError as exc:
            raise _Unusable(f"the server answered HTTP {exc.status_code}") from None
        except errors.APIConnectionError:
            raise _Unusable("could not connect to the server") from None
        except errors.APIError:
            raise _Unusable("the server's answer was not a chat completion") from None
        try:
            content = response.choices[0].message.content
        except (AttributeError, IndexError, KeyError, TypeError):
            raise _Unusable("the server's answer was not a chat completion") from None
        if not isinstance(content, str) or not content.strip():
            raise _Unusable("the model's reply was empty")
        return _parse_reply(content)

    def _fall_back(self, why: str, threshold_action: str) -> LLMReply:
        # With decides=True the authors' agent logs when the model gives nothing usable; without
        # it, the threshold rule was the decision all along.
        if self.settings.decides:
            action, note = "LOG", "LOG is the default when the model cannot decide"
        else:
            action, note = threshold_action, f"the threshold rule's {threshold_action} stands"
        return LLMReply(action=action, rationale=self._without_key(f"language model not used ({why}); {note}"),
                        fell_back=True, model_action=None)

    def _without_key(self, text: str) -> str:
        """A server can echo anything, the request's Authorization header included."""
        return text.replace(self._key, "[key withheld]") if self._key else text


def _clip_message(statistics: Mapping[str, float], predicted_class: str, top_probability: float,
                  policy_text: str, threshold_action: str) -> str:
    """The user message for one clip. Only scalars are accepted, so an embedding or any other array
    is refused here rather than sent."""
    lines = [f"Predicted action: {predicted_class} (probability {_scalar('top_probability', top_probability)})",
             "Statistics:"]
    lines += [f"- {name}: {_scalar(name, value)}" for name, value in statistics.items()]
    lines += ["Policy:", policy_text.strip(), f"Decision of the threshold rule: {threshold_action}"]
    return "\n".join(lines)


def _parse_reply(content: str) -> tuple[str, str]:
    """(action, rationale) from the model's text: a JSON object, bare or inside a Markdown code
    fence, as chat models often wrap JSON even when told not to."""
    fenced = _FENCED.search(content)
    text = fenced.group(1) if fenced else content
    try:
        reply = json.loads(text)
    except json.JSONDecodeError:
        raise _Unusable("the model's reply was not JSON") from None
    if not isinstance(reply, dict):
        raise _Unusable("the model's reply was not a JSON object")
    action = reply.get("action")
    action = action.strip().upper() if isinstance(action, str) else action
    if action not in ACTIONS:
        raise _Unusable("the model's action was not LOG or ALERT")
    rationale = reply.get("rationale", "")
    if not isinstance(rationale, str):
        raise _Unusable("the model's rationale was not text")
    return action, rationale.strip() or "(the model gave no rationale)"


def _scalar(name: str, value) -> str:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"statistic {name!r} must be a single number, got {type(value).__name__}; "
                         "only scalar statistics are sent to the language model")
    return format(float(value), ".6g")
