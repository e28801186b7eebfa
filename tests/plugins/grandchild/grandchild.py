"""A plugin that starts a long-lived child (and that child a grandchild) at start-up."""

import glob
import os
import subprocess
import sys

from ekuiper import Function, PluginConfig, plugin

HERE = os.path.dirname(os.path.abspath(__file__))
NAME = os.path.splitext(os.path.basename(glob.glob(os.path.join(HERE, "*.json"))[0]))[0]
# sh -> sleep: a child and a grandchild; the child ignores SIGTERM to make stopping harder.
CHILD = subprocess.Popen(["/bin/sh", "-c", "trap '' TERM; sleep 600 & wait"])


class Pids(Function):
    def validate(self, args):
        return ""

    def exec(self, args, ctx):
        return [os.getpid(), CHILD.pid]

    def is_aggregate(self):
        return False


if __name__ == "__main__":
    plugin.start(PluginConfig(NAME, {}, {}, {"pids": lambda: Pids()}))
    sys.exit(0)
