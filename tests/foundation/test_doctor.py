"""`llamaduo doctor`: one line per capability, service roles checked against a real loopback server, paid only on request."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from llamaduo import doctor
from tests.fakes.fixtures import FAKE_KEY

CAPABILITIES = ["cpu", "bf16 matmul", "torch threads", "gpu", "vllm", "training stack", "llama.cpp",
                "gguf converter", "ollama", "disk", "memory"]


def project(tmp_path: Path, base_url: str, judge_url: str | None = None) -> Path:
    role = {"provider": "openai", "model": "gpt-4o-mini", "base_url": base_url, "api_key_env": "FAKE_SERVICE_KEY"}
    path = tmp_path / "llamaduo.yaml"
    path.write_text(yaml.safe_dump({"service": {"generator": role, "judge": [{**role, "base_url": judge_url or base_url}]}}))
    return path


def dead_url() -> str:
    with socket.socket() as probe:  # a port nothing listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/v1"


@pytest.fixture(autouse=True)
def quick_llamacpp(monkeypatch):
    # The llama.cpp probe itself is tested in tests/infer/test_native.py; here its answer comes from the override.
    monkeypatch.setenv("LLAMADUO_LLAMACPP_SAFE", "0")


def lines(out: str) -> dict[str, str]:
    """Printed line per capability name."""
    found = {}
    for line in out.splitlines():
        status, _, rest = line.partition(" ")
        name = next((n for n in [*CAPABILITIES, "service generator", "service judge.0", "service"] if rest.strip().startswith(n + " ")), None)
        if name and status in ("ok", "warn", "fail"):
            found.setdefault(name, line)
    return found


def test_every_capability_gets_one_line_and_roles_cost_nothing(cli, tmp_path, fake_service, monkeypatch):
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    code, out, err = cli("doctor", "-c", str(project(tmp_path, fake_service.openai_base_url)))
    assert code == 0, (out, err)
    printed = lines(out)
    assert set(printed) >= {*CAPABILITIES, "service generator", "service judge.0"}
    assert len(out.strip().splitlines()) == len(CAPABILITIES) + 2
    assert printed["service generator"].startswith("ok") and "key present" in printed["service generator"]
    assert "llama-cpp-python" in printed["llama.cpp"] or "not installed" in printed["llama.cpp"]
    # Reachability is a keyless GET; no chat request (the paid kind) was sent, and the key went nowhere.
    assert fake_service.count("openai.chat") == 0
    gets = [r for r in fake_service.received() if r.method == "GET"]
    assert gets and all(r.path.endswith("/models") and "authorization" not in {k.lower() for k in r.headers} for r in gets)
    assert FAKE_KEY not in out + err


def test_a_missing_key_or_a_dead_endpoint_fails_with_the_fix(cli, tmp_path, fake_service, monkeypatch):
    monkeypatch.delenv("FAKE_SERVICE_KEY", raising=False)
    # A remote endpoint needs a key; the key is checked first, so this name is never looked up.
    code, out, err = cli("doctor", "-c", str(project(tmp_path, "https://llm.example.invalid/v1")))
    printed = lines(out)
    assert code == 2 and printed["service generator"].startswith("fail") and "FAKE_SERVICE_KEY" in printed["service generator"]
    assert "fix: Export FAKE_SERVICE_KEY=" in printed["service generator"]
    assert err.count("\n") == 1 and "service generator, service judge.0 failed" in err and "Traceback" not in err

    # A loopback server needs no key (its SDK gets a placeholder), and the line says so.
    code, out, err = cli("doctor", "-c", str(project(tmp_path, fake_service.openai_base_url, dead_url())))
    printed = lines(out)
    assert code == 2 and printed["service generator"].startswith("ok") and "no key needed (local server)" in printed["service generator"]
    assert printed["service judge.0"].startswith("fail") and "cannot reach" in printed["service judge.0"] and "base_url" in printed["service judge.0"]


def test_check_service_sends_the_paid_probe(cli, tmp_path, fake_service, monkeypatch):
    monkeypatch.setenv("FAKE_SERVICE_KEY", FAKE_KEY)
    code, out, err = cli("doctor", "-c", str(project(tmp_path, fake_service.openai_base_url)), "--check-service")
    assert code == 0, (out, err)
    assert fake_service.count("openai.chat") == 2
    assert "answered the probe in" in lines(out)["service judge.0"]


def test_json_output_and_no_config(cli, tmp_path):
    code, out, _ = cli("doctor", "--json", cwd=tmp_path)
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    by_name = {c["name"]: c for c in report["checks"]}
    assert set(by_name) == {*CAPABILITIES, "service"}
    assert by_name["service"]["status"] == "warn" and "llamaduo init" in by_name["service"]["fix"]
    assert by_name["llama.cpp"]["status"] in ("ok", "warn")
    for check in report["checks"]:
        assert check["status"] in ("ok", "warn", "fail") and check["detail"]
        assert (check["fix"] is None) == (check["status"] == "ok")


def test_matmul_probe_measures_both_precisions():
    check = doctor.check_matmul(seconds=0.05)
    assert check.name == "bf16 matmul" and check.status in ("ok", "warn")
    assert "bf16" in check.detail and "fp32" in check.detail and "GFLOP/s" in check.detail and "precision auto uses" in check.detail


def test_disk_check_walks_up_to_an_existing_folder(tmp_path):
    check = doctor.check_disk(tmp_path / "not" / "yet" / "made")
    assert check.name == "disk" and "GB free" in check.detail and check.status in ("ok", "warn", "fail")
