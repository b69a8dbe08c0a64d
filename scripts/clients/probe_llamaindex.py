"""llama-index: OpenAILike (chat, stream_chat across a swap, achat), OpenAILikeEmbedding, errors."""

import asyncio
from importlib.metadata import version

from harness import BASE, BASE_SIMPLE, PROMPT, UNKNOWN, check, error_names_model, expect
from llama_index.core.llms import ChatMessage
from llama_index.embeddings.openai_like import OpenAILikeEmbedding
from llama_index.llms.openai_like import OpenAILike

print(f"# llama-index-core {version('llama-index-core')}, llama-index-llms-openai-like "
      f"{version('llama-index-llms-openai-like')}")
MESSAGES = [ChatMessage(role="user", content=PROMPT)]


def llm(model: str, base: str = BASE) -> OpenAILike:
    return OpenAILike(model=model, api_base=f"{base}/v1", api_key="none", is_chat_model=True, max_tokens=20,
                      max_retries=0)


def stream_swap() -> str:
    text = "".join(part.delta or "" for part in llm("creative").stream_chat(MESSAGES))
    expect(bool(text), "empty stream")
    return text


def embed() -> int:
    vectors = OpenAILikeEmbedding(model_name="embed", api_base=f"{BASE}/v1", api_key="none").get_text_embedding_batch(
        ["first", "second"])
    expect(len(vectors) == 2, "no embeddings")
    return len(vectors[0])


check("chat", lambda: llm("precise").chat(MESSAGES).message.content)
check("streamed chat, swapping", stream_swap)
check("embeddings", embed)
check("async chat", lambda: asyncio.run(llm("precise").achat(MESSAGES)).message.content)
check("error names the model (errorFormat openai)", lambda: error_names_model(lambda: llm(UNKNOWN).chat(MESSAGES)))
check("error names the model (errorFormat simple)",
      lambda: error_names_model(lambda: llm(UNKNOWN, BASE_SIMPLE).chat(MESSAGES)))
