"""langchain-openai: ChatOpenAI (invoke, stream across a swap, ainvoke), OpenAIEmbeddings, errors."""

import asyncio
from importlib.metadata import version

from harness import BASE, BASE_SIMPLE, PROMPT, UNKNOWN, check, error_names_model, expect
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

print(f"# langchain-openai {version('langchain-openai')}")


def llm(model: str, base: str = BASE) -> ChatOpenAI:
    return ChatOpenAI(model=model, base_url=f"{base}/v1", api_key="none", max_tokens=20, max_retries=0)


def stream_swap() -> str:
    text = "".join(chunk.content for chunk in llm("creative").stream(PROMPT))
    expect(bool(text), "empty stream")
    return text


def embed() -> int:
    # check_embedding_ctx_length=False: else it tokenizes with tiktoken, which downloads its
    # tables from the internet, and sends token ids instead of text
    vectors = OpenAIEmbeddings(model="embed", base_url=f"{BASE}/v1", api_key="none",
                               check_embedding_ctx_length=False).embed_documents(["first", "second"])
    expect(len(vectors) == 2, "no embeddings")
    return len(vectors[0])


check("chat", lambda: llm("precise").invoke(PROMPT).content)
check("streamed chat, swapping", stream_swap)
check("embeddings", embed)
check("async chat", lambda: asyncio.run(llm("precise").ainvoke(PROMPT)).content)
check("error names the model (errorFormat openai)", lambda: error_names_model(lambda: llm(UNKNOWN).invoke("hi")))
check("error names the model (errorFormat simple)",
      lambda: error_names_model(lambda: llm(UNKNOWN, BASE_SIMPLE).invoke("hi")))
