"""Run one or more services in this process: connect, subscribe, serve probes, stop gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import uvicorn
from faststream import AckPolicy
from faststream.nats import NatsBroker
from faststream.security import BaseSecurity, SASLPlaintext
from pydantic_settings import BaseSettings

from coinpilot import metrics as m
from coinpilot.bus import Bus, Consumer, ensure_streams, stream_for_subject
from coinpilot.bus.connect import PermissionWatch, check_identity, connect_options
from coinpilot.bus.membership import LeaseTimes, Membership, open_bucket
from coinpilot.bus.permissions import IDENTITIES, IdentityError
from coinpilot.runtime.definition import Runtime, ServiceDefinition
from coinpilot.runtime.heap import freeze_start_up_heap
from coinpilot.runtime.owned import OwnedSymbols
from coinpilot.runtime.partitioned import PartitionedConsumers
from coinpilot.runtime.probes import build_probe_app
from coinpilot.runtime.pull import PullLoop
from coinpilot.runtime.standby import Standby
from coinpilot.service_names import SERVICES
from coinpilot.settings import CommonSettings

log = logging.getLogger("coinpilot.runtime")


def load_definition(name: str, rt: Runtime, settings: BaseSettings | None = None) -> ServiceDefinition:
    """``risk`` loads ``services.risk.app:build``; ``pkg.module:func`` loads a plug-in service.

    ``settings``: the service's own settings, built by the caller (``run --llm``); passed as
    ``build(rt, settings)``, so only to a service whose ``build`` takes them. ``None``: the service
    reads its settings from the environment itself.
    """
    if ":" in name:
        module_name, _, attr = name.partition(":")
        build = getattr(importlib.import_module(module_name), attr)
    elif name not in SERVICES:
        raise ValueError(f"unknown service {name!r}; one of {', '.join(SERVICES)}")
    else:
        build = importlib.import_module(f"services.{name}.app").build
    return build(rt) if settings is None else build(rt, settings)


def service_label(name: str) -> str:
    return name.rsplit(":", 1)[-1] if ":" in name else name


def make_broker(settings: CommonSettings, name: str, watch: PermissionWatch | None = None) -> NatsBroker:
    """The FastStream broker that owns the NATS connection (reconnects, auth, TLS); consumers are
    ``PullLoop`` objects on its JetStream context, publishing goes through :class:`Bus`."""
    opts = connect_options(settings, name, watch)
    security: BaseSecurity | None = None
    tls = opts.pop("tls", None)
    if "user" in opts:
        security = SASLPlaintext(username=opts.pop("user"), password=opts.pop("password"), ssl_context=tls)
    elif tls is not None:
        security = BaseSecurity(ssl_context=tls)
    return NatsBroker(
        opts.pop("servers"),
        security=security,
        ack_policy=AckPolicy.MANUAL,
        logger=None,  # per-message logging costs a third of a hop; our ladder logs what matters
        apply_types=False,  # our ladder parses contracts itself; DI ran a thread-pool hop per message
        graceful_timeout=settings.graceful_timeout_seconds,
        **opts,
    )


class ServiceHost:
    """Hosts services sharing one NATS connection, one HTTP probe server and one shutdown."""

    def __init__(
        self,
        names: Sequence[str],
        settings: CommonSettings,
        *,
        serve_http: bool = True,
        freeze_heap: bool = False,
        service_settings: Mapping[str, BaseSettings] | None = None,
    ) -> None:
        """``freeze_heap``: freeze what start-up built before taking messages (see ``heap.py``);
        for a process that hosts services until it exits. ``service_settings``: settings objects by
        service label (e.g. ``agent`` with ``run --llm``'s source) handed to that service's
        ``build`` instead of it reading the environment; those of services not hosted are unused."""
        self.names = list(SERVICES) if list(names) == ["all"] else list(names)
        self.settings = settings
        self.service_settings = dict(service_settings or {})
        self.serve_http = serve_http
        self.freeze_heap = freeze_heap
        self.watch = PermissionWatch("+".join(service_label(n) for n in self.names))
        self.broker = make_broker(settings, "coinpilot-" + "+".join(self.names), self.watch)
        self.runtimes: list[Runtime] = []
        self.definitions: list[ServiceDefinition] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._service_tasks: list[asyncio.Task[None]] = []  # the services' own (definition.tasks)
        self._loops: list[PullLoop] = []
        self._partitioned: list[PartitionedConsumers] = []
        self.memberships: list[Membership] = []
        self.standby: Standby | None = None  # COINPILOT_STANDBY: this replica's role (runtime/standby.py)
        self._http: uvicorn.Server | None = None
        self._db: Any = None
        self._cache: Any = None
        self.stopped = asyncio.Event()
        # Set when stopping. Background loops check it, not only their cancellation: nats-py turns a
        # CancelledError inside a request into its TimeoutError, which a loop may catch and go on.
        self._closing = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self.broker.connect()
        js = self.broker.config.connection_state.stream
        await self._check_identity_and_streams(js)
        self._db, self._cache = await self._open_storage()
        await self._connect_storage()
        for name in self.names:
            label = service_label(name)
            rt = Runtime(
                service=label,
                settings=self.settings,
                bus=Bus(js, label),
                db=self._db,
                cache=self._cache,
                log=logging.getLogger(f"coinpilot.{label}"),
            )
            definition = load_definition(name, rt, self.service_settings.get(label))
            self.runtimes.append(rt)
            self.definitions.append(definition)
            if self._runs_partitioned(definition):
                self._partitioned.append(self._partitioned_consumers(rt, definition))
            else:
                self._loops.extend(self._pull_loop(rt, consumer) for consumer in definition.consumers)
        if self.settings.standby:
            await self._compete_for_active(js)
        else:
            await self._start_stage()
            await self._join_partitions(js)
            self._start_service_tasks()
        self._tasks.append(asyncio.create_task(self._watch_consumers(), name="consumer-metrics"))
        if self.serve_http:
            await self._start_http()
        log.info("started %s", ", ".join(self.names))

    async def _start_stage(self) -> None:
        """Start-up hooks (state from the system of record), then the consumers."""
        for rt, definition in zip(self.runtimes, self.definitions, strict=True):
            if definition.on_start is not None:
                await definition.on_start(rt)
        if self.freeze_heap:
            freeze_start_up_heap()
        await self.broker.start()
        for loop in self._loops:
            await loop.start()

    def _start_service_tasks(self) -> None:
        for rt, definition in zip(self.runtimes, self.definitions, strict=True):
            for task in definition.tasks:
                self._service_tasks.append(
                    asyncio.create_task(self._guard(rt, task), name=f"{rt.service}-task")
                )

    async def _stop_service_tasks(self) -> None:
        tasks, self._service_tasks = self._service_tasks, []
        await self._cancel_until_done(tasks)

    async def stop(self) -> None:
        """Stop taking messages, let the in-flight batch finish and ack, then close connections."""
        self._closing.set()
        await asyncio.gather(*(membership.stop() for membership in self.memberships))
        if self.standby is None:  # a standby's loops were stopped with its lease (or never ran)
            await asyncio.gather(*(loop.stop() for loop in self._loops))
        await self._stop_service_tasks()
        await self._cancel_tasks()
        await self.broker.stop()
        for rt, definition in zip(self.runtimes, self.definitions, strict=True):
            if definition.on_stop is not None:
                with contextlib.suppress(Exception):
                    await definition.on_stop(rt)
        if self._http is not None:
            self._http.should_exit = True
        if self._cache is not None:
            await self._cache.close()
        if self._db is not None:
            await self._db.dispose()
        for name in self.names:
            m.SERVICE_READY.labels(service_label(name)).set(0)
        self.stopped.set()
        log.info("stopped %s", ", ".join(self.names))

    async def run_until_signal(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        lost = self.standby.lost if self.standby is not None else asyncio.Event()
        waits = {asyncio.create_task(stop.wait()), asyncio.create_task(lost.wait())}
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if lost.is_set():
            await self.stop()
            raise SystemExit("no longer the active replica (lease lost or start-up failed): restart")
        log.info("signal received: no new messages, finishing the in-flight ones")
        await self.stop()

    # -- readiness ---------------------------------------------------------------------------
    async def ready_checks(self) -> dict[str, bool]:
        conn = self.broker.config.connection_state.connection if self.broker._connection else None
        checks = {"nats": bool(conn is not None and conn.is_connected)}
        if self._db is not None:
            checks["database"] = await self._db.ping()
        # a consumer waiting out an outage in place (Redis, say, which no other check sees)
        checks["consumers"] = not any(loop.retrying for loop in self._loops) and not any(
            p.retrying for p in self._partitioned
        )
        ok = all(checks.values())
        for name in self.names:
            m.SERVICE_READY.labels(service_label(name)).set(1 if ok else 0)
        return checks

    def role(self) -> str | None:
        """``active`` or ``standby`` with COINPILOT_STANDBY (``/readyz`` shows it), else ``None``."""
        return None if self.standby is None else self.standby.role

    # -- internals ---------------------------------------------------------------------------
    async def _check_identity_and_streams(self, js: Any) -> None:
        """Fail at start-up, saying what is missing, if NATS refuses what these services need;
        then bring the streams to their declared config (a service's own identity may only read
        them: the operator provisions them, ``coinpilot nats setup``)."""
        labels = [label for label in map(service_label, self.names) if label in IDENTITIES]
        try:
            nc = self.broker.config.connection_state.connection
            await check_identity(nc, self.watch, labels, user=self.settings.nats_user)
            refused = len(self.watch.violations)
            try:
                await ensure_streams(js, replicas=self.settings.stream_replicas)
            except Exception as exc:
                if len(self.watch.violations) > refused:
                    raise IdentityError(
                        "the JetStream streams are missing or differ from bus/streams.py or "
                        "COINPILOT_STREAM_REPLICAS and this "
                        f"identity may not change them ({self.watch.violations[-1]}): "
                        "run `coinpilot nats setup` as the operator"
                    ) from exc
                raise
        except Exception:
            await self.broker.stop()
            raise

    async def _open_storage(self) -> tuple[Any, Any]:
        db = cache = None
        if self.settings.database_url is not None:
            from coinpilot.db import Database

            db = Database(self.settings.database_url.get_secret_value())
        if self.settings.redis_url:
            from coinpilot.cache import Cache

            cache = Cache(self.settings.redis_url)
        return db, cache

    async def _connect_storage(self) -> None:
        """Open each pool's first connection now, not inside the first message's handling.

        Both pings never raise: a store that is down at start-up is the handlers' (and the
        readiness check's) business, as before.
        """
        if self._db is not None:
            await self._db.ping()
        if self._cache is not None:
            await self._cache.ping()

    def _pull_loop(self, rt: Runtime, consumer: Consumer) -> PullLoop:
        settings = self.settings
        state = self.broker.config.connection_state
        return PullLoop(
            state.connection,
            state.stream,
            rt.bus,
            consumer,
            batch_size=consumer.batch_size or settings.pull_batch_size,
            max_deliver=settings.max_deliver,
            ack_wait=settings.ack_wait_seconds,
        )

    # -- partitions (COINPILOT_PARTITIONS > 1; docs/deploy.md "Scaling a stage out") ------------
    def _runs_partitioned(self, definition: ServiceDefinition) -> bool:
        return definition.partition_by_symbol and self.settings.partitions > 1

    def member_id(self) -> str:
        """This replica among its stage's members: ``COINPILOT_MEMBER_ID`` (the pod name), else
        host and pid (unique per process, so a restarted process is a new member)."""
        if self.settings.member_id:
            return self.settings.member_id
        host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
        return f"{host[:48]}-{os.getpid()}"

    def lease_times(self) -> LeaseTimes:
        beat = self.settings.partition_heartbeat_seconds
        return LeaseTimes(self.settings.partition_lease_seconds, beat, margin=beat)

    def _partitioned_consumers(self, rt: Runtime, definition: ServiceDefinition) -> PartitionedConsumers:
        rt.owned = OwnedSymbols()  # filled as partitions are taken, for the service's own tasks
        return PartitionedConsumers(
            self.broker.config.connection_state.stream,
            definition.consumers,
            partitions=self.settings.partitions,
            symbols=self.settings.symbols,
            make_loop=lambda consumer: self._pull_loop(rt, consumer),
            forget=definition.forget,
            owned=rt.owned,
        )

    async def _join_partitions(self, js: Any) -> None:
        """Join each partitioned service's members: take its share of the partitions, then keep
        renewing, rebalancing and taking over (``coinpilot.bus.membership``)."""
        partitioned = iter(self._partitioned)
        for rt, definition in zip(self.runtimes, self.definitions, strict=True):
            if not self._runs_partitioned(definition):
                continue
            consumers = next(partitioned)
            times = self.lease_times()
            kv = await open_bucket(js, rt.service, times, self.settings.stream_replicas or 1)
            membership = Membership(
                kv,
                js,
                member=self.member_id(),
                partitions=self.settings.partitions,
                times=times,
                on_acquire=consumers.acquire,
                on_release=consumers.release,
                on_lost=consumers.lose,
            )
            self.memberships.append(membership)
            await membership.start()
            rt.log.info(
                "%s is member %s of %d partitions; owns %s",
                rt.service,
                membership.member,
                self.settings.partitions,
                sorted(membership.owned) or "none yet",
            )

    # -- hot standby (COINPILOT_STANDBY; runtime/standby.py) -------------------------------------
    async def _compete_for_active(self, js: Any) -> None:
        """Join the stage's single lease; start the stage only while holding it."""
        if len(self.definitions) != 1 or self._partitioned:
            raise ValueError(
                "COINPILOT_STANDBY runs one unpartitioned service per process "
                f"(have {', '.join(self.names)} with COINPILOT_PARTITIONS={self.settings.partitions})"
            )
        rt = self.runtimes[0]
        await self.broker.start()

        async def start_tasks() -> None:
            self._start_service_tasks()

        self.standby = Standby(
            js,
            self._loops,
            on_start=self._run_on_start,
            start_tasks=start_tasks,
            stop_tasks=self._stop_service_tasks,
        )
        times = self.lease_times()
        kv = await open_bucket(js, rt.service, times, self.settings.stream_replicas or 1)
        membership = Membership(
            kv,
            js,
            member=self.member_id(),
            partitions=1,
            times=times,
            on_acquire=self.standby.acquire,
            on_release=self.standby.release,
            on_lost=self.standby.lose,
        )
        self.memberships.append(membership)
        await membership.start()
        rt.log.info("%s is member %s of its standby group: %s", rt.service, membership.member, self.role())

    async def _run_on_start(self) -> None:
        for rt, definition in zip(self.runtimes, self.definitions, strict=True):
            if definition.on_start is not None:
                await definition.on_start(rt)

    async def _cancel_tasks(self) -> None:
        await self._cancel_until_done(self._tasks)

    async def _cancel_until_done(self, tasks: list[asyncio.Task[None]]) -> None:
        """Cancel the background tasks until they end: a cancellation swallowed inside a library
        call (see ``_closing``) is repeated, bounded by the graceful timeout."""
        pending = {task for task in tasks if not task.done()}
        deadline = asyncio.get_running_loop().time() + self.settings.graceful_timeout_seconds
        while pending and asyncio.get_running_loop().time() < deadline:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        for task in pending:
            log.error("background task %s did not stop within the graceful timeout", task.get_name())

    async def _guard(self, rt: Runtime, task: Any) -> None:
        """Run a background task; if it crashes, log it and restart it after a pause."""
        while not self._closing.is_set():
            try:
                await task(rt)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._closing.is_set():
                    return
                rt.log.exception("background task of %s crashed; restarting in 5 s", rt.service)
                await self._pause(5)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up when the host starts stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), timeout=seconds)

    async def _watch_consumers(self) -> None:
        js = self.broker.config.connection_state.stream
        while not self._closing.is_set():
            partitioned = iter(self._partitioned)
            for rt, definition in zip(self.runtimes, self.definitions, strict=True):
                durables = (
                    next(partitioned).durables()
                    if self._runs_partitioned(definition)
                    else [(c.subject, c.durable) for c in definition.consumers]
                )
                for subject, durable in durables:
                    spec = stream_for_subject(subject)
                    with contextlib.suppress(Exception):
                        info = await js.consumer_info(spec.name, durable)
                        m.CONSUMER_PENDING.labels(rt.service, durable).set(info.num_pending or 0)
                        m.CONSUMER_ACK_PENDING.labels(rt.service, durable).set(info.num_ack_pending or 0)
            with contextlib.suppress(Exception):
                await self.ready_checks()
            await self._pause(5)

    async def _start_http(self) -> None:
        app = build_probe_app(self.ready_checks, self.role)
        config = uvicorn.Config(
            app,
            host=self.settings.http_host,
            port=self.settings.http_port,
            log_level="warning",
            lifespan="off",
        )
        self._http = uvicorn.Server(config)
        self._http.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self._tasks.append(asyncio.create_task(self._http.serve(), name="http"))


async def run(
    names: Sequence[str],
    settings: CommonSettings,
    service_settings: Mapping[str, BaseSettings] | None = None,
) -> None:
    host = ServiceHost(names, settings, freeze_heap=True, service_settings=service_settings)
    await host.run_until_signal()
