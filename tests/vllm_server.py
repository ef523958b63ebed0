"""Real vLLM servers for the served-model tests: vLLM's CPU build from its own environment
(``make vllm`` puts it in .vllm-venv), started as a user would start it, one process per model.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VLLM_PYTHON = Path(os.environ.get("REDTEAM_VLLM_PYTHON", ROOT / ".vllm-venv" / "bin" / "python"))
START_TIMEOUT_S = 900


def vllm_missing() -> str | None:
    """Why vLLM cannot be started here, or None."""
    if not VLLM_PYTHON.exists():
        return f"vLLM is not installed ({VLLM_PYTHON} missing; `make vllm` installs it)"
    found = subprocess.run([str(VLLM_PYTHON), "-c", "import vllm.entrypoints.openai.api_server"],
                           capture_output=True, text=True, timeout=300)
    if found.returncode:
        return f"vLLM does not import: {found.stderr.strip().splitlines()[-1:]}"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` serving ``model`` as ``name``."""

    def __init__(self, model: Path, name: str, log: Path, api_key: str | None = None,
                 extra: tuple[str, ...] = ()) -> None:
        self.name, self.log_path = name, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1",
               "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.log = log.open("w")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
             "--served-model-name", name, "--dtype", "float32",
             "--port", str(self.port), "--host", "127.0.0.1", "--enforce-eager",
             "--enable-tokenizer-info-endpoint", *(["--api-key", api_key] if api_key else []),
             *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.startup_s: float | None = None

    def wait(self) -> None:
        """Until ``/v1/models`` answers (the start-up time is kept in ``startup_s``)."""
        deadline = self.started + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM serving {self.name} exited: {self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url.removesuffix('/v1')}/health",
                                            timeout=5) as response:
                    response.read()
                self.startup_s = time.monotonic() - self.started
                return
            except OSError:
                time.sleep(2)
        raise RuntimeError(f"vLLM serving {self.name} did not start in {START_TIMEOUT_S} s: "
                           f"{self.tail()}")

    def tail(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
        self.log.close()
