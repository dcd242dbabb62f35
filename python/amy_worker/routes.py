"""`route`, `route-if` and friends: uWSGI's internal routing (core/routing.c and
the router_basicauth, router_redirect, router_rewrite plugins), for the actions
and conditions src/config/serving.rs accepts; anything else was refused there.

Rules run in order before the app (and before a static file is sent). A rule
matches its subject (PATH_INFO, REQUEST_URI, ...) with a regexp, or tests a
condition (`route-if = equal:${HTTP_HOST};example.com ...`). Action arguments
expand `$1`..`$9` (the match groups) and `${VAR}` (request vars). Outcomes:
NEXT (go on with the next rule), CONTINUE (`last`, `continue`, `rewrite-last`:
stop routing, call the app) or a response (`redirect`, `return`, `break`,
`basicauth` refusing). `break` without a status closes the connection with no
response, as uWSGI does (nginx then answers 502).
"""

import os
import re

from .applog import log
from .errors import Abort


# Outcomes of one rule besides an answer tuple or a goto index (an int):
# sentinels, so a goto to rule 0 or 1 is never mistaken for one of them.
NEXT = object()
CONTINUE = object()


_VAR_RE = re.compile(r"\$\{([^}]*)\}")

_SUBJECT_VARS = {
    "path_info": "PATH_INFO",
    "request_uri": "REQUEST_URI",
    "query_string": "QUERY_STRING",
    "http_host": "HTTP_HOST",
    "remote_addr": "REMOTE_ADDR",
    "user_agent": "HTTP_USER_AGENT",
    "referer": "HTTP_REFERER",
    "remote_user": "REMOTE_USER",
}

_REASONS = {
    200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently", 302: "Found",
    303: "See Other", 304: "Not Modified", 307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 410: "Gone", 429: "Too Many Requests", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}


def _groups(text, m):
    """uWSGI's uwsgi_regexp_apply_ovec: `$N` is group N (empty if it did not take part)."""
    if m is None or "$" not in text:
        return text
    out = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "$" and i + 1 < n:
            d = text[i + 1]
            if d.isdigit():
                k = int(d)
                if k <= (m.re.groups if m is not None else 0):
                    out.append(m.group(k) or "")
                i += 2
                continue
            out.append(c)
            i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _translate(text, env, m):
    text = _groups(text, m)
    if "${" not in text:
        return text
    return _VAR_RE.sub(lambda v: env.get(v.group(1), "") if type(env.get(v.group(1), "")) is str else "", text)


class _Rule(object):
    __slots__ = ("subject", "var", "regex", "condition", "pattern", "action", "arg", "line", "negate", "label", "extra")


def _compile_condition(name, text):
    if name in ("regexp", "re"):
        left, _, right = text.partition(";")
        return (left, re.compile(right))
    return text


def _htpasswd_ok(path, user, password):
    import base64
    import hashlib

    try:
        with open(path, "r", encoding="latin-1") as f:
            lines = f.read().splitlines()
    except OSError:
        return False
    for line in lines:
        name, colon, hashed = line.partition(":")
        if not colon:
            break
        if name != user:
            continue
        hashed = hashed.strip()
        if hashed.startswith("{SHA}"):
            digest = base64.b64encode(hashlib.sha1(password.encode("latin-1")).digest()).decode("ascii")
            if digest == hashed[5:]:
                return True
            continue
        try:
            import crypt  # removed in Python 3.13; then only {SHA} entries work
        except ImportError:
            log("basicauth: %s: crypt(3) entries need Python's crypt module (not in this Python); use {SHA}" % path)
            return False
        if len(hashed) >= 13 and crypt.crypt(password, hashed) == hashed:
            return True
    return False


class Router(object):
    def __init__(self, routes):
        self.rules = []
        labels = {}
        for r in routes:
            rule = _Rule()
            rule.subject = r["subject"]
            rule.var = _SUBJECT_VARS.get(rule.subject)
            rule.condition = r.get("condition") or ""
            rule.action = r.get("action") or ""
            rule.arg = r.get("arg") or ""
            rule.line = r.get("line")
            rule.negate = rule.subject == "if-not"
            rule.label = r["pattern"] if rule.subject == "label" else None
            rule.regex = re.compile(r["pattern"]) if rule.var is not None else None
            rule.pattern = _compile_condition(rule.condition, r["pattern"]) if rule.condition else None
            rule.extra = None
            if rule.action in ("basicauth", "basicauth-next"):
                realm, _, creds = rule.arg.partition(",")
                rule.extra = (realm, creds, ":" in creds)
            if rule.label is not None:
                labels[rule.label] = len(self.rules)
            self.rules.append(rule)
        self.labels = labels

    def _condition(self, rule, env):
        """(matched, match object for $N)."""
        name = rule.condition
        if name in ("regexp", "re"):
            left, rx = rule.pattern
            m = rx.search(_translate(left, env, None))
            return m is not None, m
        text = rule.pattern
        if name in ("exists", "isfile", "isdir", "islink", "isexec", "empty"):
            v = _translate(text, env, None)
            if name == "exists":
                return os.path.exists(v), None
            if name == "isfile":
                return os.path.isfile(v), None
            if name == "isdir":
                return os.path.isdir(v), None
            if name == "islink":
                return os.path.islink(v), None
            if name == "isexec":
                return os.access(v, os.X_OK), None
            return v == "", None
        left, semi, right = text.partition(";")
        if not semi:
            return False, None
        a = _translate(left, env, None)
        b = _translate(right, env, None)
        if name in ("equal", "isequal", "eq", "=="):
            return a == b, None
        if name == "startswith":
            return a.startswith(b), None
        if name == "endswith":
            return a.endswith(b), None
        if name in ("contains", "contain"):
            return b in a, None
        try:
            x, y = int(a or 0), int(b or 0)
        except ValueError:
            return False, None
        if name in ("ishigher", ">"):
            return x > y, None
        if name in ("islower", "<"):
            return x < y, None
        if name in ("ishigherequal", ">="):
            return x >= y, None
        return x <= y, None

    def apply(self, env, headers):
        """Run the rules. Returns None (call the app) or (status, headers, body)
        to answer with; appends `addheader` headers to `headers`."""
        rules = self.rules
        i = 0
        n = len(rules)
        while i < n:
            rule = rules[i]
            i += 1
            if rule.label is not None:
                continue
            m = None
            if rule.var is not None:
                m = rule.regex.search(env.get(rule.var, ""))
                if m is None:
                    continue
            elif rule.condition:
                ok, m = self._condition(rule, env)
                if ok == rule.negate:
                    continue
            out = self._run(rule, env, m, headers)
            if out is NEXT:
                continue
            if out is CONTINUE:
                return None
            if type(out) is int:  # goto
                # forward only, as uWSGI (it skips rules until the label's
                # position); a label behind is a no-op, never a loop
                if out >= i:
                    i = out
                continue
            return out
        return None

    def _run(self, rule, env, m, headers):
        action = rule.action
        arg = rule.arg
        if action in ("continue", "last"):
            return CONTINUE
        if action == "addheader":
            name, _, value = _translate(arg, env, m).partition(":")
            headers.append((name.strip(), value.strip()))
            return NEXT
        if action in ("redirect", "redirect-302"):
            return ("302 Found", [("Location", _translate(arg, env, m))], b"Moved")
        if action in ("redirect-permanent", "redirect-301"):
            return ("301 Moved Permanently", [("Location", _translate(arg, env, m))], b"Moved Permanently")
        if action in ("rewrite", "rewrite-last"):
            from urllib.parse import unquote_to_bytes

            new = _translate(arg, env, m)
            path, q, query = new.partition("?")
            if q:
                old = env.get("QUERY_STRING", "")
                env["QUERY_STRING"] = query + "&" + old if old else query
            env["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1")
            return CONTINUE if action == "rewrite-last" else NEXT
        if action in ("return", "break-with-status"):
            code = int(arg[:3])
            reason = _REASONS.get(code)
            if reason is None:
                return ("%d Unknown" % code, [("Content-Type", "text/plain")], b"")
            return ("%d %s" % (code, reason), [("Content-Type", "text/plain")], reason.encode("ascii"))
        if action == "break":
            if len(arg) >= 3:
                return (_translate(arg, env, m), [("Connection", "close"), ("Content-Type", "text/plain")], b"")
            raise Abort()
        if action == "goto":
            target = self.labels.get(_translate(arg, env, m))
            if target is None:
                log("route goto: no label %r" % arg)
                return NEXT
            return target
        if action == "log":
            log(_translate(arg, env, m))
            return NEXT
        if action == "donotlog":
            from . import logvars

            logvars.donotlog()
            return NEXT
        if action in ("basicauth", "basicauth-next"):
            return self._basicauth(rule, env)
        if action == "static":
            # router_static: serve that one file; dispatch.py sends it
            return ("static", _translate(arg, env, m))
        log("route action %r is not implemented (config should have refused it)" % action)
        return ("500 Internal Server Error", [("Content-Type", "text/plain")], b"")

    def _basicauth(self, rule, env):
        if env.get("REMOTE_USER"):
            return NEXT
        realm, creds, inline = rule.extra
        auth = env.get("HTTP_AUTHORIZATION", "")
        if len(auth) > 7 and creds and auth.startswith("Basic "):
            import base64

            try:
                decoded = base64.b64decode(auth[6:].strip(), validate=False).decode("latin-1")
            except (ValueError, TypeError):
                decoded = None
            if decoded is not None:
                user, colon, password = decoded.partition(":")
                if colon:
                    if inline:
                        ok = decoded == creds
                    else:
                        ok = _htpasswd_ok(creds, user, password)
                    if ok:
                        env["REMOTE_USER"] = user
                        return NEXT
                if rule.action == "basicauth-next":
                    return NEXT
        return (
            "401 Authorization Required",
            [("WWW-Authenticate", 'Basic realm="%s"' % realm), ("Content-Type", "text/plain")],
            b"Unauthorized",
        )
