"""The official ollama client against the service's Ollama API: list, show, ps, chat, a
streamed chat that swaps, generate, embed, async, errors."""

import asyncio
from importlib.metadata import version

import ollama
from harness import BASE, BASE_SIMPLE, PROMPT, UNKNOWN, check, error_names_model, expect

print(f"# ollama {version('ollama')}")
client = ollama.Client(host=BASE)
MESSAGES = [{"role": "user", "content": PROMPT}]
OPTIONS = {"num_predict": 20}


def stream_swap() -> str:
    text = "".join(part.message.content or "" for part in
                   client.chat(model="creative", messages=MESSAGES, stream=True, options=OPTIONS))
    expect(bool(text), "empty stream")
    return text


def embed() -> int:
    vectors = client.embed(model="embed", input=["first", "second"]).embeddings
    expect(len(vectors) == 2, "no embeddings")
    return len(vectors[0])


async def async_chat() -> str:
    answer = await ollama.AsyncClient(host=BASE).chat(model="precise", messages=MESSAGES, options=OPTIONS)
    return answer.message.content


check("list models", lambda: [m.model for m in client.list().models])
check("retrieve a model", lambda: client.show("precise").modelinfo is not None)
check("chat", lambda: client.chat(model="precise", messages=MESSAGES, options=OPTIONS).message.content)
check("streamed chat, swapping", stream_swap)
check("generate", lambda: client.generate(model="precise", prompt=PROMPT, options=OPTIONS).response)
check("embeddings", embed)
check("async chat", lambda: asyncio.run(async_chat()))
check("running models (ps)", lambda: [m.model for m in client.ps().models])
check("error names the model (errorFormat openai)",
      lambda: error_names_model(lambda: client.chat(model=UNKNOWN, messages=MESSAGES)))
check("error names the model (errorFormat simple)",
      lambda: error_names_model(lambda: ollama.Client(host=BASE_SIMPLE).chat(model=UNKNOWN, messages=MESSAGES)))
