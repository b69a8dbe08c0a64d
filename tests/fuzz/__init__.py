"""Fuzzing: hypothesis properties (in-process and against the real service) and schemathesis."""
