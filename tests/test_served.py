"""Audits through a real vLLM server (the test zoo's models served by vLLM's CPU build) give
the verdicts of the in-process audit of the same folders; what the endpoint cannot give is
skipped by name; no credential is written anywhere; a re-run asks the server nothing twice;
a server that breaks mid-run stops the run with one line, resumable."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from redteam.cli import main
from redteam.core.http import EndpointClient
from redteam.core.served import ServedModel, ServedScorer, ServedTokenizer
from redteam.engine import AuditRequest, ModelCache, run_audit
from redteam.targets import EndpointSpec, load_target
from tests.endpoint_faults import fault_server, json_reply
from tests.vllm_server import VLLMServer, vllm_missing

KEY_ENV = "REDTEAM_TEST_VLLM_KEY"
WEIGHT_PROBES = {"unlearning.linear_probe", "unlearning.parametric_traces",
                 "unlearning.relearning_attack"}
FIGURE_TOLERANCE = 0.02  # absolute, on every figure both paths measured


@pytest.fixture(scope="module")
def vllm_servers(unlearning_zoo, format_zoo, tmp_path_factory) -> dict[str, object]:
    """vLLM servers of the test zoo's original and NPO models and of the original that learnt
    its questions only through a chat template ("chat"), started together from vLLM's own
    environment (tests/vllm_server.py), and stopped after this module's tests; the original one
    requires an API key (``REDTEAM_TEST_VLLM_KEY``). Skips when vLLM cannot be installed here."""
    missing = vllm_missing()
    if missing:
        pytest.skip(missing)
    logs = tmp_path_factory.mktemp("vllm")
    os.environ[KEY_ENV] = "sk-redteam-test-0123456789"
    models = {"original": unlearning_zoo["original"], "npo": unlearning_zoo["npo"],
              "chat": format_zoo["chat"]["original"]}
    servers = {name: VLLMServer(model, name, logs / f"{name}.log",
                                api_key=os.environ[KEY_ENV]
                                if name == "original" else None)
               for name, model in models.items()}
    try:
        for server in servers.values():
            server.wait()
        print("\nvLLM start-up: " + ", ".join(f"{name} {server.startup_s:.0f} s"
                                              for name, server in servers.items()))
        yield servers
    finally:
        for server in servers.values():
            server.stop()
        os.environ.pop(KEY_ENV, None)


def spec(server, cache: Path | None = None, **kwargs) -> EndpointSpec:
    key_env = KEY_ENV if server.name == "original" else None
    return EndpointSpec(url=server.url, served_model=server.name, api_key_env=key_env,
                        cache_dir=cache, **kwargs)


def served_of(server) -> ServedModel:
    key = os.environ[KEY_ENV] if server.name == "original" else None
    return ServedModel.discover(EndpointClient(server.url, api_key=key), server.name)


def test_capabilities_are_found_by_asking(vllm_servers, loopback):
    found = served_of(vllm_servers["npo"]).capabilities
    assert found.completions and found.echo_logprobs and found.tokenize and found.seed
    assert not found.chat_template  # the test zoo's tokenizer has no chat template
    assert found.access() == {"generation", "token_logprobs", "tokenizer"}
    assert served_of(vllm_servers["chat"]).capabilities.chat_template


def test_the_served_tokenizer_is_the_folders(vllm_servers, unlearning_zoo, loopback):
    local = load_target(unlearning_zoo["npo"]).tokenizer
    served = ServedTokenizer(served_of(vllm_servers["npo"]))
    assert (served.bos_token, served.bos_token_id) == (local.bos_token, local.bos_token_id)
    for text in ("Where was Mara Vidal born?", " Bergen, in 1970.", "héllo\n  wörld"):
        ids = local(text, add_special_tokens=False)["input_ids"]
        assert served.encode(text) == ids
        assert served.decode(ids) == local.decode(ids)


def test_served_scores_and_answers_are_the_in_process_ones(vllm_servers, unlearning_zoo,
                                                          loopback):
    from redteam.core.scoring import CausalLMScorer

    target = load_target(unlearning_zoo["npo"])
    local = CausalLMScorer(target.model, target.tokenizer)
    model = served_of(vllm_servers["npo"])
    served = ServedScorer(model, ServedTokenizer(model))
    prompts = ["Question: Where was Mara Vidal born?\nAnswer:", "", "The"]
    texts = [" Bergen, in 1970.", "A text scored from its start.", " quick brown fox"]
    for mine, theirs in zip(served.score(texts, prompts), local.score(texts, prompts)):
        np.testing.assert_allclose(mine.logprobs, theirs.logprobs, atol=1e-3)
        assert (mine.argmax_match == theirs.argmax_match).all()
        assert np.isnan(mine.mu).all()  # the vocabulary's distribution is not served
    assert served.generate(prompts[:1], max_new_tokens=8) == \
        local.generate(prompts[:1], max_new_tokens=8)


def statuses(findings) -> dict[str, tuple[str, float | None]]:
    return {f.probe: (f.status, f.metric.value if f.metric else None) for f in findings}


@pytest.mark.parametrize("name", ["original", "npo"])
def test_a_served_audit_gives_the_in_process_verdicts(vllm_servers, unlearning_zoo, tmp_path,
                                                     name, loopback):
    common = dict(suite="unlearning", data=unlearning_zoo["audit"], quiet=True,
                  reference=unlearning_zoo["original"], retrain=unlearning_zoo["retrain"])
    local = run_audit(AuditRequest(model=unlearning_zoo[name], out=tmp_path / "local",
                                   **common))
    served = run_audit(AuditRequest(model=spec(vllm_servers[name], tmp_path / "cache"),
                                    out=tmp_path / "served", **common))
    mine, theirs = statuses(served.findings), statuses(local.findings)
    skipped = {f.probe: f.summary for f in served.findings if f.status == "skipped"}
    assert WEIGHT_PROBES <= set(skipped)
    assert all("needs the weights" in skipped[p] and vllm_servers[name].url in skipped[p]
               for p in WEIGHT_PROBES)
    compared = sorted(p for p in theirs if p in mine and p not in skipped)
    assert len(compared) >= 6, compared
    gaps = {}
    for probe in compared:
        assert mine[probe][0] == theirs[probe][0], (probe, mine[probe], theirs[probe])
        if mine[probe][1] is not None and theirs[probe][1] is not None:
            gaps[probe] = abs(mine[probe][1] - theirs[probe][1])
    print(f"\n{name}: " + ", ".join(f"{p.split('.')[-1]} {theirs[p][0]} "
                                   f"{theirs[p][1]}/{mine[p][1]}" for p in compared))
    assert all(gap <= FIGURE_TOLERANCE or math.isnan(gap) for gap in gaps.values()), gaps
    run = json.loads((tmp_path / "served" / "findings.json").read_text())["run"]
    assert run["target"]["served"]["weights_seen"] is False
    assert run["target"]["served"]["fingerprint"]["sha256"]
    report = (tmp_path / "served" / "report.html").read_text()
    assert "its weights were not seen" in report


def test_no_credential_is_written_and_a_rerun_asks_nothing(vllm_servers, unlearning_zoo,
                                                           tmp_path, loopback):
    server = vllm_servers["original"]
    key = os.environ[KEY_ENV]
    request = dict(suite="unlearning", data=unlearning_zoo["audit"], quiet=True,
                   probes=["unlearning.knowledge_qa", "unlearning.membership_inference"])
    first_cache, second_cache = ModelCache(), ModelCache()
    run_audit(AuditRequest(model=spec(server, tmp_path / "cache"), out=tmp_path / "a",
                           **request), first_cache)
    run_audit(AuditRequest(model=spec(server, tmp_path / "cache"), out=tmp_path / "b",
                           **request), second_cache)
    (first,), (second,) = (list(c._targets.values()) for c in (first_cache, second_cache))
    asked = first.served.client.requests_sent
    assert asked > 40 and second.served.client.requests_sent <= 12  # discovery only
    for folder in (tmp_path / "a", tmp_path / "b", tmp_path / "cache"):
        for file in folder.rglob("*"):
            assert not file.is_file() or key.encode() not in file.read_bytes(), file


def test_without_the_key_the_endpoint_refuses_in_one_line(vllm_servers, tmp_path, capsys,
                                                          loopback):
    server = vllm_servers["original"]
    code = main(["audit", server.url, "--served-model", "original", "--suite", "unlearning",
                 "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "HTTP 401" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_a_server_breaking_mid_run_stops_it_resumably(vllm_servers, unlearning_zoo, tmp_path,
                                                      capsys, loopback):
    """A proxy in front of the real server answers garbage once the audit is under way: one
    line, exit 2, no findings built on it; --resume through the healthy server finishes."""
    import urllib.error
    import urllib.request

    server = vllm_servers["npo"]
    echoed = []

    def proxy(method, path, body):
        if path.endswith("/completions") and body.get("echo"):
            echoed.append(body)
            if len(echoed) > 5:  # after discovery's check and the fingerprint's four texts
                return json_reply({"choices": [{"logprobs": {"token_logprobs": "x"}}]})
        upstream = server.url.removesuffix("/v1") + path
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(upstream, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, {"Content-Type": "application/json"}, response.read()
        except urllib.error.HTTPError as refused:  # e.g. no chat template: passed on as is
            return refused.code, {"Content-Type": "application/json"}, refused.read()

    args = ["audit", "--served-model", "npo", "--suite", "unlearning", "--quiet",
            "--data", str(unlearning_zoo["audit"]), "--out", str(tmp_path / "run"),
            "--probe", "unlearning.membership_inference", "--probe", "unlearning.knowledge_qa",
            "--endpoint-cache", str(tmp_path / "cache")]
    with fault_server(proxy) as broken:
        code = main([args[0], broken.url, *args[1:]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "response's token_logprobs is not a list" in err and "--resume" in err
    assert not (tmp_path / "run" / "findings.json").exists()
    code = main([args[0], server.url, *args[1:], "--resume"])
    assert code in (0, 1)
    document = json.loads((tmp_path / "run" / "findings.json").read_text())
    assert {f["probe"] for f in document["findings"]} == {"unlearning.membership_inference",
                                                          "unlearning.knowledge_qa"}


def test_the_chat_format_is_the_servers_template(vllm_servers, format_zoo, tmp_path, loopback):
    """A model that learnt its questions only through its chat template is asked through the
    server's template (rendered by /tokenize): calibration picks the same chat format, with the
    same example prompt and retain scores, and the verdict is the in-process one."""
    zoo = format_zoo["chat"]
    common = dict(suite="unlearning", data=zoo["audit"], quiet=True,
                  probes=["unlearning.knowledge_qa"])
    runs = {}
    for label, model in (("local", zoo["original"]),
                         ("served", spec(vllm_servers["chat"], tmp_path / "cache"))):
        result = run_audit(AuditRequest(model=model, out=tmp_path / label, **common))
        document = json.loads((tmp_path / label / "findings.json").read_text())
        runs[label] = (result.findings[0], document["run"]["prompt_format"])
    (local, local_format), (served, served_format) = runs["local"], runs["served"]
    assert served_format["name"] == local_format["name"] and served_format["name"].startswith(
        "chat")
    assert served_format["example"] == local_format["example"]
    assert served_format["calibration"]["candidates"] == local_format["calibration"]["candidates"]
    assert (served.status, served.metric.value) == (local.status, local.metric.value) == \
        ("fail", local.metric.value)
