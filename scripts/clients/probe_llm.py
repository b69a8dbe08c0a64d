"""Simon Willison's `llm` CLI with the models in extra-openai-models.yaml: prompt, streamed
prompt across a swap, the async Python API, errors."""

import asyncio
import os
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from harness import BASE, BASE_SIMPLE, PROMPT, UNKNOWN, check, error_names_model, expect

print(f"# llm {version('llm')}")
home = Path(tempfile.mkdtemp(prefix="llm-home-"))
os.environ["LLM_USER_PATH"] = str(home)
(home / "extra-openai-models.yaml").write_text("\n".join(
    f"- model_id: {name}\n  model_name: {model}\n  api_base: {base}/v1"
    for name, model, base in [("precise", "precise", BASE), ("creative", "creative", BASE),
                              ("unknown", UNKNOWN, BASE), ("unknown-simple", UNKNOWN, BASE_SIMPLE)]))
LLM = [sys.executable, "-m", "llm"]

import llm  # noqa: E402 (reads LLM_USER_PATH when the models are first listed)


def run(*args: str) -> str:
    done = subprocess.run([*LLM, *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())
    return done.stdout.strip()


async def async_prompt() -> str:
    return await llm.get_async_model("precise").prompt(PROMPT, max_tokens=10).text()


def streamed() -> str:
    text = run("-m", "creative", "-o", "max_tokens", "20", PROMPT)
    expect(bool(text), "empty answer")
    return text


check("chat", lambda: run("-m", "precise", "--no-stream", "-o", "max_tokens", "20", PROMPT))
check("streamed chat, swapping", streamed)
check("async chat", lambda: asyncio.run(async_prompt()))
check("error names the model (errorFormat openai)", lambda: error_names_model(lambda: run("-m", "unknown", "hi")))
check("error names the model (errorFormat simple)",
      lambda: error_names_model(lambda: run("-m", "unknown-simple", "hi")))
