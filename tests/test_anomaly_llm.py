"""The language-model step against a stub OpenAI-compatible server on 127.0.0.1: what it sends,
what it makes of each kind of reply, and that the API key goes to the server and nowhere else.
Never the network."""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from cascade_cli.anomaly.llm import LLMDecider, LLMSettings
from cascade_cli.errors import UserError

STATISTICS = {"entropy": 2.5, "lowconf": 0.625, "knn": 1.75, "mahalanobis": 31.5, "energy": -4.25,
              "neg_max_logit": -3.125, "class_mahalanobis": 12.0}
POLICY = "ALERT if knn >= 1.5 OR mahalanobis >= 30; otherwise LOG."
KEY = "sk-cascade-test-5ecret-7f3a"


def chat(content: str, status: int = 200, delay: float = 0.0):
    """An answer of the stub: a chat completion whose message is `content`."""
    body = {"id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": "stub-model",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
    return lambda request: (status, json.dumps(body), delay)


def raw(status: int, text: str):
    return lambda request: (status, text, 0.0)


def verdict(action: str, rationale: str = "knn is above its threshold") -> str:
    return json.dumps({"action": action, "rationale": rationale})


class Stub:
    """Records every request; answers them with `answers` in turn, repeating the last one."""

    def __init__(self):
        self.requests: list[dict] = []
        self.answers = [chat(verdict("LOG"))]
        self.released = threading.Event()   # set at teardown, so a deliberately slow answer ends at once
        self.url = ""


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        stub: Stub = self.server.stub
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        request = {"path": self.path, "authorization": self.headers.get("Authorization"), "raw": body,
                   "body": json.loads(body)}
        stub.requests.append(request)
        answer = stub.answers[min(len(stub.requests), len(stub.answers)) - 1]
        status, text, delay = answer(request) if self.path == "/v1/chat/completions" else (404, "{}", 0.0)
        if delay and stub.released.wait(delay):
            return
        payload = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("CASCADE_LLM_API_KEY", "OPENAI_API_KEY", "OPENAI_ADMIN_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.stub = Stub()
    server.stub.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server.stub
    server.stub.released.set()
    server.shutdown()
    server.server_close()
    thread.join()


def decider(stub: Stub, decides: bool = False, timeout_s: float = 5.0) -> LLMDecider:
    return LLMDecider(LLMSettings(url=stub.url, model="stub-model", timeout_s=timeout_s, decides=decides))


def ask(llm: LLMDecider, threshold_action: str = "ALERT", statistics=None):
    return llm.decide(STATISTICS if statistics is None else statistics, "falling down", 0.375, POLICY,
                      threshold_action)


def test_advisory_model_keeps_the_threshold_decision_and_adds_its_rationale(stub):
    stub.answers = [chat(verdict("LOG", "mahalanobis is high but the class is common"))]
    llm = decider(stub)
    reply = ask(llm, threshold_action="ALERT")
    assert (reply.action, reply.model_action, reply.fell_back) == ("ALERT", "LOG", False)
    assert reply.rationale == "mahalanobis is high but the class is common"
    assert (llm.calls, llm.fallbacks) == (1, 0)
    assert stub.requests[0]["path"] == "/v1/chat/completions"


def test_deciding_model_overrules_the_threshold_rule(stub):
    stub.answers = [chat(verdict("ALERT", "knn 1.75 is above 1.5"))]
    llm = decider(stub, decides=True)
    reply = ask(llm, threshold_action="LOG")
    assert (reply.action, reply.model_action, reply.fell_back) == ("ALERT", "ALERT", False)
    assert reply.rationale == "knn 1.75 is above 1.5"
    assert (llm.calls, llm.fallbacks) == (1, 0)


@pytest.mark.parametrize("content", [
    "```json\n" + verdict("ALERT") + "\n```",
    "Here is my decision:\n```\n" + verdict("ALERT") + "\n```\n",
    verdict(" alert "),
], ids=["json-fence", "fence-after-prose", "lower-case"])
def test_fenced_or_loosely_cased_replies_are_used(stub, content):
    stub.answers = [chat(content)]
    llm = decider(stub, decides=True)
    reply = ask(llm, threshold_action="LOG")
    assert (reply.action, reply.model_action, reply.fell_back) == ("ALERT", "ALERT", False)
    assert reply.rationale == "knn is above its threshold"


UNUSABLE = {
    "prose": (chat("I think this clip looks fine."), "not JSON"),
    "unknown-action": (chat(verdict("ESCALATE")), "not LOG or ALERT"),
    "missing-action": (chat(json.dumps({"rationale": "fine"})), "not LOG or ALERT"),
    "json-list": (chat('["ALERT"]'), "not a JSON object"),
    "empty": (chat(""), "empty"),
    "http-500": (raw(500, '{"error": {"message": "model crashed"}}'), "HTTP 500"),
    "not-a-completion": (raw(200, '{"unexpected": true}'), "not a chat completion"),
}


@pytest.mark.parametrize("decides", [False, True], ids=["advisory", "deciding"])
@pytest.mark.parametrize("case", list(UNUSABLE))
def test_unusable_reply_falls_back_once_without_retrying(stub, case, decides):
    answer, reason = UNUSABLE[case]
    stub.answers = [answer, chat(verdict("ALERT"))]   # a retry would be answered, and noticed
    llm = decider(stub, decides=decides)
    reply = ask(llm, threshold_action="ALERT")
    # The authors' agent logs when the model gives nothing usable; advisory mode keeps the rule's decision.
    assert reply.action == ("LOG" if decides else "ALERT")
    assert reply.fell_back and reply.model_action is None
    assert reason in reply.rationale
    assert (llm.calls, llm.fallbacks) == (1, 1)
    assert len(stub.requests) == 1


def test_slow_reply_times_out_once(stub):
    stub.answers = [chat(verdict("LOG"), delay=5.0), chat(verdict("LOG"))]
    llm = decider(stub, timeout_s=0.5)
    start = time.perf_counter()
    reply = ask(llm, threshold_action="ALERT")
    elapsed = time.perf_counter() - start
    assert (reply.action, reply.fell_back, reply.model_action) == ("ALERT", True, None)
    assert "no reply within 0.5 s" in reply.rationale
    assert len(stub.requests) == 1, "the client retried"
    assert 0.4 < elapsed < 2.0
    assert (llm.calls, llm.fallbacks) == (1, 1)


def test_unreachable_server_falls_back(monkeypatch):
    with socket.socket() as probe:   # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.delenv("CASCADE_LLM_API_KEY", raising=False)
    llm = LLMDecider(LLMSettings(url=f"http://127.0.0.1:{port}/v1", model="m", timeout_s=2.0))
    reply = ask(llm, threshold_action="LOG")
    assert (reply.action, reply.fell_back) == ("LOG", True)
    assert "could not connect" in reply.rationale
    assert (llm.calls, llm.fallbacks) == (1, 1)


def test_calls_and_fallbacks_are_counted_over_clips(stub):
    stub.answers = [chat(verdict("LOG")), chat("no idea"), raw(500, "{}"), chat(verdict("ALERT"))]
    llm = decider(stub, decides=True)
    replies = [ask(llm) for _ in range(4)]
    assert [r.fell_back for r in replies] == [False, True, True, False]
    assert [r.action for r in replies] == ["LOG", "LOG", "LOG", "ALERT"]
    assert (llm.calls, llm.fallbacks) == (4, 2)


def test_request_carries_the_scalars_and_the_policy_and_no_array(stub):
    llm = decider(stub)
    ask(llm, threshold_action="ALERT")
    (request,) = stub.requests
    body = request["body"]
    assert body["model"] == "stub-model" and body["temperature"] == 0
    system, user = (m["content"] for m in body["messages"])
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert all(word in system for word in ("JSON", '"action"', '"rationale"', "LOG", "ALERT"))
    for name, value in STATISTICS.items():
        assert f"{name}: {value:g}" in user
    assert "falling down" in user and "0.375" in user
    assert POLICY in user
    assert "Decision of the threshold rule: ALERT" in user
    assert not re.search(r"(?:-?\d[\d.e+-]*[,\s]+){8,}", request["raw"]), "a list of numbers was sent"


def test_arrays_are_refused_before_anything_is_sent(stub):
    llm = decider(stub)
    for embedding in (np.zeros(768, dtype=np.float32), [0.1] * 768, np.float32([2.5])):
        with pytest.raises(ValueError, match="single number"):
            ask(llm, statistics={**STATISTICS, "embedding": embedding})
    assert stub.requests == [] and llm.calls == 0
    ask(llm, statistics={"entropy": np.float32(2.5), "knn": np.float64(1.75)})   # numpy scalars are scalars
    assert "entropy: 2.5" in stub.requests[0]["body"]["messages"][1]["content"]


def test_key_reaches_the_server_and_nothing_else(stub, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("CASCADE_LLM_API_KEY", KEY)

    def echo(request):   # a server that repeats the credentials it was sent
        return chat(verdict("ALERT", f"seen: {request['authorization']}"))(request)

    stub.answers = [echo, lambda request: (500, json.dumps({"error": request["authorization"]}), 0.0),
                    lambda request: chat(verdict(request["authorization"]))(request)]
    llm = decider(stub, decides=True)
    replies = [ask(llm) for _ in range(3)]
    assert [request["authorization"] for request in stub.requests] == [f"Bearer {KEY}"] * 3
    assert replies[0].rationale.startswith("seen: Bearer ") and not replies[0].fell_back
    assert [r.fell_back for r in replies[1:]] == [True, True]
    for reply in replies:
        assert KEY not in repr(reply)
    assert KEY not in repr(llm.settings) and KEY not in repr(llm)
    assert KEY not in caplog.text


def test_unset_key_never_borrows_openai_api_key(stub, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-meant-for-openai")
    ask(decider(stub))
    assert "sk-openai" not in (stub.requests[0]["authorization"] or "")


def test_missing_openai_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)   # `import openai` now fails as if it were absent
    with pytest.raises(UserError) as caught:
        LLMDecider(LLMSettings(url="http://127.0.0.1:9/v1", model="m"))
    message = str(caught.value)
    assert "pip install 'cascade-cli[llm]'" in message and "\n" not in message


@pytest.mark.parametrize("settings", [dict(url=" ", model="m"), dict(url="http://h/v1", model=""),
                                      dict(url="http://h/v1", model="m", timeout_s=0)])
def test_incomplete_settings_are_refused(settings):
    with pytest.raises(UserError):
        LLMSettings(**settings)
