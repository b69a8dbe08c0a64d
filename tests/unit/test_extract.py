"""Finding the model in request bodies: JSON, urlencoded and multipart forms."""

from __future__ import annotations

import pytest
from multidict import MultiDict

from llama_swap.errors import HTTPError
from llama_swap.server.extract import model_from_body, model_from_query


def multipart(fields: dict[str, bytes], boundary: str = "XyZ") -> tuple[str, bytes]:
    parts = []
    for name, value in fields.items():
        disposition = f'form-data; name="{name}"' + ('; filename="a.wav"' if name == "file" else "")
        parts.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n")
    return f"multipart/form-data; boundary={boundary}", b"".join(parts) + f"--{boundary}--\r\n".encode()


def test_json_body() -> None:
    assert model_from_body("application/json", b'{"model": "llama3", "messages": []}') == "llama3"


def test_json_without_model_is_none() -> None:
    assert model_from_body("application/json", b'{"prompt": "x"}') is None


def test_json_labelled_as_a_form_is_read_as_json() -> None:
    assert model_from_body("application/x-www-form-urlencoded", b' {"model":"m"}') == "m"


def test_urlencoded_form() -> None:
    assert model_from_body("application/x-www-form-urlencoded", b"prompt=hi&model=whisper%20large") == "whisper large"


def test_multipart_field_after_the_file() -> None:
    ctype, body = multipart({"file": b"\x00\xff" * 1000, "model": b"whisper"})
    assert model_from_body(ctype, body) == "whisper"


def test_multipart_without_model() -> None:
    ctype, body = multipart({"file": b"abc"})
    assert model_from_body(ctype, body) is None


def test_empty_body_names_no_model() -> None:
    assert model_from_body("application/json", b"") is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{oops", "request body is not valid JSON"),
        (b'"just a string"', "must be a JSON object"),
        (b'{"model": ["a"]}', "'model' must be a string, got list"),
        (b'{"model": ""}', "'model' must not be empty"),
    ],
)
def test_bad_json_is_a_400_naming_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(HTTPError) as err:
        model_from_body("application/json", body)
    assert err.value.status == 400
    assert message in err.value.message


def test_query_parameter() -> None:
    assert model_from_query(MultiDict(model="m1")) == "m1"
    assert model_from_query(MultiDict()) is None
