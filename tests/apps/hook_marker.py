"""Imported by `import = hook_marker` before the app: records that it ran."""
import os

with open(os.environ["HOOK_ORDER"], "a") as f:
    f.write("import %d\n" % os.getpid())
