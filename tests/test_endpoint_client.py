"""The endpoint client against a server that misbehaves: retries what is transient, refuses
what is malformed or oversized in one line, keeps no credential anywhere, caches by request
and keeps its requests in flight within ``concurrency``."""

from __future__ import annotations

import json
import threading

import pytest

from redteam.cli import main
from redteam.core.errors import InputError
from redteam.core.http import EndpointClient, EndpointError, RequestRefused, public_url
from tests.endpoint_faults import fault_server, json_reply, slow

OK = {"object": "list", "data": [{"id": "m"}]}


def client_of(server, **kwargs) -> EndpointClient:
    return EndpointClient(server.url, **{"backoff_s": 0.01, "retries": 3, **kwargs})


def test_rate_limits_and_server_errors_are_retried(loopback):
    replies = iter([json_reply({"error": "slow down"}, 429, {"Retry-After": "0"}),
                    json_reply({"error": "busy"}, 503), json_reply(OK)])
    with fault_server(lambda *_: next(replies)) as server:
        assert client_of(server).get("/models") == OK
        assert len(server.requests) == 3


def test_a_server_that_keeps_failing_is_one_line_naming_it(loopback):
    with fault_server(lambda *_: json_reply({"error": {"message": "boom"}}, 500)) as server:
        with pytest.raises(EndpointError, match=r"/v1/models: HTTP 500 boom \(after 4 tries\)"):
            client_of(server).get("/models")
        assert len(server.requests) == 4


def test_a_refused_request_is_not_retried_and_carries_the_servers_words(loopback):
    with fault_server(lambda *_: json_reply({"error": {"message": "no such\nparam"}},
                                            400)) as server:
        with pytest.raises(RequestRefused, match="HTTP 400 no such param$") as caught:
            client_of(server).post("/completions", {"prompt": "x"})
        assert caught.value.status == 400 and len(server.requests) == 1


def test_a_hanging_server_times_out_after_the_retries(loopback):
    with fault_server(lambda *_: slow(1.0, json_reply(OK))) as server:
        with pytest.raises(EndpointError, match=r"no answer within 0.2 s \(after 2 tries\)"):
            client_of(server, timeout_s=0.2, retries=1).get("/models")


@pytest.mark.parametrize(("reply", "problem"), [
    ((200, {}, b"{not json"), "not valid JSON"),
    ((200, {}, b"[" * 100 + b"]" * 100), "nested deeper than 64 levels"),
    ((200, {}, b'{"x": 1e400}'), "out of range"),
    ((200, {}, b'{"x": NaN}'), "NaN is not a number JSON allows"),
    ((200, {}, b"\xff\xfe"), "not UTF-8 text"),
    ((200, {"X-No-Length": "1"}, b'{"x": "' + b"a" * 5000 + b'"}'),
     "response over the bound of 4,096 bytes"),
    ((200, {"Content-Length": "999999999"}, b"{}"), "response of 999,999,999 bytes"),
])
def test_malformed_and_oversized_responses_are_refused(loopback, reply, problem):
    with fault_server(lambda *_: reply) as server:
        with pytest.raises(EndpointError, match=problem):
            client_of(server, max_response_bytes=4096).get("/models")


def test_the_key_goes_in_the_header_only(loopback, tmp_path, monkeypatch):
    with fault_server(lambda *_: json_reply(OK)) as server:
        client = client_of(server, api_key="sk-secret-123", cache_dir=tmp_path / "cache")
        client.post("/completions", {"prompt": "x"})
        headers = server.requests[0][3]
        assert headers["Authorization"] == "Bearer sk-secret-123"
        assert "sk-secret" not in repr(client)
        cached = [p.read_text() for p in (tmp_path / "cache").rglob("*.json")]
        assert cached and not any("sk-secret" in text for text in cached)


@pytest.mark.parametrize(("url", "problem"), [
    ("http://user:sk-1@host/v1", "holds credentials"),
    ("ftp://host/v1", "not an http:// or https://"),
    ("http:///v1", "not an http:// or https://"),
    ("http://host/v1?key=sk-1", "may not have a query"),
])
def test_urls_that_would_leak_or_mislead_are_refused(url, problem):
    with pytest.raises(InputError, match=problem) as caught:
        public_url(url)
    assert "sk-1" not in str(caught.value)


def test_responses_are_cached_by_request_so_a_rerun_asks_nothing(loopback, tmp_path):
    with fault_server(lambda method, path, body: json_reply({"echo": body})) as server:
        first = client_of(server, cache_dir=tmp_path)
        assert first.post("/completions", {"prompt": "a"}) == {"echo": {"prompt": "a"}}
        again = client_of(server, cache_dir=tmp_path)
        assert again.post("/completions", {"prompt": "a"}) == {"echo": {"prompt": "a"}}
        assert again.requests_sent == 0 and len(server.requests) == 1
        again.post("/completions", {"prompt": "b"})
        assert len(server.requests) == 2


def test_requests_in_flight_stay_within_the_concurrency(loopback):
    gate = threading.Barrier(4, timeout=5)

    def rule(method, path, body):
        gate.wait()  # four requests are in flight together, or this times out
        return json_reply({"n": body["n"]})

    with fault_server(rule) as server:
        client = client_of(server, concurrency=4)
        results = client.map(lambda n: client.post("/x", {"n": n})["n"], range(16), "t")
        assert results == list(range(16))
        assert server.in_flight_max == 4


def test_an_unreachable_endpoint_is_one_line_and_exit_2(loopback, tmp_path, capsys):
    with fault_server(lambda *_: json_reply(OK)) as server:
        url = server.url
    code = main(["audit", url, "--suite", "unlearning", "--out", str(tmp_path / "run"),
                 "--request-timeout", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot connect" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("models", "problem"), [
    ({"data": [{"id": "a"}, {"id": "b"}]}, "serves 2 models (a, b); name one with --served-model"),
    ({"data": []}, "serves 0 models"),
    ({"models": []}, "response lacks data"),
    ({"data": "x"}, "response's data is not a list"),
])
def test_a_model_listing_that_does_not_name_the_model_is_refused(loopback, tmp_path, capsys,
                                                                  models, problem):
    with fault_server(lambda *_: json_reply(models)) as server:
        code = main(["audit", server.url, "--suite", "unlearning", "--quiet",
                     "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and problem in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_the_api_key_comes_from_the_named_variable(loopback, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("REDTEAM_TEST_KEY", raising=False)
    code = main(["audit", "http://127.0.0.1:9/v1", "--suite", "unlearning",
                 "--api-key-env", "REDTEAM_TEST_KEY", "--out", str(tmp_path / "run")])
    assert code == 2
    assert "--api-key-env REDTEAM_TEST_KEY: that environment variable is not set" in \
        capsys.readouterr().err


def test_served_model_needs_an_endpoint(tmp_path, capsys):
    code = main(["audit", str(tmp_path), "--suite", "unlearning", "--served-model", "x"])
    assert code == 2 and "--served-model: applies when MODEL is an endpoint URL" in \
        capsys.readouterr().err


def test_cache_files_are_json_of_the_response(loopback, tmp_path):
    with fault_server(lambda *_: json_reply(OK)) as server:
        client_of(server, cache_dir=tmp_path).post("/models", {})
    (file,) = tmp_path.rglob("*.json")
    assert json.loads(file.read_text()) == OK


def test_only_a_causal_lm_is_compared_with_an_endpoint(tmp_path, capsys):
    code = main(["audit", str(tmp_path), "--kind", "image-classifier", "--suite", "backdoor",
                 "--reference", "http://127.0.0.1:9/v1", "--out", str(tmp_path / "run")])
    assert code == 2 and "--reference http://127.0.0.1:9/v1: an endpoint serves a causal LM, " \
        "and the target is kind image-classifier" in capsys.readouterr().err


def test_an_endpoint_is_not_audited_as_another_kind(capsys):
    code = main(["audit", "http://127.0.0.1:9/v1", "--kind", "diffusion", "--suite", "concept"])
    assert code == 2 and "--kind diffusion: an endpoint serves a causal LM" in \
        capsys.readouterr().err


def test_a_certificate_that_does_not_verify_is_refused_without_retries(loopback):
    """TLS verification stays on: a plain-HTTP server reached as https fails the handshake,
    once, in one line."""
    with fault_server(lambda *_: json_reply(OK)) as server:
        url = server.url.replace("http://", "https://")
        with pytest.raises(EndpointError, match="TLS failed") as caught:
            EndpointClient(url, retries=3, backoff_s=0.01).get("/models")
        assert "after" not in str(caught.value) and len(server.requests) == 0
