"""The running service: config, processes, router, HTTP client and metrics, wired once."""

from __future__ import annotations

import logging
import time

import aiohttp

from llama_swap.config import Config, ModelConfig
from llama_swap.observe.metrics import Metrics
from llama_swap.process import ModelProcess, ProcessState
from llama_swap.proxy import make_session
from llama_swap.reaper import Reaper
from llama_swap.routing.policy import OneAtATime
from llama_swap.routing.router import Router
from llama_swap.server.errors import model_not_found

log = logging.getLogger("llama_swap.service")


class Service:
    """Everything a request handler needs; built at app start-up, torn down at shutdown."""

    def __init__(self, config: Config, *, use_reaper: bool = True) -> None:
        self.config = config
        self.created = int(time.time())
        self.metrics = Metrics(sorted(config.models))
        self.session: aiohttp.ClientSession = make_session()
        self.reaper = Reaper() if use_reaper else None
        self.processes = {
            model_id: ModelProcess(
                model,
                health_check_timeout=config.health_check_timeout,
                session=self.session,
                reaper=self.reaper,
                on_state=self._state_changed,
                on_crash=self._crashed,
            )
            for model_id, model in sorted(config.models.items())
        }
        self.router = Router(
            self.processes,
            OneAtATime(),
            limits={m: c.concurrency_limit for m, c in config.models.items()},
            on_swap=self.metrics.swap_done,
        )

    def resolve(self, name: str) -> ModelConfig:
        """The model for an id or alias; raises a 404 `HTTPError` naming it otherwise."""
        model = self.config.model_for(name)
        if model is None:
            raise model_not_found(name)
        return model

    async def close(self) -> None:
        """Stop every upstream in parallel, then release the client and the reaper."""
        await self.router.shutdown()
        await self.session.close()
        if self.reaper is not None:
            self.reaper.close()

    def _state_changed(self, model: str, state: ProcessState) -> None:
        self.metrics.set_state(model, state)
        log.debug("[%s] state %s", model, state.value)

    def _crashed(self, model: str) -> None:
        self.router.crashed(model)
