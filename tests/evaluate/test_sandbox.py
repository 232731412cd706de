"""The sandbox against hostile code, and the canonical MBPP/HumanEval solutions as a self-test."""

from __future__ import annotations

import gzip
import json
import os
import uuid
from pathlib import Path

import pytest

from llamaduo.evaluate.config import SandboxConfig
from llamaduo.evaluate.metrics.passk import program_with_tests
from llamaduo.evaluate.sandbox import Sandbox

LIMITS = {"timeout_s": 3, "cpu_s": 1, "memory_mb": 512, "file_size_mb": 1, "max_processes": 16}


def hostile(outside: Path) -> dict[str, str]:
    return {
        "cpu_loop": "while True:\n    pass\n",
        "sleep": "import time\ntime.sleep(60)\n",
        "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "network": "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\n",
        "raw_socket": "import _socket\ns = _socket.socket()\ns.settimeout(2)\ns.connect(('1.1.1.1', 80))\n",
        "write_outside": f"open({str(outside)!r}, 'w').write('pwned')\n",
        "os_write_outside": f"import os\nos.close(os.open({str(outside) + '.2'!r}, os.O_CREAT | os.O_WRONLY))\n",
        "memory_hog": "x = bytearray(4 * 1024 ** 3)\n",
        "huge_file": "open('big', 'wb').write(b'x' * 5_000_000)\n",
        "fake_pass": "import sys\nsys.exit(0)\n",
        "secrets": "import os\nassert 'OPENAI_API_KEY' not in os.environ, os.environ['OPENAI_API_KEY']\n",
    }


@pytest.fixture(scope="module")
def outside_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("outside")


@pytest.mark.parametrize("isolate", ["auto", "python"])
def test_hostile_code_is_contained(isolate, outside_dir, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")
    target = outside_dir / f"{isolate}-{uuid.uuid4().hex}.txt"
    sandbox = Sandbox(SandboxConfig(isolate=isolate, **LIMITS))
    programs = hostile(target)
    results = dict(zip(programs, sandbox.run_many(programs.values(), workers=4), strict=True))
    failing = {name for name in programs if name != "secrets"}
    for name in failing:
        assert not results[name].passed, (name, results[name])
    assert results["secrets"].passed, results["secrets"]
    assert results["sleep"].status == "timeout"
    assert results["cpu_loop"].status in ("failed", "timeout")
    assert "network" in results["network"].reason.lower() or "unreachable" in results["network"].reason.lower()
    assert "SystemExit" in results["fake_pass"].reason
    assert not target.exists() and not Path(str(target) + ".2").exists()
    assert "sk-must-not-leak" not in json.dumps([r.model_dump() for r in results.values()])


def test_fork_bomb_leaves_no_process_behind():
    program = "import os, time\nfor _ in range(8):\n    if os.fork() == 0:\n        time.sleep(30)\ntime.sleep(30)\n"
    result = Sandbox(SandboxConfig(**LIMITS)).run(program)
    # "failed" where only the Python-level process guard is available (root without namespaces or cgroups).
    assert result.status in ("timeout", "failed") and not result.passed
    survivors = [pid for pid in filter(str.isdigit, os.listdir("/proc")) if _cwd_is_sandbox(pid)]
    assert not survivors


def _cwd_is_sandbox(pid: str) -> bool:
    try:
        return "llamaduo-sandbox-" in os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False


def test_canonical_solutions_pass(shared_data):
    mbpp = [json.loads(line) for line in (shared_data / "mbpp" / "mbpp_test_500.jsonl").read_text().splitlines()[:6]]
    with gzip.open(shared_data / "humaneval" / "HumanEval.jsonl.gz", "rt") as fh:
        human = [json.loads(next(fh)) for _ in range(4)]
    programs = [program_with_tests(r["code"], r) for r in mbpp] + [program_with_tests(r["canonical_solution"], r) for r in human]
    broken = program_with_tests("def remove_Occ(s, ch):\n    return s\n", mbpp[0])
    results = Sandbox(SandboxConfig(timeout_s=30)).run_many([*programs, broken])
    assert all(r.passed for r in results[:-1]), [r.reason for r in results if not r.passed]
    assert results[-1].status == "failed" and "AssertionError" in results[-1].reason


def test_pass_at_k_through_evaluate(tmp_path):
    from llamaduo.config import load_config
    from llamaduo.evaluate import evaluate
    from llamaduo.records import Answer, Example, Message

    cfg = load_config(data={"project": {"workdir": str(tmp_path)},
                            "evaluate": {"judge": False, "metrics": ["pass_at_k", "rouge_l"], "pass_k": [1, 2], "bootstrap": 100,
                                         "sandbox": LIMITS}})
    tests = {"test_list": ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"], "test_setup_code": ""}
    example = Example(id="add", task="coding", messages=[Message(role="user", content="Write add(a, b)."),
                                                          Message(role="assistant", content="def add(a, b): return a + b")], metadata=tests)
    answers = [
        Answer(example_id="add", task="coding", sample=0, messages=example.prompt, text="```python\ndef add(a, b):\n    return a + b\n```"),
        Answer(example_id="add", task="coding", sample=1, messages=example.prompt, text="def add(a, b):\n    return a - b"),
    ]
    report = evaluate(cfg, answers, examples=[example])
    assert report.metrics["pass@1"].per_sample.mean == 50.0  # c=1 of n=2
    assert report.metrics["pass@2"].per_sample.mean == 100.0
    assert report.by_task["coding"]["pass@1"].n == 1
    assert "rouge_l" not in report.metrics  # items with unit tests are judged by their tests
    assert report.failures.sandbox == {"failed": 1} and report.sandbox
