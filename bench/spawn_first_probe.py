"""A *prototype* of the start order proposed in docs/performance.md, for measurement only.

Not ekl-python: it spawns the plugin right after the launch-cache hit (with only the plugin
reader, the process module and the cache imported), then imports the host and listens on
the private control socket while the plugin boots, waits for the plugin's handshake,
prints one line and kills the plugin. ``bench_startup.py --what-if`` times it from spawn to
that line, against the bare plugin's start to handshake, to show what the proposed order
(which needs a host that adopts a spawned process) could reach.

Usage: ``python bench/spawn_first_probe.py PLUGIN_FOLDER``
"""

import os
import subprocess
import sys
import tempfile

from ekl.launcher.plugin import load
from ekl.launcher.settings import LaunchOptions
from ekl.launcher.start.resolve import resolve


def main() -> None:
    plugin = load(sys.argv[1])
    spec = resolve(plugin, LaunchOptions(create_env=True), host_sdk="always")  # cache hit
    private = tempfile.mkdtemp(prefix="ekl-", dir="/tmp")
    from ekuiper import protocol

    env = dict(spec.env)
    env[protocol.IPC_DIR_ENV] = private
    env[protocol.CONTROL_URL_ENV] = protocol.control_url(plugin.name, private)
    proc = subprocess.Popen(list(spec.argv), cwd=spec.cwd, env=env, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        from ekl.launcher.host.control import ControlChannel  # pynng: while the plugin boots

        control = ControlChannel(plugin.name, private)
        control.handshake(10, alive=lambda: proc.poll() is None)
        sys.stdout.write("handshake\n")
        sys.stdout.flush()
        control.close()
    finally:
        proc.kill()
        proc.wait()
        import shutil

        shutil.rmtree(private, ignore_errors=True)
    os._exit(0)


if __name__ == "__main__":
    main()
