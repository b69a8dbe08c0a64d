"""The official openai client: list, chat, a streamed chat that swaps, embeddings, async, errors."""

import asyncio

import openai
from harness import BASE, BASE_SIMPLE, PROMPT, UNKNOWN, check, error_names_model, expect

client = openai.OpenAI(base_url=f"{BASE}/v1", api_key="none")
simple = openai.OpenAI(base_url=f"{BASE_SIMPLE}/v1", api_key="none", max_retries=0)
print(f"# openai {openai.__version__}")


def chat() -> str:
    answer = client.chat.completions.create(model="precise", messages=[{"role": "user", "content": PROMPT}],
                                            max_tokens=20)
    return answer.choices[0].message.content


def stream_swap() -> str:
    parts = client.chat.completions.create(model="creative", messages=[{"role": "user", "content": PROMPT}],
                                           max_tokens=20, stream=True)
    text = "".join(p.choices[0].delta.content or "" for p in parts if p.choices)
    expect(bool(text), "empty stream")
    return text


def embed() -> int:
    data = client.embeddings.create(model="embed", input=["first", "second"]).data
    expect(len(data) == 2 and len(data[0].embedding) > 0, "no embeddings")
    return len(data[0].embedding)


async def async_chat() -> str:
    aclient = openai.AsyncOpenAI(base_url=f"{BASE}/v1", api_key="none")
    answer = await aclient.chat.completions.create(model="precise", max_tokens=10,
                                                   messages=[{"role": "user", "content": PROMPT}])
    await aclient.close()
    return answer.choices[0].message.content


def unknown(c: openai.OpenAI) -> str:
    return error_names_model(lambda: c.chat.completions.create(model=UNKNOWN, messages=[{"role": "user",
                                                                                         "content": "hi"}]))


check("list models", lambda: [m.id for m in client.models.list()])
check("retrieve a model", lambda: client.models.retrieve("precise").id)
check("chat", chat)
check("streamed chat, swapping", stream_swap)
check("embeddings", embed)
check("async chat", lambda: asyncio.run(async_chat()))
check("error names the model (errorFormat openai)", lambda: unknown(client))
check("error names the model (errorFormat simple)", lambda: unknown(simple))
