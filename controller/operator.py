"""kopf wiring: every IoChaos event and a timer call :meth:`Engine.reconcile`.

Why kopf rather than a hand-written watch loop: it already does the list+watch with resumption,
410 handling, retries with backoff, per-object serialisation of handlers and timers stopped on
deletion, which is what injector/watch.py had to write by hand for one ConfigMap kind.

The handlers hold no state: each reads the object fresh through the engine. A per-object lock
keeps the timer and an event handler from injecting the same object twice at once. The delete
handler is ``optional`` (it needs no finalizer: the pod finalizers hold the object until every
pod is recovered). kopf still adds its own ``kopf.zalando.org/KopfFinalizerMarker`` (seen on
the real API server in e2e/run), because of the timer; the engine ignores finalizers whose
prefix has a dot, and kopf removes it once its handlers are done.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from controller.engine import Engine, RecoverPending
from controller.spec import GROUP, PLURAL, VERSION

log = logging.getLogger("chaosfs-controller")

TICK_SECONDS = 1.0  # the timer's period: cron ticks and windows end within ~1 s


class Handlers:
    """The handler bodies, callable directly (the tests do) or registered with kopf."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._due: dict[tuple[str, str], float] = {}

    def _lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def reconcile(self, namespace: str, name: str) -> float | None:
        key = (namespace, name)
        async with self._lock(key):
            try:
                wait = await asyncio.to_thread(self.engine.reconcile, namespace, name)
            except RecoverPending as exc:
                raise kopf.TemporaryError(str(exc), delay=2) from None
        loop = asyncio.get_running_loop()
        if wait is None:
            self._due.pop(key, None)
        else:
            self._due[key] = loop.time() + wait
        return wait

    async def on_event(self, namespace: str, name: str, **_: Any) -> None:
        await self.reconcile(namespace, name)

    async def on_timer(self, namespace: str, name: str, **_: Any) -> None:
        due = self._due.get((namespace, name))
        # due unknown (a restarted controller) or reached: look again; otherwise skip cheaply
        if due is None or asyncio.get_running_loop().time() >= due:
            await self.reconcile(namespace, name)

    async def on_delete(self, namespace: str, name: str, **_: Any) -> None:
        key = (namespace, name)
        async with self._lock(key):
            try:
                await asyncio.to_thread(self.engine.reconcile, namespace, name)
            except RecoverPending as exc:
                raise kopf.TemporaryError(str(exc), delay=2) from None
        self._due.pop(key, None)
        self._locks.pop(key, None)


def registry_for(handlers: Handlers) -> kopf.OperatorRegistry:
    reg = kopf.OperatorRegistry()
    res = (GROUP, VERSION, PLURAL)
    # a registry of our own has no default login: use the kubernetes client's configuration
    kopf.on.login(registry=reg, id="login")(kopf.login_via_client)
    kopf.on.create(*res, registry=reg, id="create")(handlers.on_event)
    kopf.on.resume(*res, registry=reg, id="resume")(handlers.on_event)
    # spec edits and the pause annotation; status writes are ours and need no reaction
    kopf.on.update(*res, registry=reg, id="spec", field="spec")(handlers.on_event)
    kopf.on.update(*res, registry=reg, id="annotations",
                   field="metadata.annotations")(handlers.on_event)
    kopf.on.delete(*res, registry=reg, id="delete", optional=True)(handlers.on_delete)
    kopf.timer(*res, registry=reg, id="tick", interval=TICK_SECONDS)(handlers.on_timer)
    return reg
