"""Reference figures for the Go llama-swap and the targets, both from issue #6.

The Go figures were measured by the issue's author on the same kind of 2-core machine
(Go llama-swap v250 in front of a minimal asyncio upstream); they are not re-measured here.
"""

from __future__ import annotations

GO_LABEL = "Go v250, from issue #6, same machine type"

# Go llama-swap v250 (issue #6, "Measured on this 2-core machine").
GO = {
    "rps_c1": "~2,400",
    "added_p50_c1_us": "~+400",
    "rps_c64": "3,100–5,100",
    "added_chunk_p50_us": "~+100",
    "llama_healthy_ms": "~300",
    "swap_ms": "~1,500–1,700",
}
GO_RPS_C64_HIGH = 5100.0  # the conservative end, for the "≥ 1.5x the Go version" check
GO_SWAP_MS_LOW = 1500.0  # the conservative end, for the "≥ 3x faster than Go" check

# Targets (issue #6, "Targets (this machine)").
TARGET_RPS_C64 = 7000.0
TARGET_RPS_C64_VS_GO = 1.5
TARGET_ADDED_P50_C1_US = 250.0
TARGET_ADDED_CHUNK_P50_US = 100.0
TARGET_ADDED_TTFB_P50_US = 500.0
TARGET_SWAP_ADDED_MS = 50.0
TARGET_WARM_SPEEDUP = 10.0  # issue #15: next turn after a swap away and back, 2k-token context
TARGET_WARM_ADDED_MS = 50.0  # issue #15: save + restore added to a swap
TARGET_SWAP_VS_GO = 3.0
TARGET_IDLE_RSS_MB = 60.0
TARGET_SCALE_CLIENTS = 1000
