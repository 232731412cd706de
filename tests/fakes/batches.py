"""Batch endpoints of the fake server: OpenAI files + batches and Anthropic message batches.

Results are computed when a job is created; status polls report `in_progress` `batch_polls` times before `completed`/`ended`.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import TYPE_CHECKING, Any

from tests.fakes import protocols as P

if TYPE_CHECKING:
    from tests.fakes.service_server import FakeServiceServer, _Reply


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


class BatchBook:
    def __init__(self, server: FakeServiceServer, polls: int):
        self.server = server
        self.polls = polls
        """Status polls answered `in_progress` before a job is done."""
        self.files: dict[str, dict[str, Any]] = {}
        self.openai_jobs: dict[str, dict[str, Any]] = {}
        self.anthropic_jobs: dict[str, dict[str, Any]] = {}

    async def handle(self, api: str, method: str, path: str, payload: Any, headers: dict[str, str], body: bytes) -> _Reply:
        from tests.fakes.service_server import not_found

        parts = [p for p in path.split("/") if p]
        if api == "openai.files":
            if method == "POST" and len(parts) == 2:
                return self._upload(headers, body)
            file = self.files.get(parts[2]) if len(parts) >= 3 else None
            if file is None:
                return not_found("openai", "file")
            if len(parts) == 4 and parts[3] == "content":
                from tests.fakes.service_server import bytes_reply

                return bytes_reply(file["data"])
            return self._json(file["object"])
        if api == "openai.batches":
            if method == "POST" and len(parts) == 2:
                return self._openai_create(payload or {})
            if method == "GET" and len(parts) == 2:
                data = [job["object"] for job in reversed(self.openai_jobs.values())]
                ids = [d["id"] for d in data]
                return self._json({"object": "list", "data": data, "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None, "has_more": False})
            job = self.openai_jobs.get(parts[2]) if len(parts) >= 3 else None
            return self._json(self._openai_poll(job)) if job else not_found("openai", "batch")
        if api == "anthropic.batches":
            if method == "POST" and len(parts) == 3:
                return self._anthropic_create(payload or {})
            if method == "GET" and len(parts) == 3:
                data = [job["object"] for job in reversed(self.anthropic_jobs.values())]
                ids = [d["id"] for d in data]
                return self._json({"data": data, "has_more": False, "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None})
            job = self.anthropic_jobs.get(parts[3]) if len(parts) >= 4 else None
            if job is None:
                return not_found("anthropic", "message batch")
            if len(parts) == 5 and parts[4] == "results":
                from tests.fakes.service_server import bytes_reply

                return bytes_reply(job["results"], "application/binary")
            return self._json(self._anthropic_poll(job))
        return not_found("openai", path)

    @staticmethod
    def _json(obj: Any) -> _Reply:
        from tests.fakes.service_server import json_reply

        return json_reply(obj)

    # ---- OpenAI -------------------------------------------------------------------------------

    def _upload(self, headers: dict[str, str], body: bytes) -> _Reply:
        from tests.fakes.service_server import new_id

        fields = parse_multipart(headers.get("content-type", ""), body)
        file_id = new_id("file-")
        data, filename = fields.get("file", (b"", "upload.jsonl"))
        return self._json(self._store_file(file_id, data, filename, fields.get("purpose", (b"batch", ""))[0].decode()))

    def _store_file(self, file_id: str, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        obj = {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()), "filename": filename, "purpose": purpose, "status": "processed"}
        self.files[file_id] = {"data": data, "object": obj}
        return obj

    def _openai_create(self, payload: dict[str, Any]) -> _Reply:
        from tests.fakes.service_server import new_id, not_found

        source = self.files.get(payload.get("input_file_id", ""))
        if source is None:
            return not_found("openai", "input file")
        out_lines = []
        for line in source["data"].decode().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            call = P.openai_call(row["body"], {})
            body = self.server.answer(call)
            out_lines.append(json.dumps({"id": new_id("batch_req_"), "custom_id": row["custom_id"], "response": {"status_code": 200, "request_id": new_id("req_"), "body": body}, "error": None}))
        batch_id = new_id("batch_")
        output = self._store_file(new_id("file-"), ("\n".join(out_lines) + "\n").encode(), f"{batch_id}_output.jsonl", "batch_output")
        obj = {
            "id": batch_id, "object": "batch", "endpoint": payload.get("endpoint"), "errors": None, "input_file_id": payload["input_file_id"],
            "completion_window": payload.get("completion_window", "24h"), "status": "validating", "output_file_id": None, "error_file_id": None,
            "created_at": int(time.time()), "request_counts": {"total": len(out_lines), "completed": 0, "failed": 0}, "metadata": payload.get("metadata"),
        }
        self.openai_jobs[batch_id] = {"object": obj, "polls_left": self.polls, "output_file_id": output["id"], "n": len(out_lines)}
        return self._json(obj)

    def _openai_poll(self, job: dict[str, Any]) -> dict[str, Any]:
        obj = job["object"]
        if job["polls_left"] > 0:
            job["polls_left"] -= 1
            obj["status"] = "in_progress"
        else:
            obj.update(status="completed", output_file_id=job["output_file_id"], completed_at=int(time.time()),
                       request_counts={"total": job["n"], "completed": job["n"], "failed": 0})
        return obj

    # ---- Anthropic ----------------------------------------------------------------------------

    def _anthropic_create(self, payload: dict[str, Any]) -> _Reply:
        from tests.fakes.service_server import new_id

        lines = []
        for item in payload.get("requests", []):
            call = P.anthropic_call(item["params"], {})
            message = self.server.answer(call)
            lines.append(json.dumps({"custom_id": item["custom_id"], "result": {"type": "succeeded", "message": message}}))
        batch_id = new_id("msgbatch_")
        obj = {
            "id": batch_id, "type": "message_batch", "processing_status": "in_progress",
            "request_counts": {"processing": len(lines), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
            "created_at": _now_iso(), "expires_at": _now_iso(), "ended_at": None, "cancel_initiated_at": None, "archived_at": None, "results_url": None,
        }
        self.anthropic_jobs[batch_id] = {"object": obj, "polls_left": self.polls, "results": ("\n".join(lines) + "\n").encode(), "n": len(lines)}
        return self._json(obj)

    def _anthropic_poll(self, job: dict[str, Any]) -> dict[str, Any]:
        obj = job["object"]
        if job["polls_left"] > 0:
            job["polls_left"] -= 1
        else:
            obj.update(processing_status="ended", ended_at=_now_iso(), results_url=f"{self.server.url}/v1/messages/batches/{obj['id']}/results",
                       request_counts={"processing": 0, "succeeded": job["n"], "errored": 0, "canceled": 0, "expired": 0})
        return obj


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[bytes, str]]:
    """Fields of a multipart/form-data body: name -> (content, filename)."""
    boundary = next((p.split("=", 1)[1].strip('"') for p in content_type.split(";") if p.strip().startswith("boundary=")), None)
    if boundary is None:
        return {}
    fields: dict[str, tuple[bytes, str]] = {}
    for part in body.split(b"--" + boundary.encode()):
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        disposition = head.decode("latin-1")
        name = _param(disposition, "name")
        if name:
            fields[name] = (content.removesuffix(b"\r\n"), _param(disposition, "filename") or "")
    return fields


def _param(disposition: str, key: str) -> str | None:
    marker = f'{key}="'
    start = disposition.find(marker)
    if start < 0:
        return None
    start += len(marker)
    return disposition[start : disposition.index('"', start)]
