"""The official anthropic client against /v1/messages (llama-server serves it): message,
streamed message across a swap, async, errors."""

import asyncio

import anthropic
from harness import BASE, BASE_SIMPLE, PROMPT, UNKNOWN, check, error_names_model, expect

print(f"# anthropic {anthropic.__version__}")
client = anthropic.Anthropic(base_url=BASE, api_key="none", max_retries=0)
MESSAGES = [{"role": "user", "content": PROMPT}]


def message() -> str:
    return client.messages.create(model="precise", max_tokens=20, messages=MESSAGES).content[0].text


def stream_swap() -> str:
    with client.messages.stream(model="creative", max_tokens=20, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
    expect(bool(text), "empty stream")
    return text


async def async_message() -> str:
    aclient = anthropic.AsyncAnthropic(base_url=BASE, api_key="none")
    answer = await aclient.messages.create(model="precise", max_tokens=10, messages=MESSAGES)
    return answer.content[0].text


def unknown(base: str) -> str:
    c = anthropic.Anthropic(base_url=base, api_key="none", max_retries=0)
    return error_names_model(lambda: c.messages.create(model=UNKNOWN, max_tokens=5, messages=MESSAGES))


check("chat", message)
check("streamed chat, swapping", stream_swap)
check("async chat", lambda: asyncio.run(async_message()))
check("error names the model (errorFormat openai)", lambda: unknown(BASE))
check("error names the model (errorFormat simple)", lambda: unknown(BASE_SIMPLE))
