"""Warm swaps: a llama-server model's KV cache saved before the service stops it and restored
when it starts again, so the next turn of a long conversation does not prefill it all anew.

`command` decides which models take part and where their server writes (pure), `files` names,
validates and budgets the saved caches on disk, `slots` speaks llama-server's slot API, and
`swaps` carries a save or a restore out for a `ModelProcess` within its time bound.
"""
