"""`/comfyui/…`: ComfyUI's web app, passed through to the reserved model `comfyui_auto`.

ComfyUI is a browser app, not an OpenAI-compatible server, so the Go version (v249,
`internal/server/comfyui.go`) gives it a passthrough of its own, bound to one model id whose
config forces `compat.ignoreWebsockets` and `concurrencyLimit >= 50`: an open ComfyUI tab
holds a websocket open (and keeps retrying it) for as long as it is open, which must neither
keep the model loaded nor load it back after an unload. So a `GET /comfyui/ws` (or below
it) for a model that is not ready is a 409; every other request is a deliberate action and
may start it. `/comfyui` alone redirects to `/comfyui/`.
"""

from __future__ import annotations

from llama_swap.config.model import COMFYUI_MODEL_ID

PREFIX = b"/comfyui"
WEBSOCKET_PATH = "/ws"  # ComfyUI's frontend websocket: the one path that does not start the model


def is_comfyui(target: bytes) -> bool:
    """Whether a request target is `/comfyui` or below it (not `/comfyuix`)."""
    return target.startswith(PREFIX) and target[len(PREFIX):len(PREFIX) + 1] in (b"", b"/", b"?")


def rest_of(target: str) -> str:
    """The path and query after `/comfyui`, as the client encoded them ("" for `/comfyui`)."""
    return target[len(PREFIX):]


def does_not_start(method: bytes, path: str) -> bool:
    """A request that must not start the model: a GET of the websocket path or below it
    (the path alone decides: `?clientId=` does not matter)."""
    return method == b"GET" and (path == WEBSOCKET_PATH or path.startswith(WEBSOCKET_PATH + "/"))


NOT_LOADED = f"model '{COMFYUI_MODEL_ID}' is not loaded; /comfyui{WEBSOCKET_PATH} does not start it"
NOT_CONFIGURED = f"local model '{COMFYUI_MODEL_ID}' not found in config: /comfyui/ serves the model with that id"
