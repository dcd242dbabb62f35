"""`mount = /prefix=app` and `manage-script-name`, as uWSGI 2.0 chooses an app.

uWSGI keeps a list of apps: the `module`/`wsgi-file` one (mountpoint "") first,
then each mount in order. The first app loaded is the default app.

- `manage-script-name` (core/protocol.c): the longest mountpoint that is a
  prefix of PATH_INFO on a path boundary wins (a trailing slash of the
  mountpoint is ignored for the match); SCRIPT_NAME becomes the mountpoint as
  written and PATH_INFO what follows it. No match: both unchanged.
- Then (plugins/python/wsgi_handlers.c, uwsgi_get_app_id) the app whose
  mountpoint equals SCRIPT_NAME serves the request; none: the default app.
  So without manage-script-name a mount is chosen by the SCRIPT_NAME nginx
  sends (`uwsgi_param SCRIPT_NAME /prefix`), PATH_INFO untouched.
"""


class Mounts(object):
    def __init__(self, apps, manage_script_name):
        """`apps`: [(mountpoint, callable)] in uWSGI's load order."""
        self.by_name = {}
        for mountpoint, app in apps:
            self.by_name.setdefault(mountpoint, app)
        self.default = apps[0][1]
        self.manage = manage_script_name
        # Longest first; (match text, mountpoint as written, app).
        cands = []
        for mountpoint, app in apps:
            match = mountpoint[:-1] if mountpoint.endswith("/") else mountpoint
            if match:
                cands.append((match, mountpoint, app))
        cands.sort(key=lambda c: -len(c[0]))
        self.candidates = cands

    def select(self, env):
        """The app for this request; fixes SCRIPT_NAME/PATH_INFO first when managed."""
        if self.manage:
            path = env.get("PATH_INFO", "")
            for match, mountpoint, app in self.candidates:
                n = len(match)
                if path.startswith(match) and (len(path) == n or path[n] == "/"):
                    env["SCRIPT_NAME"] = mountpoint
                    env["PATH_INFO"] = path[len(mountpoint):]
                    return app
        app = self.by_name.get(env.get("SCRIPT_NAME", ""))
        return self.default if app is None else app
