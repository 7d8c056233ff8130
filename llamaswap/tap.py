"""The twistd entry point: ``twistd -n llamaswap --config cfg.yaml``."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from twisted.application.service import IService
from twisted.logger import ILogObserver, LogLevel
from twisted.python import usage
from zope.interface import implementer

from llamaswap.config import ConfigError
from llamaswap.config.loader import load_config_sources
from llamaswap.errors import NotStarted
from llamaswap.listen import ListenError, plan_listen
from llamaswap.observe.accepterrors import is_accept_error

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1:backlog=1024"

LISTEN_HELP = (
    "Where to listen: a llama-swap address HOST:PORT (:8080 listens on every interface; "
    "0.0.0.0:8080, 127.0.0.1:8080, [::1]:8080, localhost:8080), or a Twisted server "
    "endpoint string (tcp:8080:interface=127.0.0.1:backlog=1024, unix:/run/llamaswap.sock, "
    "ssl:8443:privateKey=key.pem:certKey=cert.pem, systemd:domain=INET:index=0). "
    "Default: 127.0.0.1:8080, or 127.0.0.1:8443 with TLS."
)


class Options(usage.Options):
    """Command line options of the llamaswap twistd plugin (and of the ``llamaswap`` command)."""

    synopsis = (
        "[--config FILE] [--config-dir DIR] [--listen ADDR] "
        "[--tls-cert-file CERT --tls-key-file KEY] [--watch-config] [--version]"
    )
    longdesc = (
        "Serve one OpenAI-compatible endpoint that starts the inference server each request "
        "names, stops the ones that must make room, queues what has to wait and streams every "
        "answer through. The config file is a llama-swap config file. At least one of "
        "--config and --config-dir is needed. The llamaswap command also takes llama-swap's "
        "single-dash spelling (-config, -listen :8080, -watch-config, ...)."
    )
    optParameters = [
        ["config", "c", None, "Path of the YAML config file."],
        ["config-dir", None, None,
         "Directory whose *.yml/*.yaml files are merged, in name order, after --config."],
        ["listen", "l", None, LISTEN_HELP],
        ["tls-cert-file", None, None,
         "TLS certificate (PEM); serve HTTPS only. Needs --tls-key-file."],
        ["tls-key-file", None, None, "TLS private key (PEM). Needs --tls-cert-file."],
    ]
    optFlags = [
        ["watch-config", "w",
         "Reload when the config file or a file of --config-dir changes (polled every 2 s)."],
    ]

    def opt_version(self) -> None:
        """Print llamaswap's version and the commit it was built from, then exit."""
        from llamaswap.buildinfo import version_line

        print(version_line())
        sys.exit(0)

    def postOptions(self) -> None:
        """Check the combination, then load the config, printing one line per problem."""
        path, directory = self["config"], self["config-dir"]
        if not path and not directory:
            raise usage.UsageError("at least one of --config or --config-dir must be given")
        try:
            self["listen_plan"] = plan_listen(
                self["listen"], self["tls-cert-file"], self["tls-key-file"]
            )
        except ListenError as error:
            raise usage.UsageError(str(error)) from None
        label = path or directory
        try:
            self["loaded_config"] = load_config_sources(path, directory)
        except ConfigError as error:
            for problem in error.problems:
                sys.stderr.write(f"llamaswap: {label}: {problem}\n")
            sys.stderr.write(
                f"llamaswap: {len(error.problems)} problem(s) in {label}; not starting\n"
            )
            raise SystemExit(1) from None


def makeService(options: dict[str, Any]) -> IService:
    """Construct (not start) the llamaswap service from parsed options."""
    from twisted.internet import reactor

    from llamaswap.service import LlamaSwapService

    return LlamaSwapService(
        config_path=options["config"],
        config_dir=options["config-dir"],
        config=options["loaded_config"],
        listen=options["listen_plan"],
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
        """Hand ``event`` on when it is critical (the port's running-out-of-descriptors
        failures excepted: the proxy log counts those, one line per interval)."""
        if event.get("log_level") is LogLevel.critical and not is_accept_error(event):
            self.observer(event)


def console_observer() -> Any:
    """twistd ``--logger`` factory of the ``llamaswap`` command: only critical events, on stderr.

    Everything else reaches stdout through the proxy log, in llama-swap's format and filtered
    by ``logLevel`` (see ``logToStdout``).
    """
    from twisted.logger import textFileLogObserver

    _console["owns_stdout"] = True
    return CriticalOnly(textFileLogObserver(sys.__stderr__ or sys.stderr))


# llama-swap's flags, which its users write with one dash (Go's flag package).
LONG_FLAGS = frozenset({
    "config", "config-dir", "listen", "tls-cert-file", "tls-key-file", "watch-config",
    "version", "help",
})
_BOOLEAN_FLAGS = frozenset({"watch-config", "version", "help"})
_SHORT_FLAGS = frozenset("clw")
_TRUE, _FALSE = ("1", "t", "true", "T", "TRUE", "True"), ("0", "f", "false", "F", "FALSE", "False")


def normalize_args(args: list[str]) -> list[str]:
    """llama-swap's spelling to ours: ``-config x`` becomes ``--config x``.

    A boolean flag may carry a value, as in Go: ``-watch-config=false`` is dropped.

    Raises ``usage.UsageError`` for a single-dash word that is not one of the flags.
    """
    out: list[str] = []
    for arg in args:
        if arg.startswith("-") and not arg.startswith("--") and len(arg) > 2:
            name = arg[1:].split("=", 1)[0]
            if name in LONG_FLAGS:
                arg = "-" + arg
            elif arg[1] not in _SHORT_FLAGS:
                raise usage.UsageError(f"flag provided but not defined: {arg.split('=', 1)[0]}")
        if arg.startswith("--") and "=" in arg:
            name, value = arg[2:].split("=", 1)
            if name in _BOOLEAN_FLAGS:
                if value in _FALSE:
                    continue
                if value not in _TRUE:
                    raise usage.UsageError(f"invalid boolean value {value!r} for --{name}")
                arg = f"--{name}"
        out.append(arg)
    return out


def usage_text() -> str:
    """The ``llamaswap --help`` text: synopsis, description and every option."""
    options = Options()
    return f"Usage: llamaswap {options.synopsis}\n{options.getUsage(width=None)}"


def main(argv: list[str] | None = None) -> None:
    """The ``llamaswap`` console script: run the service in the foreground under twistd.

    A command line that cannot work is one line on stderr and exit status 2.
    """
    from twisted.scripts.twistd import ServerOptions, runApp

    args = sys.argv[1:] if argv is None else argv
    try:
        args = normalize_args(args)
    except usage.UsageError as error:
        _usage_exit(error)
    if any(arg in ("-h", "--help") for arg in args):
        print(usage_text())
        sys.exit(0)
    sys.argv = ["llamaswap", *args]
    config = ServerOptions()
    try:
        config.parseOptions([
            "--nodaemon", "--pidfile=", "--logger=llamaswap.tap.console_observer",
            "llamaswap", *args,
        ])
    except usage.UsageError as error:
        _usage_exit(error)
    try:
        runApp(config)
    except NotStarted:
        sys.exit(1)  # why is on stderr already; a traceback would only repeat it


def _usage_exit(error: Exception) -> NoReturn:
    """One line naming the problem, on stderr, and exit status 2 (like Go's flag package)."""
    sys.stderr.write(f"llamaswap: {error} (llamaswap --help lists the options)\n")
    sys.exit(2)
