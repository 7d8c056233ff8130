"""The twistd entry point: ``twistd -n llamaswap --config cfg.yaml``."""

from __future__ import annotations

import sys
from typing import Any

from twisted.application.service import IService
from twisted.logger import ILogObserver, LogLevel
from twisted.python import usage
from zope.interface import implementer

from llamaswap.config import ConfigError, load_config

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1:backlog=1024"


class Options(usage.Options):
    """Command line options of the llamaswap twistd plugin."""

    synopsis = "--config FILE [--listen ENDPOINT] [--watch-config]"
    longdesc = (
        "Serve one OpenAI-compatible endpoint that starts the inference server each request "
        "names, stops the ones that must make room, queues what has to wait and streams every "
        "answer through. The config file is a llama-swap config file."
    )
    optParameters = [
        ["config", "c", None, "Path of the YAML config file (required)."],
        [
            "listen",
            "l",
            DEFAULT_LISTEN,
            "Where to listen, as a Twisted server endpoint string: "
            "tcp:PORT:interface=ADDR:backlog=N, "
            "unix:/path/to.sock, ssl:443:privateKey=key.pem:certKey=cert.pem, "
            "systemd:domain=INET:index=0.",
        ],
    ]
    optFlags = [
        ["watch-config", "w", "Reload the configuration when the file changes (polled every 2 s)."],
    ]

    def postOptions(self) -> None:
        """Require --config and load it, printing one line per problem and exiting on errors."""
        path = self["config"]
        if not path:
            raise usage.UsageError("--config is required")
        try:
            self["loaded_config"] = load_config(path)
        except ConfigError as error:
            for problem in error.problems:
                sys.stderr.write(f"llamaswap: {path}: {problem}\n")
            sys.stderr.write(
                f"llamaswap: {len(error.problems)} problem(s) in {path}; not starting\n"
            )
            raise SystemExit(1) from None


def makeService(options: dict[str, Any]) -> IService:
    """Construct (not start) the llamaswap service from parsed options."""
    from twisted.internet import reactor

    from llamaswap.service import LlamaSwapService

    return LlamaSwapService(
        config_path=options["config"],
        config=options["loaded_config"],
        listen=options["listen"],
        watch_config=bool(options["watch-config"]),
        reactor=reactor,
        tune_gc=True,
    )


_console = {"owns_stdout": False}


def console_owns_stdout() -> bool:
    """True when the ``llamaswap`` command runs us: our proxy log, not twistd's, goes to stdout."""
    return _console["owns_stdout"]


@implementer(ILogObserver)
class CriticalOnly:
    """A log observer that passes only critical events on to ``observer``.

    One comparison per event: twisted's ``LogLevelFilterPredicate`` looks up the level of
    each event's namespace, on every event, access lines included.
    """

    def __init__(self, observer: Any) -> None:
        self.observer = observer

    def __call__(self, event: dict[str, Any]) -> None:
        """Hand ``event`` on when it is critical."""
        if event.get("log_level") is LogLevel.critical:
            self.observer(event)


def console_observer() -> Any:
    """twistd ``--logger`` factory of the ``llamaswap`` command: only critical events, on stderr.

    Everything else reaches stdout through the proxy log, in llama-swap's format and filtered
    by ``logLevel`` (see ``logToStdout``).
    """
    from twisted.logger import textFileLogObserver

    _console["owns_stdout"] = True
    return CriticalOnly(textFileLogObserver(sys.__stderr__ or sys.stderr))


def main(argv: list[str] | None = None) -> None:
    """The ``llamaswap`` console script: run the service in the foreground under twistd."""
    from twisted.scripts.twistd import run

    args = sys.argv[1:] if argv is None else argv
    sys.argv = [
        "twistd", "--nodaemon", "--pidfile=",
        "--logger=llamaswap.tap.console_observer", "llamaswap", *args,
    ]
    run()
