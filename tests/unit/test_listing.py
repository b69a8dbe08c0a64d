"""GET /v1/models records: names, capabilities rendering, metadata, aliases, status."""

from __future__ import annotations

from typing import Any

import pytest

from llama_swap.config import load_config_text
from llama_swap.process import ProcessState
from llama_swap.redact import use_secrets
from llama_swap.server.listing import model_records, router_status

CREATED = 1714000000
CMD = "cmd: llama-server --port ${PORT}"
UNLOADED = {"value": "unloaded", "args": ["llama-server", "--port", "5800"]}


def records(models_yaml: str, header: str = "", loaded: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The records with every model in ``loaded`` ready, the others stopped."""
    config = load_config_text(f"{header}\nmodels:\n{models_yaml}")

    def status_of(model_id: str) -> dict[str, Any]:
        state = ProcessState.READY if model_id in loaded else ProcessState.STOPPED
        return router_status(state, config.models[model_id].argv, None)

    return model_records(config, CREATED, status_of)


def stopped(model_id: str) -> dict[str, Any]:
    return {"value": "unloaded"}


def only(models_yaml: str, **kwargs: Any) -> dict[str, Any]:
    [record] = records(models_yaml, **kwargs)
    return record


def test_plain_model_record() -> None:
    assert only(f"  llama3:\n    {CMD}\n") == {
        "id": "llama3",
        "object": "model",
        "created": CREATED,
        "owned_by": "llama-swap",
        "meta": {"llamaswap": {"type": "model"}},
        "status": UNLOADED,
    }


def test_sorted_by_id_and_unlisted_hidden() -> None:
    listed = records(
        f"  zeta:\n    {CMD}\n  alpha:\n    {CMD}\n  hidden:\n    {CMD}\n    unlisted: true\n  Beta:\n    {CMD}\n"
    )
    assert [record["id"] for record in listed] == ["Beta", "alpha", "zeta"]


def test_loaded_status_is_asked_per_model() -> None:
    listed = records(f"  a:\n    {CMD}\n  b:\n    {CMD}\n", loaded=frozenset({"b"}))
    assert {record["id"]: record["status"]["value"] for record in listed} == {"a": "unloaded", "b": "loaded"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ('name: "Llama 3"\n    description: "  chat model "', {"name": "Llama 3", "description": "chat model"}),
        ('name: "Llama 3"', {"name": "Llama 3"}),
        ('description: "only a description"', {"description": "only a description"}),
        ('name: "   "\n    description: ""', {}),
    ],
)
def test_name_and_description_trimmed_and_omitted_when_empty(fields: str, expected: dict[str, str]) -> None:
    record = only(f"  m:\n    {CMD}\n    {fields}\n")
    assert {key: record[key] for key in ("name", "description") if key in record} == expected


@pytest.mark.parametrize(
    ("capabilities", "expected"),
    [
        (
            "{in: [text, image], out: [text]}",
            {
                "architecture": {
                    "input_modalities": ["text", "image"],
                    "output_modalities": ["text"],
                    "modality": "text+image->text",
                },
                "capabilities": {"vision": True},
            },
        ),
        (
            "{in: [audio], out: [text]}",
            {
                "architecture": {"input_modalities": ["audio"], "output_modalities": ["text"], "modality": "audio->text"},
                "capabilities": {"audio_transcriptions": True},
            },
        ),
        (
            "{in: [text], out: [audio]}",
            {
                "architecture": {"input_modalities": ["text"], "output_modalities": ["audio"], "modality": "text->audio"},
                "capabilities": {"audio_speech": True},
            },
        ),
        (
            "{in: [text, image], out: [image]}",
            {
                "architecture": {
                    "input_modalities": ["text", "image"],
                    "output_modalities": ["image"],
                    "modality": "text+image->image",
                },
                "capabilities": {"vision": True, "image_generation": True, "image_to_image": True},
            },
        ),
        (
            "{tools: true}",
            {"capabilities": {"function_calling": True}, "supported_parameters": ["tools", "tool_choice"]},
        ),
        ("{reranker: true}", {"capabilities": {"reranker": True}}),
        ("{context: 32768}", {"context_length": 32768}),
        ("{in: [image]}", {"architecture": {"input_modalities": ["image"]}, "capabilities": {"vision": True}}),
        ("{out: [text]}", {"architecture": {"output_modalities": ["text"]}}),
        ("{context: 0}", {}),
    ],
)
def test_capabilities_rendering(capabilities: str, expected: dict[str, Any]) -> None:
    record = only(f"  m:\n    {CMD}\n    capabilities: {capabilities}\n")
    rendered = {"architecture", "capabilities", "supported_parameters", "context_length"}
    assert {key: record[key] for key in rendered if key in record} == expected


def test_context_also_sets_meta_n_ctx() -> None:
    record = only(f"  m:\n    {CMD}\n    capabilities: {{context: 8192, tools: true}}\n")
    assert record["context_length"] == 8192
    assert record["meta"] == {"llamaswap": {"type": "model"}, "n_ctx": 8192}


def test_full_record_key_order() -> None:
    record = only(
        f"  m:\n    {CMD}\n    name: M\n    description: D\n    aliases: [m2]\n"
        "    capabilities: {in: [text], out: [text], tools: true, context: 4096}\n"
    )
    assert list(record) == [
        "id", "object", "created", "owned_by", "name", "description", "architecture", "capabilities",
        "supported_parameters", "context_length", "meta", "status",
    ]


def test_metadata_passes_through_under_meta_llamaswap() -> None:
    record = only(f"  m:\n    {CMD}\n    metadata: {{family: llama, size: 8, tags: [a, b], nested: {{x: 1}}}}\n")
    assert record["meta"] == {
        "llamaswap": {"family": "llama", "size": 8, "tags": ["a", "b"], "nested": {"x": 1}, "type": "model"}
    }
    assert "architecture" not in record


def test_metadata_cannot_override_internal_keys() -> None:
    record = only(f"  m:\n    {CMD}\n    aliases: [a1]\n    metadata: {{type: custom, aliases: nope}}\n")
    assert record["meta"]["llamaswap"] == {"type": "model", "aliases": ["a1"]}


def test_metadata_colliding_with_capability_fields_dropped_when_capabilities_set() -> None:
    metadata = "metadata: {architecture: x, capabilities: y, supported_parameters: z, context_length: 1, keep: 2}"
    record = only(f"  m:\n    {CMD}\n    {metadata}\n    capabilities: {{reranker: true}}\n")
    assert record["meta"]["llamaswap"] == {"keep": 2, "type": "model"}
    assert record["capabilities"] == {"reranker": True}


def test_metadata_colliding_keys_kept_without_capabilities() -> None:
    record = only(f"  m:\n    {CMD}\n    metadata: {{context_length: 1, keep: 2}}\n")
    assert record["meta"]["llamaswap"] == {"context_length": 1, "keep": 2, "type": "model"}
    assert "context_length" not in record


def test_aliases_in_meta_but_not_listed_by_default() -> None:
    record = only(f"  m:\n    {CMD}\n    aliases: [m-b, m-a]\n")
    assert record["meta"]["llamaswap"] == {"type": "model", "aliases": ["m-b", "m-a"]}


def test_set_params_by_id_keys_count_as_aliases() -> None:
    record = only(f"  m:\n    {CMD}\n    aliases: [m-a]\n    filters:\n      setParamsByID: {{m-fast: {{n: 1}}, m: {{n: 2}}}}\n")
    assert record["meta"]["llamaswap"]["aliases"] == ["m-a", "m-fast"]


def test_aliases_listed_as_records_when_enabled() -> None:
    listed = records(
        f"  m:\n    {CMD}\n    name: M\n    aliases: [z-alias, a-alias]\n    metadata: {{k: v}}\n"
        "    capabilities: {context: 100}\n"
        f"  hidden:\n    {CMD}\n    unlisted: true\n    aliases: [hidden-alias]\n",
        header="includeAliasesInList: true",
        loaded=frozenset({"m"}),
    )
    assert [record["id"] for record in listed] == ["a-alias", "m", "z-alias"]
    alias = listed[0]
    assert alias == {
        "id": "a-alias",
        "object": "model",
        "created": CREATED,
        "owned_by": "llama-swap",
        "name": "M",
        "context_length": 100,
        "meta": {"llamaswap": {"k": "v", "type": "alias", "modelID": "m"}, "n_ctx": 100},
        "status": {"value": "loaded", "args": ["llama-server", "--port", "5801"]},  # ports go in id order
    }
    assert listed[1]["meta"]["llamaswap"] == {"k": "v", "type": "model", "aliases": ["z-alias", "a-alias"]}


def test_records_do_not_share_mutable_state_with_the_config() -> None:
    config = load_config_text(
        f"includeAliasesInList: true\nmodels:\n  m:\n    {CMD}\n    aliases: [a]\n"
        "    capabilities: {in: [text], out: [text]}\n"
    )
    first = model_records(config, CREATED, stopped)
    first[1]["meta"]["llamaswap"]["aliases"].append("x")
    first[1]["architecture"]["input_modalities"].append("x")
    assert model_records(config, CREATED, stopped) != first
    assert config.models["m"].aliases == ["a"]


@pytest.mark.parametrize(
    ("state", "value"),
    [
        (ProcessState.STOPPED, "unloaded"),
        (ProcessState.STARTING, "loading"),
        (ProcessState.READY, "loaded"),
        (ProcessState.STOPPING, "loaded"),  # until its process is gone, as llama-server's router says
        (ProcessState.FAILED, "unloaded"),
    ],
)
def test_states_are_named_as_llama_cpp_router_names_them(state: ProcessState, value: str) -> None:
    assert router_status(state, ["llama-server"], None)["value"] == value


def test_a_failed_start_says_so_and_why() -> None:
    assert router_status(ProcessState.FAILED, ["srv"], "exited with code 1") == {
        "value": "unloaded", "args": ["srv"], "failed": True, "error": "exited with code 1"}


def test_args_hide_secrets() -> None:
    use_secrets(["sk-configured-key"])
    try:
        status = router_status(ProcessState.READY, [
            "llama-server", "--api-key", "hunter2", "--hf-token=abc", "--alias", "x-sk-configured-key"], None)
    finally:
        use_secrets([])
    assert status["args"] == [
        "llama-server", "--api-key", "[REDACTED]", "--hf-token=[REDACTED]", "--alias", "x-[REDACTED]"]


def test_aliases_can_be_asked_for_whatever_the_setting() -> None:
    config = load_config_text(f"models:\n  m:\n    {CMD}\n    aliases: [a]\n")
    assert [r["id"] for r in model_records(config, CREATED, stopped)] == ["m"]
    assert [r["id"] for r in model_records(config, CREATED, stopped, aliases=True)] == ["a", "m"]
