"""Drift back into the loop: low-scored live pairs become train data with the service's answer as the reference,
decontaminated against the frozen test split; `run --from-capture` starts from the current best model."""

from __future__ import annotations

import json
import shutil

import pytest

from llamaduo.config import load_config
from llamaduo.errors import LlamaduoError

TOPICS = ["river deltas", "solar panels", "tax forms", "bee colonies", "rail freight", "glacier retreat", "coffee roasting",
          "chess openings", "tidal power", "paper recycling"]


def chat_completion(text: str) -> dict:
    return {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


@pytest.fixture()
def project(tmp_path):
    """A project whose dataset has a frozen test split of 2 items, and a capture store with four judged live pairs."""
    from llamaduo.data.ingestion import ingest
    from llamaduo.data.splitting import split
    from llamaduo.data.store import DatasetStore

    config = load_config(data={"project": {"workdir": str(tmp_path)}, "data": {"test_size": 2}})
    rows = [{"messages": [{"role": "user", "content": f"Summarize this note about {t} in one sentence, please."},
                          {"role": "assistant", "content": f"The note explains how {t} work and why they matter to people."}]} for t in TOPICS]
    (tmp_path / "seed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest(config, [str(tmp_path / "seed.jsonl")], task="summarization")
    split(config)
    test_item = DatasetStore(config.path(config.data.store)).examples("test")[0]

    from llamaduo.deploy.gateway_run import open_store
    from llamaduo.deploy.livestore import LiveStore

    store = open_store(config.deploy.gateway, config.workdir)
    live = LiveStore(store)

    def pair(prompt: str, service: str, local: str, score: float, *, answered_locally: bool = False) -> str:
        request = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
        if answered_locally:  # the client got the local answer; the service's came in the background as the reference
            cid = store.add(client="app", mode="local", answered_by="local", model="m", request=request, response=chat_completion(local),
                            status=200, latency_ms=5.0)
            live.put_score(cid, "judged", scores={"precision": score}, reference_from="service", reference=chat_completion(service))
        else:
            cid = store.add(client="app", mode="shadow", answered_by="service", model="m", request=request, response=chat_completion(service),
                            status=200, latency_ms=5.0)
            store.set_local(cid, chat_completion(local), 9.0)
            live.put_score(cid, "judged", scores={"precision": score}, reference_from="service_answer")
        return cid

    pair("Summarize the memo on warehouse robots for the board.", "Robots cut picking time by a third.", "Robots.", 20)
    pair("Summarize the complaint about late parcels in two lines.", "Parcels arrived a week late twice.", "Late.", 35, answered_locally=True)
    pair("Summarize the memo on quarterly hiring plans.", "Hiring doubles in Q3 for support.", "Hiring doubles in Q3.", 92)
    # A live pair that is a test item but for one word: decontamination must keep it out of train.
    pair(test_item.messages[0].content + " Thanks.", test_item.reference, "something else", 10)
    store.close()
    return config, test_item


def test_low_scored_live_pairs_become_train_data_decontaminated(project, cli, tmp_path):
    from llamaduo.data.store import DatasetStore

    config, test_item = project
    code, out, err = cli("data", "from-live", "--json", cwd=tmp_path)
    assert code == 0, err
    report = json.loads(out)
    assert report["metric"] == "precision" and report["below"] == 70  # the default policy's coverage@70
    assert report["low_pairs"] == 3 and report["added"] == 3 and report["task"] == "summarization"
    assert any(reason.startswith("test_") for reason in report["dropped"]), report["dropped"]  # decontaminated as usual
    data = DatasetStore(config.path(config.data.store))
    train = {e.messages[0].content: e.reference for e in data.examples("train")}
    assert train["Summarize the memo on warehouse robots for the board."] == "Robots cut picking time by a third."
    assert train["Summarize the complaint about late parcels in two lines."] == "Parcels arrived a week late twice."  # background reference
    assert "Summarize the memo on quarterly hiring plans." not in train  # scored high: not drift
    assert test_item.messages[0].content + " Thanks." not in train
    assert data.examples("test")[0].id == test_item.id  # the test split stays frozen
    logged = [json.loads(line) for line in open(report["file"], encoding="utf-8")]
    assert all(r["metadata"]["origin"] == "live_drift" and r["metadata"]["live_scores"]["precision"] < 70 for r in logged)
    code, _, err = cli("data", "from-live", "--below", "5", cwd=tmp_path)
    assert code == 2 and "no judged live pair scores below 5" in err


def test_run_from_capture_starts_from_the_best_model(project, tiny_model):
    from llamaduo.deploy.drift import from_capture
    from llamaduo.runs import RunFolder
    from llamaduo.train.outputs import write_fingerprint

    config, _ = project
    with pytest.raises(LlamaduoError, match="no trained model"):
        from_capture(config)
    run = RunFolder.create(config.path(config.project.runs_dir), config, run_id="tr1")
    shutil.copytree(tiny_model, run.root / "train" / "merged")
    write_fingerprint(run.root / "train", {"base_model": "tiny", "name": "tr1"}, None, run.root / "train" / "merged")
    nxt, report, found = from_capture(config)
    assert nxt.train.base_model == str(run.root / "train" / "merged") and "training run tr1" in found
    assert report.low_pairs == 3 and nxt.data == config.data
