"""Every timeout, limit and launch choice of the host and supervisor, each a named setting.

All three are frozen: built once (from the CLI, the plugin JSON's ``ekl`` section, a test)
and never changed afterwards, so a value read in one thread is the value every thread
uses. Derive a variant with ``ekuiper.record.replace``.
"""

from __future__ import annotations

from ekuiper import protocol
from ekuiper.record import field, record

TYPE_CHECKING = False  # typing is not loaded at run time on the start path (docs/architecture.md)
if TYPE_CHECKING:
    from typing import Mapping, Optional

RESTART_POLICIES = ("always", "on-failure", "never")

#: A plugin output line longer than this is cut (with a marker) and the rest of it skipped:
#: a 300 MB line without a newline must not become 300 MB of launcher memory.
OUTPUT_LINE_MAX_BYTES = 64 * 1024
#: Error texts kept in the status file (last exit, fatal reason, restart reasons) are cut here.
ERROR_TEXT_MAX_CHARS = 4096
#: eKuiper's ``portable.recvTimeout``: a function call or sink record busy longer is a hang.
DEFAULT_CALL_TIMEOUT_S = 5.0
LOCK_POLICIES = ("strict", "warn", "off")


@record(frozen=True)
class LaunchOptions:
    """How to choose the plugin's interpreter and what to hand it."""

    python: Optional[str] = None
    ekuiper_conf: Optional[str] = None
    conda_run: bool = False
    send_timeout_ms: int = protocol.DEFAULT_SEND_TIMEOUT_MS
    lock_policy: str = "warn"
    log_file: Optional[str] = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    #: build the plugin-local environment from its lock file when it is missing (ekl-python)
    create_env: bool = False


@record(frozen=True)
class HostSettings:
    #: wait for the plugin's handshake (eKuiper ``portable.initTimeout``)
    init_timeout_s: float = protocol.INIT_TIMEOUT_MS / 1000
    #: wait for a start/stop result; a source start may spend 5 s dialing
    command_timeout_s: float = 15.0
    #: handed to the plugin in argv[1] (eKuiper ``PortbleConf.SendTimeout``)
    plugin_send_timeout_ms: int = protocol.DEFAULT_SEND_TIMEOUT_MS
    #: wait for a function's answer (eKuiper ``portable.recvTimeout``; ``--call-timeout``)
    function_timeout_s: float = DEFAULT_CALL_TIMEOUT_S
    #: wait for the plugin to take a sink message (eKuiper ``portable.sendTimeout``)
    sink_send_timeout_s: float = 5.0
    #: wait for a sink's ack when the rule sets requireAck
    ack_timeout_s: float = 5.0
    #: SIGTERM to SIGKILL when stopping the plugin's process tree
    stop_timeout_s: float = 5.0
    #: socket folder; None picks a private one when the plugin's SDK supports it
    ipc_dir: Optional[str] = None


@record(frozen=True)
class SupervisorSettings:
    restart: str = "on-failure"            # always | on-failure | never
    backoff_initial_s: float = 0.1
    backoff_factor: float = 2.0
    backoff_max_s: float = 30.0
    #: healthy this long after a start and the back-off resets
    startsecs: float = 5.0
    #: more than start_limit starts within start_limit_window_s -> FATAL
    start_limit: int = 5
    start_limit_window_s: float = 60.0
    health_interval_s: float = 2.0
    probe_timeout_s: float = 3.0
    #: restart when RSS stays above this for rss_strikes consecutive checks (None: no limit)
    max_rss_mb: Optional[float] = None
    rss_strikes: int = 3
    #: with max_rss, memory is sampled as often as a plugin growing this fast needs to be
    #: caught before it crosses the limit by much (half the time its headroom would last,
    #: between rss_fast_interval_s and the health interval): 100 MB/s is caught before it
    #: doubles the limit, and an idle plugin far below it costs nothing extra
    rss_growth_mb_s: float = 100.0
    rss_fast_interval_s: float = 0.1
    #: a function call or sink record busy longer than this (reported in the ping answer of
    #: ekl's SDK) is a hang: restart and replay (eKuiper's recvTimeout)
    call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S
