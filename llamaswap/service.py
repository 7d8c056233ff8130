"""LlamaSwapService: builds the upstreams, router and web site from a config, and owns them."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import defer, endpoints, threads
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from llamaswap.config import Config, ConfigError, load_config_sources
from llamaswap.configwatch import ConfigWatcher
from llamaswap.errors import LlamaSwapError, NotStarted
from llamaswap.fdlimit import SELECT_LIMIT, raise_open_file_limit
from llamaswap.gcpolicy import settle_heap
from llamaswap.listen import Listen
from llamaswap.observe.hardware import HardwareInfo
from llamaswap.observe.resources import Observability
from llamaswap.observe.stdout import StdoutWriter
from llamaswap.observe.types import thread_runner
from llamaswap.process.health import http_prober
from llamaswap.process.logs import LogBuffer
from llamaswap.process.memprobe import MemoryProbe, NvmlProbe
from llamaswap.process.memwatch import MemoryWatch
from llamaswap.process.upstream import Upstream
from llamaswap.proxyenv import DIRECT, ProxySettings
from llamaswap.router.base import Router
from llamaswap.web.app import App
from llamaswap.web.pools import UpstreamPools

log = Logger(namespace="llamaswap")

WATCH_INTERVAL = 2.0
SHUTDOWN_BUDGET = 30.0
# How long stopping waits for stdout to take the last log lines (a reader may be stuck).
STDOUT_FLUSH_BUDGET = 2.0


def build_app(
    config: Config,
    reactor: Any,
    proxy_log: LogBuffer,
    upstream_log: LogBuffer,
    combined_log: LogBuffer | None = None,
    previous: App | None = None,
    proxies: ProxySettings = DIRECT,
    memory_probe: Callable[[], MemoryProbe] = NvmlProbe,
) -> App:
    """Build the upstreams, router and observers for one loaded configuration.

    ``previous`` is the App a reload replaces: metrics, activity and measured GPU memory
    carry over from it. ``proxies`` are the HTTP proxy settings health checks use, like
    proxied traffic. ``memory_probe`` makes the GPU memory probe (tests pass a fake).
    """
    prober = http_prober(reactor, proxies) if proxies.active else None
    upstreams = {
        model_id: Upstream(model, reactor=reactor, log_sink=upstream_log, prober=prober)
        for model_id, model in config.models.items()
    }
    watch = MemoryWatch(
        upstreams, clock=reactor, run_in_thread=thread_runner(reactor), probe=memory_probe(),
        previous=previous.extras.get("memory") if previous is not None else None,
        announce=config.routing.router.use == "memory",
    )
    router = Router.from_config(config, upstreams, reactor, memory=watch.snapshot)
    app = App(
        config=config,
        router=router,
        upstreams=upstreams,
        proxy_log=proxy_log,
        upstream_log=upstream_log,
    )
    app.extras["memory"] = watch
    if combined_log is not None:
        app.extras["combined_log"] = combined_log
    old = previous.extras.get("observability") if previous is not None else None
    Observability.build(app, reactor, previous=old)
    return app


async def preload_models(app: App) -> None:
    """Load ``hooks.on_startup.preload`` models one after another, through the router."""
    for model_id in app.config.preload:
        log.info("preloading model: {model}", model=model_id)
        try:
            grant = await app.router.request(model_id)
        except LlamaSwapError as error:
            log.warn("failed to preload model {model}: {error}", model=model_id, error=error)
        else:
            grant.done()


class LlamaSwapService(MultiService):
    """The whole running llamaswap: one App at a time, a listener, an optional config watcher."""

    def __init__(
        self,
        *,
        config_path: str | None,
        config: Config,
        listen: str | Listen,
        watch_config: bool,
        reactor: Any,
        tune_gc: bool = False,
        environ: Mapping[str, str] | None = None,
        config_dir: str | None = None,
        memory_probe: Callable[[], MemoryProbe] = NvmlProbe,
    ) -> None:
        """``listen``: an endpoint string or a planned Listen (``llamaswap.listen``).

        ``config_dir``: the directory merged after ``config_path`` (reloads read both).
        ``tune_gc``: apply ``llamaswap.gcpolicy`` once started and after each reload.
        ``memory_probe`` makes each App's GPU memory probe (tests pass a fake GPU).
        """
        super().__init__()
        self._memory_probe = memory_probe
        self._tune_gc = tune_gc
        self._reactor = reactor
        self._environ = environ
        self.proxies = DIRECT
        self._config_path = config_path
        self._config_dir = config_dir
        self._initial_config = config
        self._plan = listen if isinstance(listen, Listen) else Listen(endpoint=listen, url=listen)
        self._listen = self._plan.endpoint
        self._watch = watch_config
        self.proxy_log = LogBuffer()
        self.upstream_log = LogBuffer()
        self.combined_log = LogBuffer()
        self.logging: Any = None
        self._stdout: StdoutWriter | None = None
        self.app: App | None = None
        self.watcher: ConfigWatcher | None = None
        self._reloading = False
        self.port_service: StreamServerEndpointService | None = None
        self.site: Any = None
        self.hardware = HardwareInfo()

    def get_app(self) -> App:
        """The App serving requests right now."""
        assert self.app is not None, "service not started"
        return self.app

    def startService(self) -> None:
        """Build the App, start listening, start the watcher and preloads.

        What stops it from starting is logged as one critical line a person can act on
        (the ``llamaswap`` command prints critical lines on stderr), then ``NotStarted``
        is raised.
        """
        try:
            self._start()
        except ConfigError as error:
            for problem in error.problems:
                log.critical("{path}: {problem}", path=self._label, problem=problem)
            log.critical("not starting")
            raise NotStarted("; ".join(error.problems)) from error
        except Exception as error:
            why = _why_not_started(error, self._listen)
            log.critical("{why}; not starting", why=why)
            raise NotStarted(why) from error

    def _start(self) -> None:
        from llamaswap.web.site import build_site

        self._install_logging(self._initial_config)
        for warning in self._initial_config.warnings:
            log.warn("{warning}", warning=warning)
        self._raise_open_files()
        self.proxies = self._read_proxies()
        self.app = build_app(
            self._initial_config, self._reactor, self.proxy_log, self.upstream_log,
            self.combined_log, proxies=self.proxies, memory_probe=self._memory_probe,
        )
        self.app.extras["hardware"] = self.hardware
        self._detect_hardware()
        self._start_observability(self.app)
        pools = UpstreamPools(self._reactor, proxies=self.proxies)
        site = self.site = build_site(self.get_app, self._reactor, pools)
        try:
            endpoint = endpoints.serverFromString(self._reactor, self._listen)
            self.port_service = StreamServerEndpointService(endpoint, site)
            self.port_service._raiseSynchronously = True
            self.port_service.setServiceParent(self)
            super().startService()  # the port is its only child
        except Exception as error:
            raise _CannotListen(error) from error
        log.info("llamaswap listening on {listen}", listen=self._plan.url)
        self._start_memory(self.app)
        if self._plan.all_hosts:
            log.warn(
                "llamaswap is reachable by all hosts on the network, use --listen "
                "127.0.0.1:<port> to restrict to loopback only"
            )
        self._preload(self.app)
        if self._watch:
            log.info("watching configuration for changes (poll-based, 2s interval)")
            self.watcher = ConfigWatcher(
                self._config_path, self._config_dir, self.reload, self._reactor, WATCH_INTERVAL
            )
            self.watcher.start()
        self._install_sighup()
        if self._tune_gc:
            settle_heap()

    def stopService(self) -> Deferred[None]:
        """Stop listening, fail waiting requests, stop every upstream, then return."""
        if self.watcher is not None:
            self.watcher.stop()
        d: Deferred[Any] = defer.maybeDeferred(super().stopService)
        app = self.app

        def shutdown_app(_: object) -> Deferred[None] | None:
            if app is None:
                return None
            return self._shutdown_app(app, SHUTDOWN_BUDGET)

        def finish_chores(_: object) -> None:
            if self.site is not None:
                self.site.ctx.chores.stop()  # the last access lines and activity rows

        def close_pools(_: object) -> Deferred[Any] | None:
            return self.site.pools.close_all() if self.site is not None else None

        d.addCallback(shutdown_app)
        d.addCallback(finish_chores)
        d.addCallback(close_pools)
        d.addErrback(lambda f: log.failure("error while stopping", f))
        d.addBoth(self._uninstall_logging)
        return d

    def _raise_open_files(self) -> None:
        """Raise the soft open-file limit to the hard one (select() reactors: to 1,024)."""
        from twisted.internet.selectreactor import SelectReactor

        cap = SELECT_LIMIT if isinstance(self._reactor, SelectReactor) else None
        limit = raise_open_file_limit(cap)
        if limit is not None:
            log.info("{limit}", limit=limit.describe())

    def _read_proxies(self) -> ProxySettings:
        """HTTP_PROXY/HTTPS_PROXY/NO_PROXY, read once at startup (SPEC 3.5)."""
        proxies = ProxySettings.from_environ(
            os.environ if self._environ is None else self._environ
        )
        for warning in proxies.warnings:
            log.warn("{warning}", warning=warning)
        if proxies.http is not None or proxies.https is not None:
            log.info("upstream connections use HTTP proxies: {proxies}",
                     proxies=proxies.describe())
        return proxies

    def _install_logging(self, config: Config) -> None:
        """Feed the proxy log (and stdout, under the ``llamaswap`` command) from twisted.logger."""
        from llamaswap.observe.logsetup import ProxyLogging
        from llamaswap.tap import console_owns_stdout

        self._stdout = StdoutWriter() if console_owns_stdout() else None
        self.logging = ProxyLogging(
            proxy_log=self.proxy_log,
            upstream_log=self.upstream_log,
            combined=self.combined_log,
            level=config.log_level,
            time_format=config.log_time_format,
            to_stdout=config.log_to_stdout,
            write=self._stdout or _discard,
        )

    def _uninstall_logging(self, result: object) -> object:
        if self.logging is not None:
            self.logging.uninstall()
            self.logging = None
        if self._stdout is not None:
            self._stdout.close(STDOUT_FLUSH_BUDGET)  # the last lines, unless nobody reads
            self._stdout = None
        return result

    def _shutdown_app(self, app: App, timeout: float) -> Deferred[None]:
        observability = app.extras.get("observability")
        if observability is not None:
            observability.stop()
        memory = app.extras.get("memory")
        stopped = app.router.shutdown(timeout)
        if memory is None:
            return stopped
        sampling = memory.stop()
        return stopped.addCallback(lambda _: sampling)

    def _start_memory(self, app: App) -> None:
        """Start sampling the App's GPU memory (thread jobs: none before llamaswap listens)."""
        memory = app.extras.get("memory")
        if memory is not None:
            memory.start()

    def _start_observability(self, app: App) -> None:
        observability = app.extras.get("observability")
        if observability is not None:
            observability.start()

    def _detect_hardware(self) -> None:
        """Detect the hardware once, in a thread (``/api/hardware``; a failure only warns)."""
        from llamaswap.buildinfo import build_info

        def run_in_thread(function: Any, *args: Any, **kwargs: Any) -> Deferred[Any]:
            return threads.deferToThreadPool(
                self._reactor, self._reactor.getThreadPool(), function, *args, **kwargs
            )

        self.hardware.start(self._reactor, run_in_thread, version=build_info().version)

    def _preload(self, app: App) -> None:
        if app.config.preload:
            d = Deferred.fromCoroutine(preload_models(app))
            d.addErrback(lambda f: log.failure("preloading failed", f))

    def _install_sighup(self) -> None:
        def on_hup(signum: int, frame: object) -> None:
            self._reactor.callFromThread(self.reload)

        try:
            signal.signal(signal.SIGHUP, on_hup)
        except ValueError:  # not the main thread (tests)
            pass

    @property
    def _label(self) -> str:
        """What error lines name as the config: the file, else the directory."""
        return self._config_path or self._config_dir or "<no config>"

    def reload(self) -> Deferred[None]:
        """Load the config again; on success stop the old App's models and serve the new one."""
        if self._reloading or self.app is None:
            return defer.succeed(None)
        self._reloading = True
        log.info("reloading configuration")
        loading: Deferred[Config] = threads.deferToThreadPool(
            self._reactor, self._reactor.getThreadPool(), load_config_sources,
            self._config_path, self._config_dir,
        )

        def loaded(config: Config) -> Deferred[None]:
            old = self.get_app()
            new = build_app(
                config, self._reactor, self.proxy_log, self.upstream_log, self.combined_log,
                previous=old, proxies=self.proxies, memory_probe=self._memory_probe,
            )
            new.extras["hardware"] = self.hardware
            if self.logging is not None:
                self.logging.reconfigure(config.log_level, config.log_time_format)
            for warning in config.warnings:
                log.warn("{warning}", warning=warning)
            # Stop the old models first so the new ones can take their ports.
            stopped = self._shutdown_app(old, SHUTDOWN_BUDGET)

            def switch(_: object) -> None:
                self.app = new
                self._start_observability(new)
                self._start_memory(new)
                log.info("configuration reloaded")
                self._preload(new)
                if self._tune_gc:
                    settle_heap()

            stopped.addCallback(switch)
            return stopped

        def failed(failure: Any) -> None:
            if failure.check(ConfigError):
                for problem in failure.value.problems:
                    log.warn("failed to reload config: {problem}", problem=problem)
            else:
                log.failure("failed to reload config", failure)

        def done(_: object) -> None:
            self._reloading = False

        d: Deferred[None] = loading.addCallback(loaded)
        d.addErrback(failed)
        d.addBoth(done)
        return d


class _CannotListen(Exception):
    """The --listen endpoint could not be parsed or listened on; wraps the cause."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(cause)
        self.cause = cause


def _why_not_started(error: Exception, listen: str) -> str:
    """One line saying what stopped the start: the endpoint and the socket's reason, if that."""
    if not isinstance(error, _CannotListen):
        return str(error) or type(error).__name__
    cause = error.cause
    if listen.startswith("systemd:") and isinstance(cause, IndexError | KeyError):
        return (f"cannot listen on {listen}: systemd passed no such listening socket to this "
                "process (start it from a .socket unit, or with systemd-socket-activate "
                "--fdname=NAME)")
    if isinstance(cause, CannotListenError):
        reason = getattr(cause.socketError, "strerror", None) or cause.socketError
    else:
        reason = str(cause) or type(cause).__name__
    return f"cannot listen on {listen}: {reason}"


def _discard(data: bytes) -> None:
    """Drop stdout-bound log bytes (twistd's own observer already prints every event)."""

