"""The operator-facing edges of ekl: what systemd, Prometheus, log shippers and an operator's
config file see of a running launcher.

- :mod:`.metrics` -- Prometheus exposition built from the status files at scrape time
  (``ekl metrics --listen`` / ``--textfile``); keeps no state, so it can never disagree
  with ``ekl status``.
- :mod:`.sdnotify` -- the sd_notify protocol (``READY=1``, ``STATUS=``, ``WATCHDOG=1``,
  ``STOPPING=1``) for a ``Type=notify`` unit, and a watchdog pinger that goes quiet when the
  launcher's own loops stop, so systemd restarts a wedged launcher.
- :mod:`.logfmt` -- supervisor log lines with ISO-8601 timestamps and the plugin name,
  ``--log-format json`` for log shippers, per-plugin rotating files in ``--log-dir``.
- :mod:`.config` -- ``ekl supervise --config FILE.toml``: plugins, their settings and
  pipelines as frozen records, every problem reported at once, and the diff a SIGHUP
  reload acts on.
- :mod:`.health` -- ``ekl status`` exit codes (0/3/4, the LSB convention) and
  ``ekl status --check NAME...`` for probes.
- :mod:`.control` -- the control socket ``ekl restart|stop|start|reset`` use to reach a
  running launcher: the transport, its defences and the client; the launcher supplies the
  action.

Each module imports only the standard library, optional third-party libraries and
:mod:`ekl.launcher.errors`, so the launcher's internals can move without touching them; the
CLI wires them in.
"""
