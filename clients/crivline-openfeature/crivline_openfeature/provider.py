"""``CrivlineProvider``: an OpenFeature provider that evaluates in process.

It keeps the environment's flag set current from the nearest edge (:mod:`sync`, on a
thread of its own) and evaluates with the proxy's compiled evaluator
(:mod:`crivline.flags`), so an evaluation is a function call, not a round trip.

Provider status and events, as the OpenFeature SDK sees them:

- ``initialize()`` returns once the first flag set is held — from the edge, or at once
  from ``snapshot_path`` — and the SDK reports ``PROVIDER_READY``. Without one within
  ``init_timeout`` it raises ``ProviderNotReadyError`` (status ERROR) and keeps
  trying; the first flag set then emits ``PROVIDER_READY``.
- every later change emits ``PROVIDER_CONFIGURATION_CHANGED`` with the changed flag
  keys and ``metadata={"version": N}``;
- no contact with the edge for ``stale_after`` seconds emits ``PROVIDER_STALE``
  (evaluations go on from the flag set held); contact again emits ``PROVIDER_READY``;
- a refused key (401 revoked or unknown, 403 not a server key) emits
  ``PROVIDER_ERROR`` with ``PROVIDER_FATAL``: it will not come back, and the SDK then
  answers every evaluation with the code default.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderFatalError, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagType, FlagValueType
from openfeature.hook import Hook
from openfeature.provider import AbstractProvider, Metadata

from crivline_openfeature import snapshot
from crivline_openfeature.details import context_of, details_of, not_ready
from crivline_openfeature.errors import BadFlagSet, KeyRefused
from crivline_openfeature.held import Applied, FlagSetHolder
from crivline_openfeature.options import ProviderOptions, check_edge_url, check_server_key
from crivline_openfeature.sync import EdgeSync, SyncStats

log = logging.getLogger("crivline_openfeature")

NAME = "crivline"
VERSION = "0.1.0"
_STOP_SECONDS = 5.0


class _Status(enum.Enum):
    NOT_READY = "NOT_READY"
    READY = "READY"
    STALE = "STALE"
    ERROR = "ERROR"  # initialize() gave up waiting; still trying
    FATAL = "FATAL"


class CrivlineProvider(AbstractProvider):
    """``CrivlineProvider(edge_url, server_key, **options)``; options: see
    :class:`~crivline_openfeature.options.ProviderOptions`."""

    def __init__(self, edge_url: str, server_key: str, **options: Any) -> None:
        super().__init__()
        self.edge_url = check_edge_url(edge_url)
        self._key = check_server_key(server_key)
        self.options = ProviderOptions.build(**options)
        self._holder = FlagSetHolder()
        self._lock = threading.Lock()
        self._status = _Status.NOT_READY
        self._first = threading.Event()  # set at the first flag set, or when refused
        self._init_done = False  # initialize() has returned or given up
        self._refused: KeyRefused | None = None
        self._sync: EdgeSync | None = None
        self._runner: _Runner | None = None

    # -- what operators and tests can read ----------------------------------------------

    @property
    def version(self) -> int | None:
        """The version of the flag set held (None before the first)."""
        return self._holder.version

    @property
    def sync_stats(self) -> SyncStats | None:
        return None if self._sync is None else self._sync.stats

    # -- the OpenFeature provider contract ---------------------------------------------

    def get_metadata(self) -> Metadata:
        return Metadata(name=NAME)

    def get_provider_hooks(self) -> list[Hook]:
        return []

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        with self._lock:
            self._init_done = False
            if self._refused is not None:
                raise ProviderFatalError(self._refusal_message(self._refused))
        self._bootstrap()
        self._start()
        arrived = self._first.wait(self.options.init_timeout)
        with self._lock:
            self._init_done = True
            if self._refused is not None:
                self._status = _Status.FATAL
                raise ProviderFatalError(self._refusal_message(self._refused))
            if arrived or self._holder.current is not None:
                self._status = _Status.READY
                return
            self._status = _Status.ERROR
        raise ProviderNotReadyError(
            f"no flag set from {self.edge_url} within {self.options.init_timeout:g} s; "
            "still trying (PROVIDER_READY follows when one arrives)"
        )

    def shutdown(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.stop(_STOP_SECONDS)
        with self._lock:
            if self._status is not _Status.FATAL:
                self._status = _Status.NOT_READY
            self._init_done = False

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(FlagType.BOOLEAN, flag_key, default_value, evaluation_context)

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(FlagType.STRING, flag_key, default_value, evaluation_context)

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(FlagType.INTEGER, flag_key, default_value, evaluation_context)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._resolve(FlagType.FLOAT, flag_key, default_value, evaluation_context)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Any,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Any]:
        return self._resolve(FlagType.OBJECT, flag_key, default_value, evaluation_context)

    # The SDK's async client calls these; evaluation does no I/O, so they answer at once.

    async def resolve_boolean_details_async(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(FlagType.BOOLEAN, flag_key, default_value, evaluation_context)

    async def resolve_string_details_async(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(FlagType.STRING, flag_key, default_value, evaluation_context)

    async def resolve_integer_details_async(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        return self._resolve(FlagType.INTEGER, flag_key, default_value, evaluation_context)

    async def resolve_float_details_async(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._resolve(FlagType.FLOAT, flag_key, default_value, evaluation_context)

    async def resolve_object_details_async(
        self,
        flag_key: str,
        default_value: Any,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Any]:
        return self._resolve(FlagType.OBJECT, flag_key, default_value, evaluation_context)

    def _resolve(
        self,
        flag_type: FlagType,
        flag_key: str,
        default_value: FlagValueType,
        evaluation_context: EvaluationContext | None,
    ) -> FlagResolutionDetails[Any]:
        held = self._holder.current
        if held is None:
            return not_ready(default_value, f"no flag set from {self.edge_url} yet")
        result = held.flags.evaluate(flag_key, context_of(evaluation_context))
        return details_of(result, flag_type, default_value)

    # -- following the edge (called on the sync thread) ---------------------------------

    def _bootstrap(self) -> None:
        path = self.options.snapshot_path
        if path is None or self._holder.current is not None:
            return
        try:
            found = snapshot.read(path)
            if found is not None:
                applied = self._holder.put(*found)
                if applied is not None:
                    log.info("serving version %d from %s until the edge answers", found[0], path)
                    self._first.set()
        except BadFlagSet as exc:
            log.error("%s; waiting for the edge", exc)

    def _start(self) -> None:
        if self._runner is not None and self._runner.alive:
            return
        self._sync = EdgeSync(
            self.edge_url,
            self._key,
            self.options,
            self._holder,
            _Events(self),
            user_agent=f"crivline-openfeature/{VERSION}",
        )
        self._runner = _Runner(self._sync)
        self._runner.start()

    def _on_applied(self, applied: Applied) -> None:
        self._save(applied)
        emits: list[tuple[str, ProviderEventDetails]] = []
        version: dict[str, bool | str | int | float] = {"version": applied.held.version}
        with self._lock:
            first = not self._first.is_set()
            self._first.set()
            if self._status in (_Status.ERROR, _Status.STALE) and self._init_done:
                self._status = _Status.READY
                emits.append(("ready", ProviderEventDetails(metadata=version)))
            if not first and applied.changed and self._init_done:
                emits.append(
                    (
                        "changed",
                        ProviderEventDetails(flags_changed=list(applied.changed), metadata=version),
                    )
                )
        self._emit(emits)

    def _on_contact(self) -> None:
        with self._lock:
            if self._status is not _Status.STALE or self._holder.current is None:
                return
            self._status = _Status.READY
        self._emit([("ready", ProviderEventDetails(message="the edge answers again"))])

    def _on_stale(self, seconds: float) -> None:
        with self._lock:
            if self._status is not _Status.READY:
                return
            self._status = _Status.STALE
            held = self._holder.version
        message = f"no contact with {self.edge_url} for {seconds:.0f} s; serving version {held}"
        log.warning(message)
        self._emit([("stale", ProviderEventDetails(message=message))])

    def _on_refused(self, error: KeyRefused) -> None:
        with self._lock:
            self._refused = error
            self._status = _Status.FATAL
            announce = self._init_done
            self._first.set()
        if announce:
            details = ProviderEventDetails(
                message=self._refusal_message(error), error_code=ErrorCode.PROVIDER_FATAL
            )
            self._emit([("error", details)])

    def _refusal_message(self, error: KeyRefused) -> str:
        return f"{self.edge_url} refused the server key (HTTP {error.status}): {error.detail}"

    def _emit(self, emits: list[tuple[str, ProviderEventDetails]]) -> None:
        for kind, details in emits:
            if kind == "ready":
                self.emit_provider_ready(details)
            elif kind == "changed":
                self.emit_provider_configuration_changed(details)
            elif kind == "stale":
                self.emit_provider_stale(details)
            else:
                self.emit_provider_error(details)

    def _save(self, applied: Applied) -> None:
        path = self.options.snapshot_path
        if path is None:
            return
        try:
            snapshot.write(path, applied.held.version, applied.held.document)
        except OSError as exc:
            log.error("cannot write the snapshot %s: %s", path, exc)


class _Events:
    """The sync's reports, handed to the provider."""

    def __init__(self, provider: CrivlineProvider) -> None:
        self._provider = provider

    def applied(self, applied: Applied) -> None:
        self._provider._on_applied(applied)

    def contact(self) -> None:
        self._provider._on_contact()

    def stale(self, seconds: float) -> None:
        self._provider._on_stale(seconds)

    def refused(self, error: KeyRefused) -> None:
        self._provider._on_refused(error)


class _Runner:
    """A thread with an event loop of its own that runs the sync until stopped."""

    def __init__(self, sync: EdgeSync) -> None:
        self._sync = sync
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crivline-openfeature", daemon=True)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def stop(self, timeout: float) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and self._thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started.set()
        stopper = asyncio.create_task(self._stop.wait())
        while True:
            follow = asyncio.create_task(self._sync.run(), name="crivline-openfeature-sync")
            await asyncio.wait({follow, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper.done():
                follow.cancel()
                await asyncio.gather(follow, return_exceptions=True)
                return
            error = follow.exception()
            if error is None:  # the key was refused: nothing more to do
                stopper.cancel()
                await asyncio.gather(stopper, return_exceptions=True)
                return
            log.error("following the edge failed unexpectedly; restarting", exc_info=error)
            await asyncio.wait({stopper}, timeout=1.0)
            if stopper.done():
                return
