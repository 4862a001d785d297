"""A small client for a running ComfyUI server: HTTP (requests) for the API, the websocket for execution events."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
import websocket


class PromptRejected(Exception):
    """POST /prompt answered 400: the prompt failed validation. `body` is the parsed JSON answer
    (``error`` and ``node_errors``: node id → ``{"errors": [...], "class_type": ...}``)."""

    def __init__(self, body: dict):
        super().__init__(json.dumps(body, indent=1)[:2000])
        self.body = body

    @property
    def node_errors(self) -> dict:
        return self.body.get("node_errors", {})


@dataclass
class RunResult:
    prompt_id: str
    status: dict  # history "status": status_str, completed, messages
    outputs: dict  # history "outputs": node id → UI outputs (images, …)
    messages: list[dict] = field(default_factory=list)  # every websocket JSON message, in order
    binary: list[bytes] = field(default_factory=list)  # every binary websocket message (previews), in order
    error: dict | None = None  # the execution_error payload
    seconds: float = 0.0

    @property
    def message_types(self) -> list[str]:
        return [m["type"] for m in self.messages]


class ComfyClient:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.client_id = uuid.uuid4().hex

    def get(self, path: str, **params) -> requests.Response:
        response = requests.get(self.url + path, params=params, timeout=60)
        response.raise_for_status()
        return response

    def object_info(self, node_class: str | None = None) -> dict:
        return self.get("/object_info" + (f"/{node_class}" if node_class else "")).json()

    def queue(self, prompt: dict) -> str:
        """Queue an API-format prompt; returns its prompt_id. Raises `PromptRejected` when validation fails."""
        response = requests.post(self.url + "/prompt", json={"prompt": prompt, "client_id": self.client_id}, timeout=60)
        if response.status_code == 400:
            raise PromptRejected(response.json())
        response.raise_for_status()
        return response.json()["prompt_id"]

    def run(self, prompt: dict, timeout: float = 600, on_message=None) -> RunResult:
        """Queue a prompt and follow it on the websocket until it finished, failed or was interrupted.

        The server sends ``executing`` with node None once the prompt is done and its history is stored, also after
        ``execution_error`` / ``execution_interrupted`` (which come before the history is written), so that is where
        reading stops. `on_message(message)` sees every JSON message as it arrives (e.g. to interrupt mid-run).
        """
        start = time.monotonic()
        ws = websocket.create_connection(
            f"ws://{urlsplit(self.url).netloc}/ws?clientId={self.client_id}", timeout=timeout
        )
        try:
            prompt_id = self.queue(prompt)
            messages, binary, error = [], [], None
            while True:
                if time.monotonic() - start > timeout:
                    raise TimeoutError(f"prompt {prompt_id} not finished after {timeout} s; got {messages[-5:]}")
                frame = ws.recv()
                if not isinstance(frame, str):
                    binary.append(frame)  # preview images
                    continue
                message = json.loads(frame)
                messages.append(message)
                if on_message is not None:
                    on_message(message)
                data = message.get("data", {})
                if data.get("prompt_id") != prompt_id:
                    continue
                if message["type"] == "execution_error":
                    error = data
                if message["type"] == "executing" and data.get("node") is None:
                    break
        finally:
            ws.close()
        history = self.get(f"/history/{prompt_id}").json().get(prompt_id, {})
        return RunResult(
            prompt_id=prompt_id,
            status=history.get("status", {}),
            outputs=history.get("outputs", {}),
            messages=messages,
            binary=binary,
            error=error,
            seconds=time.monotonic() - start,
        )

    def view(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        return self.get("/view", filename=filename, subfolder=subfolder, type=type).content

    def interrupt(self) -> None:
        requests.post(self.url + "/interrupt", timeout=60).raise_for_status()
