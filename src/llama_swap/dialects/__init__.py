"""Client APIs other than OpenAI's, translated to and from the upstreams' OpenAI-compatible
endpoints: pure functions and stream state, no I/O (the lane and the relay do that)."""
