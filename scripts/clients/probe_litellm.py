"""litellm: completion, streamed completion across a swap, embedding, acompletion, errors."""

import asyncio
from importlib.metadata import version

import litellm
from harness import BASE, BASE_SIMPLE, PROMPT, UNKNOWN, check, error_names_model, expect

print(f"# litellm {version('litellm')}")
MESSAGES = [{"role": "user", "content": PROMPT}]


def ask(model: str, base: str = BASE, **kw: object) -> object:
    return litellm.completion(model=f"openai/{model}", api_base=f"{base}/v1", api_key="none",
                              messages=MESSAGES, max_tokens=20, num_retries=0, **kw)


def stream_swap() -> str:
    text = "".join(c.choices[0].delta.content or "" for c in ask("creative", stream=True) if c.choices)
    expect(bool(text), "empty stream")
    return text


def embed() -> int:
    data = litellm.embedding(model="openai/embed", api_base=f"{BASE}/v1", api_key="none", input=["first", "second"]).data
    expect(len(data) == 2, "no embeddings")
    return len(data[0]["embedding"])


async def async_chat() -> str:
    answer = await litellm.acompletion(model="openai/precise", api_base=f"{BASE}/v1", api_key="none",
                                       messages=MESSAGES, max_tokens=10)
    return answer.choices[0].message.content


check("chat", lambda: ask("precise").choices[0].message.content)
check("streamed chat, swapping", stream_swap)
check("embeddings", embed)
check("async chat", lambda: asyncio.run(async_chat()))
check("error names the model (errorFormat openai)", lambda: error_names_model(lambda: ask(UNKNOWN)))
check("error names the model (errorFormat simple)", lambda: error_names_model(lambda: ask(UNKNOWN, BASE_SIMPLE)))
