#!/usr/bin/env python3
"""The benchmark report: `docs/benchmarks.md` and its plots from one results file.

    bench/report.py RESULTS.jsonl [--out DIR]     (bench.py calls `generate` itself)

Medians over the rounds kept; a load measurement marked `noisy` (foreign CPU above
the run's threshold) is never in a median: it is listed under "Dropped". Ratios are
amy-emperor's median over uWSGI's median of the same figure.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

SERVER_ORDER = ["amy", "amy-pure", "amy-lazy", "amy-check", "uwsgi", "gunicorn", "granian", "nginx"]
LABEL = {
    "amy": "amy-emperor",
    "amy-pure": "amy-emperor, no native path",
    "amy-lazy": "amy-emperor, lazy-apps",
    "amy-check": "amy-emperor, reload-check",
    "uwsgi": "uWSGI",
    "gunicorn": "gunicorn",
    "granian": "Granian",
    "nginx": "nginx `return 200`",
}
# Bar-chart ticks: one word each, distinct.
SHORT = {"amy": "amy", "amy-pure": "amy-pure", "amy-lazy": "amy-lazy", "amy-check": "amy-check",
         "uwsgi": "uWSGI", "gunicorn": "gunicorn", "granian": "Granian", "nginx": "nginx"}
COLOR = {"amy": "#1b7837", "amy-pure": "#b8860b", "amy-lazy": "#5aae61", "amy-check": "#a6dba0", "uwsgi": "#762a83",
         "gunicorn": "#e08214", "granian": "#2166ac", "nginx": "#777777"}
APP_LABEL = {"hello": "hello", "django": "Django page", "django-heavy": "Django heavy page",
             "static": "(no app)"}


def is_load(scenario):
    return scenario in ("throughput", "direct") or scenario.startswith("http_")


def load(paths):
    recs = []
    for p in paths:
        with open(p) as f:
            recs += [json.loads(line) for line in f if line.strip()]
    return recs


def order(servers):
    return sorted(servers, key=lambda s: (SERVER_ORDER.index(s) if s in SERVER_ORDER else 99, s))


def fmt(v, unit=""):
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e5 and v != 0.0 or v == 0.0:
        v = int(v)
    if isinstance(v, float):
        if abs(v) >= 1000:
            s = f"{v:,.0f}".replace(",", " ")
        elif abs(v) >= 100:
            s = f"{v:.0f}"
        elif abs(v) >= 10:
            s = f"{v:.1f}"
        else:
            s = f"{v:.2f}"
    else:
        s = str(v)
    return s + unit


class Data:
    def __init__(self, recs):
        self.meta = next((r for r in recs if r["scenario"] == "meta"), {})
        self.end = next((r for r in recs if r["scenario"] == "meta_end"), {})
        self.recs = [r for r in recs if r["scenario"] not in ("meta", "meta_end")]
        # Load measurements are noisy above `foreign_max`; a reload or a broken release
        # (gaps of hundreds of ms) above `foreign_max_reload`: dropped, never averaged in.
        self.reload_max = self.meta.get("foreign_max_reload", 50.0)
        for r in self.recs:
            if r["scenario"] in ("reload", "broken"):
                r["noisy"] = (r.get("cpu_foreign_pct") or 0) > self.reload_max
        self.kept = [r for r in self.recs if r["scenario"] != "error" and not r.get("noisy")]
        self.dropped = []
        # A (server, app, round, scenario) whose every attempt was noisy is dropped.
        seen = {}
        for r in self.recs:
            if r["scenario"] == "error" or not (is_load(r["scenario"]) or r["scenario"] in ("reload", "broken")):
                continue
            seen.setdefault((r["server"], r["app"], r["round"], r["scenario"]), []).append(r)
        for key, rs in sorted(seen.items(), key=lambda kv: str(kv[0])):
            if all(x.get("noisy") for x in rs):
                self.dropped.append((key, [x.get("cpu_foreign_pct") for x in rs]))
        self.repeated = sum(1 for rs in seen.values() if len(rs) > 1)
        self.errors = [r for r in self.recs if r["scenario"] == "error"]

    def values(self, server, app, scenario, field, noisy=False):
        src = [r for r in self.recs if r.get("noisy")] if noisy else self.kept
        return [r[field] for r in src
                if r["server"] == server and r["app"] == app and r["scenario"] == scenario
                and r.get(field) is not None]

    def median(self, server, app, scenario, field):
        v = self.values(server, app, scenario, field)
        return statistics.median(v) if v else None

    def servers(self, scenario, app=None):
        return order({r["server"] for r in self.kept if r["scenario"] == scenario
                      and (app is None or r["app"] == app)})

    def apps(self, scenario):
        known = ["hello", "django", "django-heavy", "static"]
        return sorted({r["app"] for r in self.kept if r["scenario"] == scenario},
                      key=lambda x: known.index(x) if x in known else 9)

    def record_near_median(self, server, app, scenario, field):
        rs = [r for r in self.kept if r["server"] == server and r["app"] == app
              and r["scenario"] == scenario and r.get(field) is not None]
        if not rs:
            # Only noisy ones: still worth a line on the chart, marked.
            rs = [r for r in self.recs if r["server"] == server and r["app"] == app
                  and r["scenario"] == scenario and r.get(field) is not None]
        if not rs:
            return None
        rs.sort(key=lambda r: r[field])
        return rs[(len(rs) - 1) // 2]


def ratio(a, u):
    if a is None or not u:
        return "–"
    return f"{a / u:.2f}×"


def spread(vals):
    if len(vals) < 2 or min(vals) == max(vals):
        return ""
    lo, hi = min(vals), max(vals)
    return f" ({fmt(lo if isinstance(lo, int) else float(lo))}–{fmt(hi if isinstance(hi, int) else float(hi))})"


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def load_table(d, scenario, apps=None, extra_note=None):
    """req/s (spread) · ratio · p50 · p99 · errors · kept rounds, per app and server."""
    rows = []
    for app in apps or d.apps(scenario):
        u = d.median("uwsgi", app, scenario, "rps")
        for s in d.servers(scenario, app):
            v = d.values(s, app, scenario, "rps")
            if not v:
                continue
            m = statistics.median(v)
            rows.append([APP_LABEL.get(app, app), LABEL.get(s, s), f"**{fmt(m)}**{spread(v)}",
                         ratio(m, u) if s != "uwsgi" else "1.00×",
                         fmt(d.median(s, app, scenario, "p50_ms")), fmt(d.median(s, app, scenario, "p99_ms")),
                         fmt(sum(d.values(s, app, scenario, "errors"))), len(v),
                         per_run_foreign(d, s, app, scenario)])
    out = table(["app", "server", "req/s, median (min–max)", "÷ uWSGI", "p50 ms", "p99 ms", "errors",
                 "rounds", "foreign CPU % per attempt (round: kept, *noisy*)"], rows) if rows else [
        "No kept measurement."]
    return out + noisy_rows(d, scenario)


def per_run_foreign(d, server, app, scenario):
    """Every attempt's foreign CPU, in round order: `r1 4.2, r2 *31* 6.0` (noisy in italics)."""
    by = {}
    for r in d.recs:
        if r["server"] == server and r["app"] == app and r["scenario"] == scenario:
            v = r.get("cpu_foreign_pct")
            by.setdefault(r["round"], []).append("–" if v is None else (
                f"*{fmt(float(v))}*" if r.get("noisy") else fmt(float(v))))
    return ", ".join(f"r{k} {' '.join(v)}" for k, v in sorted(by.items()))


def noisy_rows(d, scenario):
    """(app, server) pairs with no kept measurement: what their noisy attempts gave,
    shown apart and never in a median or a ratio."""
    kept = {(r["server"], r["app"]) for r in d.kept if r["scenario"] == scenario}
    got = {}
    for r in d.recs:
        if r["scenario"] == scenario and r.get("noisy") and (r["server"], r["app"]) not in kept:
            got.setdefault((r["app"], r["server"]), []).append(r)
    rows = []
    apps = ["hello", "django", "django-heavy", "static"]

    def rank(kv):
        app, server = kv[0]
        return (apps.index(app) if app in apps else 9, SERVER_ORDER.index(server) if server in SERVER_ORDER else 99)

    for (app, s), rs in sorted(got.items(), key=rank):
        m = statistics.median(r["rps"] for r in rs)
        u = got.get((app, "uwsgi"))
        um = statistics.median(r["rps"] for r in u) if u else None
        rows.append([APP_LABEL.get(app, app), LABEL.get(s, s), f"*{fmt(m)}*",
                     "–" if s == "uwsgi" or not um else f"*{m / um:.2f}×*",
                     len(rs), fmt(statistics.median(r["cpu_foreign_pct"] for r in rs))])
    if not rows:
        return []
    return ["", "Only noisy attempts (dropped: for reference only, in no median above and in no headline; "
            "the ratio is between two noisy medians of the same rounds):", ""] + table(
        ["app", "server", "req/s, median of the noisy attempts", "÷ uWSGI (noisy)", "attempts",
         "foreign CPU %"], rows)


def figure_table(d, scenario, fields, apps=None, servers=None, noisy=False):
    rows = []
    src = [r for r in d.recs if r.get("noisy")] if noisy else d.kept
    known = ["hello", "django", "django-heavy", "static"]
    all_apps = sorted({r["app"] for r in src if r["scenario"] == scenario},
                      key=lambda x: known.index(x) if x in known else 9)
    for app in apps or all_apps:
        for s in servers or order({r["server"] for r in src if r["scenario"] == scenario and r["app"] == app}):
            cells = [APP_LABEL.get(app, app), LABEL.get(s, s)]
            present = False
            for field, _, show_ratio in fields:
                v = d.values(s, app, scenario, field, noisy)
                m = statistics.median(v) if v else None
                present = present or m is not None
                if isinstance(m, bool) or (v and isinstance(v[0], bool)):
                    cells.append(f"{sum(bool(x) for x in v)}/{len(v)}")
                    continue
                cell = fmt(m if isinstance(m, int) or not isinstance(m, float) else float(m)) + (
                    spread(v) if len(v) > 1 else "")
                if show_ratio and s != "uwsgi" and s.startswith("amy") and not noisy:
                    cell += f" · {ratio(m, d.median('uwsgi', app, scenario, field))}"
                cells.append(cell)
            cells.append(len(d.values(s, app, scenario, fields[0][0], noisy)))
            if present:
                rows.append(cells)
    if noisy:
        if not rows:
            return []
        return ["", f"Runs dropped as noisy (foreign CPU above {d.reload_max} %), for reference only:", ""] + table(
            ["app", "server"] + [f[1] for f in fields] + ["runs"], rows)
    if not rows:
        return ["No kept measurement."]
    return table(["app", "server"] + [f[1] for f in fields] + ["rounds"], rows)


# ---------------------------------------------------------------- plots


def rebin(pts):
    """Wider buckets when answers are sparse (Django: a few per 100 ms), so the line
    shows latency, not sampling holes. Bucket: [t_ms, answers, failed, max_ms]."""
    if not pts:
        return pts
    per = statistics.median(b[1] + b[2] for b in pts)
    k = 1 if per >= 8 else (3 if per >= 3 else 5)
    out = []
    for i in range(0, len(pts), k):
        g = pts[i:i + k]
        out.append([g[0][0], sum(b[1] for b in g), sum(b[2] for b in g), max(b[3] for b in g)])
    return out


def silent_spans(pts, width):
    """[t0, t1) stretches of at least 2 buckets with no answer at all."""
    spans, start = [], None
    for b in pts + [[pts[-1][0] + width, 1, 0, 0]] if pts else []:
        if b[1] + b[2] == 0:
            start = b[0] if start is None else start
        else:
            if start is not None and b[0] - start >= 2 * width:
                spans.append((start, b[0]))
            start = None
    return spans


def plots(d, img):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    img.mkdir(parents=True, exist_ok=True)
    out = {}

    # Latency over time across a reload, every server on one chart per app.
    for app in sorted({r["app"] for r in d.recs if r["scenario"] == "reload"}, key=lambda x: x != "hello"):
        fig, ax = plt.subplots(figsize=(12.5, 4.8))
        drew = False
        for s in order({r["server"] for r in d.recs if r["scenario"] == "reload" and r["app"] == app}):
            r = d.record_near_median(s, app, "reload", "longest_gap_ms")
            if not r or not r.get("timeline"):
                continue
            tag = " — noisy run, dropped" if r.get("noisy") else ""
            pts = rebin([b for b in r["timeline"] if -2000 <= b[0] <= 8000])
            live = [b for b in pts if b[1] + b[2]]
            ax.plot([b[0] / 1000 for b in live], [max(b[3], 0.05) for b in live], ".-", lw=1.3, ms=3,
                    color=COLOR.get(s), label=f"{LABEL.get(s, s)} (gap {fmt(r.get('longest_gap_ms'))} ms, "
                    f"{r.get('errors', 0)} failed, foreign CPU {fmt(r.get('cpu_foreign_pct'))} %{tag})")
            # Stretches with no answer at all: a bar along the bottom, in the server's colour.
            w = (pts[1][0] - pts[0][0]) if len(pts) > 1 else 100
            k = SERVER_ORDER.index(s) if s in SERVER_ORDER else 0
            for t0, t1 in silent_spans(pts, w):
                ax.axvspan(t0 / 1000, t1 / 1000, ymin=0.01 + 0.025 * k, ymax=0.03 + 0.025 * k,
                           color=COLOR.get(s), alpha=0.9)
            fails = [(b[0] / 1000, max(b[3], 0.05)) for b in pts if b[2]][:400]
            if fails:
                ax.plot(*zip(*fails), "x", color=COLOR.get(s), ms=7)
            drew = True
        if not drew:
            plt.close(fig)
            continue
        ax.axvline(0, color="k", lw=0.8, ls="--")
        ax.text(0.05, 0.97, "touch / SIGHUP", transform=ax.get_xaxis_transform(), va="top", fontsize=8)
        ax.set_yscale("log")
        ax.set_xlabel("seconds from the reload trigger")
        ax.set_ylabel("slowest answer per 100–500 ms bucket (ms, log)")
        ax.set_title(f"Reload under load through nginx, {APP_LABEL.get(app, app)}, every server\n"
                     "slowest answer per bucket; bars at the bottom = no answer at all; × = failed requests",
                     fontsize=9, loc="left")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        name = f"reload-{app}.png"
        fig.savefig(img / name, dpi=110)
        plt.close(fig)
        out[f"reload-{app}"] = name

    # req/s bars with spread: one panel per (scenario, app) group.
    def any_apps(sc):
        known = ["hello", "django", "django-heavy", "static"]
        return sorted({r["app"] for r in d.recs if r["scenario"] == sc}, key=lambda x: known.index(x)
                      if x in known else 9)

    groups = [(sc, app) for sc in ("throughput", "direct") for app in any_apps(sc)]
    groups += [(sc, "hello") for sc in ("http_socket_ka", "http_socket_close", "http_router_ka",
                                         "http_router_close") if "hello" in any_apps(sc)]
    titles = {"throughput": "through nginx", "direct": "direct on the socket",
              "http_socket_ka": "HTTP direct, keep-alive", "http_socket_close": "HTTP direct, Connection: close",
              "http_router_ka": "`http =` router, keep-alive", "http_router_close": "`http =` router, close"}
    if groups:
        cols = 3
        rows = (len(groups) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(12, 3.3 * rows), squeeze=False)
        for ax, (sc, app) in zip(axes.flat, groups):
            ss = order({r["server"] for r in d.recs if r["scenario"] == sc and r["app"] == app})
            meds, lo, hi, noisy = [], [], [], []
            for s in ss:
                v = d.values(s, app, sc, "rps")
                # No kept attempt: the noisy ones, hatched (dropped from every table's median).
                nz = not v
                if nz:
                    v = [r["rps"] for r in d.recs if r["server"] == s and r["app"] == app and r["scenario"] == sc]
                m = statistics.median(v)
                meds.append(m)
                lo.append(m - min(v))
                hi.append(max(v) - m)
                noisy.append(nz)
            bars = ax.bar(range(len(ss)), meds, yerr=[lo, hi], capsize=4, color=[COLOR.get(s) for s in ss])
            for bar, nz in zip(bars, noisy):
                if nz:
                    bar.set_hatch("///")
                    bar.set_alpha(0.45)
            um = [m for s, m in zip(ss, meds) if s == "uwsgi"]
            u = um[0] if um else None
            for i, (s, m) in enumerate(zip(ss, meds)):
                lab = fmt(float(m)) + (f"\n{m / u:.2f}×" if u and s != "uwsgi" else "")
                ax.text(i, m, lab, ha="center", va="bottom", fontsize=7)
            ax.set_xticks(range(len(ss)))
            ax.set_xticklabels([SHORT.get(s, s) for s in ss], fontsize=8)
            ax.set_title(f"{APP_LABEL.get(app, app)}, {titles.get(sc, sc)}", fontsize=9)
            ax.set_ylabel("req/s")
            ax.margins(y=0.25)
        for ax in list(axes.flat)[len(groups):]:
            ax.axis("off")
        fig.suptitle("Requests per second: median of the kept rounds, whisker = min–max, ratio to uWSGI; "
                     "hatched = only noisy attempts (dropped from the tables' medians)", fontsize=10)
        fig.tight_layout()
        fig.savefig(img / "rps.png", dpi=110)
        plt.close(fig)
        out["rps"] = "rps.png"

    # Memory bars: master RSS, template RSS (amy-emperor with preload) and the total PSS
    # (master + template + workers), per app.
    apps = d.apps("memory")
    if apps:
        fig, axes = plt.subplots(1, len(apps), figsize=(6.5 * len(apps), 4.0), squeeze=False)
        for ax, app in zip(axes.flat, apps):
            ss = d.servers("memory", app)
            w = 0.27
            m_rss = [(d.median(s, app, "memory", "master_rss_kib") or 0) / 1024 for s in ss]
            t_rss = [(d.median(s, app, "memory", "template_rss_kib") or 0) / 1024 for s in ss]
            t_pss = [(d.median(s, app, "memory", "total_pss_kib") or 0) / 1024 for s in ss]
            xs = list(range(len(ss)))
            colors = [COLOR.get(s) for s in ss]
            ax.bar([x - w for x in xs], m_rss, w, label="master RSS", color=colors, alpha=0.45)
            ax.bar(xs, t_rss, w, label="template RSS", color=colors, alpha=0.7, hatch="//")
            ax.bar([x + w for x in xs], t_pss, w, label="total PSS", color=colors)
            um = [(a, b) for s, a, b in zip(ss, m_rss, t_pss) if s == "uwsgi"]
            for x, s, a, t, b in zip(xs, ss, m_rss, t_rss, t_pss):
                ax.text(x - w, a, f"{a:.1f}", ha="center", va="bottom", fontsize=7)
                if t:
                    ax.text(x, t, f"{t:.1f}", ha="center", va="bottom", fontsize=7)
                lab = f"{b:.0f}" + (f"\n{b / um[0][1]:.2f}×" if um and um[0][1] and s != "uwsgi" else "")
                ax.text(x + w, b, lab, ha="center", va="bottom", fontsize=7)
            ax.set_xticks(xs)
            ax.set_xticklabels([SHORT.get(s, s) for s in ss], fontsize=8)
            ax.set_ylabel("MiB")
            ax.set_title(f"{APP_LABEL.get(app, app)}, {d.meta.get('processes', 4)} workers", fontsize=9)
            ax.margins(y=0.2)
        fig.suptitle("Memory: master RSS (light), template RSS (hatched), total PSS = master + template + "
                     "workers (dark, ratio to uWSGI)", fontsize=9)
        fig.tight_layout()
        fig.savefig(img / "memory.png", dpi=110)
        plt.close(fig)
        out["memory"] = "memory.png"
    return out


# ---------------------------------------------------------------- markdown


def feature_rows(d):
    f = d.meta.get("features", {})
    rows = []
    for key, what in (("http_router", "`http =` router (amy-emperor)"),
                      ("preload", "preload (app imported once per generation)"),
                      ("reload_check", "`reload-check` (new workers checked before traffic)")):
        rows.append([what, "measured" if f.get(key) else "n/a (not in this build)"])
    if any(r["server"] == "amy-pure" for r in d.kept):
        rows.append(["the worker without its native path (`AMY_EMPEROR_NO_NATIVE=1`, server "
                     "`amy-emperor, no native path`)", "measured (hello, through nginx and direct)"])
    return table(["feature", "in this report"], rows)


def headline(d):
    out = []
    for sc, app, what in (("throughput", "hello", "hello through nginx"),
                          ("direct", "hello", "hello directly on the socket"),
                          ("throughput", "django", "Django page through nginx"),
                          ("throughput", "django-heavy", "Django heavy page through nginx")):
        a = d.values("amy", app, sc, "rps")
        u = d.values("uwsgi", app, sc, "rps")
        if a and u:
            ra = statistics.median(a) / statistics.median(u)
            # Spread of the ratio: per-round ratios where both rounds were kept.
            per = {}
            for r in d.kept:
                if r["app"] == app and r["scenario"] == sc and r["server"] in ("amy", "uwsgi"):
                    per.setdefault(r["round"], {})[r["server"]] = r["rps"]
            rr = [v["amy"] / v["uwsgi"] for v in per.values() if "amy" in v and "uwsgi" in v and v["uwsgi"]]
            sp = f" (per round {min(rr):.2f}–{max(rr):.2f}×)" if len(rr) > 1 else ""
            out.append(f"- {what}: **{ra:.2f}×** uWSGI{sp} — {fmt(statistics.median(a))} vs "
                       f"{fmt(statistics.median(u))} req/s")
    for sc, what in (("throughput", "through nginx"), ("direct", "directly on the socket")):
        a, p = d.median("amy", "hello", sc, "rps"), d.median("amy-pure", "hello", sc, "rps")
        if a and p:
            out.append(f"- the worker's native path, hello {what}: {fmt(a)} req/s with it, {fmt(p)} without "
                       f"(`AMY_EMPEROR_NO_NATIVE=1`): **{a / p:.2f}×**")
    for app in ("hello", "django"):
        a = d.median("amy", app, "reload", "longest_gap_ms")
        u = d.median("uwsgi", app, "reload", "longest_gap_ms")
        if a is not None and u is not None:
            out.append(f"- reload under load, {APP_LABEL[app]}: longest gap with no answer {fmt(a)} ms vs "
                       f"{fmt(u)} ms; failed requests {fmt(sum(d.values('amy', app, 'reload', 'errors')))} vs "
                       f"{fmt(sum(d.values('uwsgi', app, 'reload', 'errors')))}")
    for app in ("hello", "django"):
        a = d.median("amy", app, "memory", "master_rss_kib")
        u = d.median("uwsgi", app, "memory", "master_rss_kib")
        if a and u:
            out.append(f"- master RSS, {APP_LABEL[app]}: {a / 1024:.1f} MiB vs {u / 1024:.1f} MiB")
    return out


def markdown(d, pics, path_note):
    m = d.meta.get("machine", {})
    dur = d.meta.get("durations", {})
    lines = [
        "# Benchmarks",
        "",
        "<!-- generated by bench/run.sh (bench/report.py); do not edit by hand -->",
        "",
        f"Generated by `{d.meta.get('command', 'bench/run.sh')}` — started {d.meta.get('started', '?')}, "
        f"ended {d.end.get('ended', '?')}, wall time **{fmt((d.end.get('wall_s') or 0) / 60)} min** "
        f"(setup {fmt(float(d.end.get('setup_s') or 0))} s, amy-emperor release build "
        f"{fmt(float(d.end.get('build_s') or 0))} s, measurements {fmt((d.end.get('rounds_s') or 0) / 60)} min "
        f"against an estimate of {fmt((d.end.get('estimate_s') or 0) / 60)} min on a quiet machine). Every figure and plot below comes from that one run "
        f"(`{path_note}`).",
        "",
        "## Headline (amy-emperor ÷ uWSGI 2.0.31, medians of kept rounds)",
        "",
    ]
    loads = [r for r in d.recs if is_load(r["scenario"])]
    noisy = [r for r in loads if r.get("noisy")]
    if loads and len(noisy) * 2 > len(loads):
        fc = statistics.median(r.get("cpu_foreign_pct") or 0 for r in loads)
        lines += [f"**This run's machine was busy**: {len(noisy)} of {len(loads)} load attempts were above the "
                  f"noise threshold (median foreign CPU {fmt(float(fc))} %), so few or no req/s figures are kept; "
                  "the dropped ones are shown apart, for reference only. Re-run `bench/run.sh` on a quiet "
                  "machine for the headline ratios.", ""]
    lines += headline(d) or ["(no pair of kept amy-emperor / uWSGI measurements)"]
    lines += ["", "## Machine and versions", ""]
    lines += table(["", ""], [
        ["CPU", f"{m.get('cpu')} × {m.get('cores')} (shared with other work: see foreign CPU)"],
        ["memory, kernel, OS", f"{m.get('mem_gib')} GiB, {m.get('kernel')}, {m.get('os')}"],
        ["amy-emperor", f"{m.get('amy_emperor')} (commit {m.get('commit')}, release build)"],
        ["uWSGI", m.get("uwsgi")], ["gunicorn", m.get("gunicorn")], ["Granian", m.get("granian")],
        ["Python / Django", f"{m.get('python')} / {m.get('django')}"],
        ["nginx / wrk", f"{m.get('nginx')} / {m.get('wrk')}"],
    ])
    lines += ["", "## How it was measured", "",
              f"- {d.meta.get('rounds')} round(s), interleaved: round 1 of every server × app, then round 2, …, "
              "the server order rotated each round. Every round: start (ready), through nginx, memory, "
              f"direct, stop; the first {d.meta.get('side_rounds', d.meta.get('rounds'))} round(s) also: idle "
              "wake-ups, HTTP, reload, broken release, and the lazy-apps / reload-check variants (so that 3 "
              "rounds of the headline fit in the time). `amy-emperor, no native path` is amy-emperor with "
              "`AMY_EMPEROR_NO_NATIVE=1` in the master's environment (the workers inherit it), hello only. "
              "Each server runs with the same ini keys "
              f"(`processes = {d.meta.get('processes')}`, `master`, `socket`, `vacuum`, `die-on-term`, "
              "`need-app`, `home`, `for-readline = uwsgi_env`, `disable-logging`), behind the same nginx "
              "(`worker_processes 1`, `access_log off`): `uwsgi_pass unix:` for amy-emperor and uWSGI, "
              "`proxy_pass` for gunicorn (unix socket, sync workers, no `--preload`) and Granian "
              "(loopback TCP, `--interface wsgi`). All servers run the app from one venv "
              "(`bench/.work/venv-bench`).",
              f"- Apps: `hello` (50-byte body), the Django page `/` (Django 5.2 + SQLite, 2 queries, ~7.5 KB), "
              f"the heavy Django page `/report/` (3 queries incl. a GROUP BY, 50 rows through a template "
              "with date/text filters, ~16 KB; about 4× the CPU of `/`).",
              f"- Through nginx: `wrk -t2 -c{d.meta.get('conns')} -d{dur.get('wrk')}s --latency` after a "
              f"{dur.get('warmup')} s warm-up (wrk's read errors, which is how it sees a server closing after each "
              "answer without saying so, are not counted as errors). Direct: `bench/loadgen` on the server's socket (uwsgi protocol "
              "with nginx's vars; HTTP for gunicorn and Granian), one request per connection as nginx does, "
              f"{d.meta.get('conns')} connections, {dur.get('direct')} s. HTTP: wrk straight at `http-socket` "
              f"(gunicorn and Granian: their TCP bind), {dur.get('http')} s, keep-alive asked for and "
              "`Connection: close`.",
              f"- Reload: loadgen through nginx, {d.meta.get('conns')} keep-alive clients, {dur.get('reload')} s, "
              f"the ini touched at {dur.get('reload_at')} s (gunicorn, Granian: SIGHUP). Broken release: the "
              "app's entry module replaced by one that raises at import, then the same trigger, "
              f"{dur.get('broken')} s of load.",
              f"- Memory: `/proc` VmRSS and `smaps_rollup` Pss after the throughput run (the lazy-apps and "
              f"reload-check variants, which skip it: after {dur.get('warmup', 2) + 1} s of unreported load). Idle wake-ups: context "
              f"switches of all the master's threads (and of the workers) over {dur.get('idle')} idle seconds.",
              f"- **Noise**: each load measurement records the CPU used by processes other than this run's "
              f"(`foreign CPU`). Above **{d.meta.get('foreign_max')} %** it is repeated (at most "
              f"{d.meta.get('retries')} times) and, if it stays above, dropped — never averaged in. "
              f"{d.repeated} measurements were repeated; {len(d.dropped)} dropped (listed at the end). A reload "
              f"or broken-release run is not repeated; above **{d.reload_max} %** it is dropped the same way.",
              "- The harness (`bench/bench.py`), the client (`bench/loadgen`), the apps (`bench/apps/`) and "
              "this generator (`bench/report.py`) are in the repository; each run's folder keeps its "
              "rendered ini, nginx.conf, exact command and logs.", ""]
    c = d.meta.get("conns", 32)
    lines += ["The exact commands of each measurement (`RUN` is the run's folder, ports are random; every "
              "run folder has its server's `command.txt`, `nginx.conf` and the logs):", "", "```sh",
              f"wrk -t2 -c{c} -d{dur.get('wrk')}s --timeout 10s --latency http://127.0.0.1:NGINX/          "
              "# through nginx (/report/ for the heavy page)",
              f"loadgen --mode uwsgi --target RUN/app.sock --conns {c} --duration {dur.get('direct')} "
              "--req-timeout 10 --path /   # direct (gunicorn: --mode http-unix; Granian: --mode http-close "
              "--target 127.0.0.1:PORT)",
              f"wrk -t2 -c{c} -d{dur.get('http')}s --timeout 10s --latency [-H 'Connection: close'] "
              "http://127.0.0.1:HTTP_SOCKET/   # over HTTP",
              f"loadgen --mode http --target 127.0.0.1:NGINX --conns {c} --duration {dur.get('reload')} "
              f"--req-timeout 10 --trigger-at {dur.get('reload_at')} --trigger-cmd 'touch RUN/amy_uwsgi.ini' "
              "--timeline-ms 100   # reload (gunicorn, Granian: 'kill -HUP PID')",
              f"loadgen ... --duration {dur.get('broken')} --trigger-at 2 --trigger-cmd 'cp RUN/broken.py "
              "RUN/app/hello.py && touch RUN/amy_uwsgi.ini'   # broken release",
              "amy-emperor start RUN/amy_uwsgi.ini | uwsgi --ini RUN/amy_uwsgi.ini | gunicorn --workers 4 "
              "--worker-class sync --bind unix:RUN/app.sock ... | granian --interface wsgi --workers 4 "
              "--host 127.0.0.1 --port PORT ...",
              "```", ""]
    lines += ["Features of this build (detected: `amy-emperor check` accepts the key; preload = a template "
              "process at start) and the variants measured for them (`lazy-apps = true` is preload off, "
              "`reload-check = /` is reload-check on):", ""]
    lines += feature_rows(d)
    lines += ["", "## Throughput and latency through nginx", "",
              "nginx's own `return 200` is the ceiling of this path on this machine.", ""]
    lines += load_table(d, "throughput")
    if "rps" in pics:
        lines += ["", f"![req/s with spread](img/{pics['rps']})"]
    lines += ["", "## Directly on the socket (no nginx)", ""]
    lines += load_table(d, "direct")
    lines += ["", "## Over HTTP, no nginx (hello)", "",
              "`http-socket` (amy-emperor, uWSGI) or the server's own HTTP bind (gunicorn, Granian):", ""]
    for sc, what in (("http_socket_ka", "keep-alive asked for"), ("http_socket_close", "`Connection: close`")):
        lines += ["", f"**{what}**", ""] + load_table(d, sc)
    router = [sc for sc in ("http_router_ka", "http_router_close") if any(r["scenario"] == sc for r in d.recs)]
    lines += ["", "**`http =` router** (a router process in front of the workers: uWSGI's, and amy-emperor's "
              "when its build has it):", ""]
    for sc in router:
        lines += ["", f"*{'keep-alive' if sc.endswith('ka') else 'Connection: close'}*", ""] + load_table(d, sc)
    if not router:
        lines += ["n/a (not measured in this run)"]
    lines += ["", "## Reload under load", "",
              "Figures are medians over the rounds (min–max); after a `·`, amy-emperor's figure ÷ uWSGI's "
              "(lower is better here).", ""]
    for key in [k for k in pics if k.startswith("reload-")]:
        lines += [f"![latency across a reload]( img/{pics[key]})".replace("( ", "("), ""]
    rel_fields = [
        ("errors", "failed requests", False), ("longest_gap_ms", "longest gap ms", True),
        ("window_max_ms", "max latency ms (window)", True), ("window_p99_ms", "p99 ms (window)", True),
        ("first_new_pid_ms", "trigger → first new-worker answer ms", True), ("settle_ms", "settled after ms", False),
        ("cpu_foreign_pct", "foreign CPU %", False)]
    lines += figure_table(d, "reload", rel_fields) + figure_table(d, "reload", rel_fields, noisy=True)
    lines += ["", "The window runs from the trigger to the latest of: first answer from a new worker, last answer "
              "from an old one, last error. The longest gap is the longest stretch with no successful answer "
              "at all, from 1 s before the trigger.", "",
              "## A broken release under load", "",
              "The app's entry module is replaced by one that raises at import, then the reload trigger. "
              "What a site answers while its release is broken:", ""]
    br_fields = [
        ("errors_after_trigger", "failed after trigger", False), ("longest_gap_ms", "longest gap ms", True),
        ("ok_last_2s", "answers in the last 2 s", False), ("server_alive", "server still running", False),
        ("old_pid_after", "old workers still answering", False), ("cpu_foreign_pct", "foreign CPU %", False)]
    lines += figure_table(d, "broken", br_fields) + figure_table(d, "broken", br_fields, noisy=True)
    lines += ["", "## Start, stop, memory, idle cost", ""]
    lines += figure_table(d, "ready", [("ready_ms", "launch → first 200 ms", True),
                                       ("all_workers_ms", f"launch → all {d.meta.get('processes', 4)} workers ms",
                                        True)])
    lines += ["", "Memory after the throughput run. **total** = master + template + workers: amy-emperor's "
              "template (with preload, the app imported once per generation; it forks the workers) is counted "
              "there and shown apart; uWSGI's master is its template. The `http =` router process (hello, "
              "amy-emperor and uWSGI) is apart and not in the total.", ""]
    lines += figure_table(d, "memory", [
        ("master_rss_kib", "master RSS KiB", True), ("master_pss_kib", "master PSS KiB", True),
        ("template_rss_kib", "template RSS KiB", False), ("workers_pss_kib", "workers PSS KiB", True),
        ("total_rss_kib", "total RSS KiB", True), ("total_pss_kib", "total PSS KiB", True),
        ("router_rss_kib", "router RSS KiB", True)])
    if "memory" in pics:
        lines += ["", f"![memory](img/{pics['memory']})"]
    lines += ["", "Idle wake-ups (context switches per second, all threads) right after start, no traffic; "
              "*master + template* is the supervisor's own cost (uWSGI: its master).", ""]
    lines += figure_table(d, "idle", [("master_wakeups_per_s", "master wake-ups/s", True),
                                      ("template_wakeups_per_s", "template wake-ups/s", False),
                                      ("supervisor_wakeups_per_s", "master + template wake-ups/s", True),
                                      ("workers_wakeups_per_s", "workers wake-ups/s (all)", True)])
    lines += [""] + figure_table(d, "shutdown", [("stop_ms", "SIGTERM → tree gone ms", True),
                                                 ("socket_left", "socket left behind", False)])
    lines += ["", "## Dropped and failed", ""]
    if d.dropped:
        lines += [f"- dropped (every attempt noisy): {LABEL.get(k[0], k[0])} / {k[1]} round {k[2]} {k[3]} "
                  f"(foreign CPU {', '.join(fmt(float(x)) + ' %' for x in cpus if x is not None)})"
                  for k, cpus in d.dropped]
    else:
        lines += ["- no measurement dropped"]
    for e in d.errors:
        lines.append(f"- failed run: {LABEL.get(e['server'], e['server'])} / {e['app']} round {e['round']}: "
                     f"{e.get('error')}")
    lines += ["", "Reproduce: `bench/run.sh` (see `bench/README.md`); re-render this page from the same "
              "results: `bench/.work/venv-bench/bin/python bench/report.py RESULTS.jsonl`.", ""]
    return "\n".join(lines)


def generate(paths, out_dir):
    out_dir = Path(out_dir)
    d = Data(load(paths))
    pics = plots(d, out_dir / "img")
    note = ", ".join(str(Path(p).name) for p in paths)
    md = out_dir / "benchmarks.md"
    out_dir.mkdir(parents=True, exist_ok=True)
    md.write_text(markdown(d, pics, note))
    return md


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "docs"))
    a = ap.parse_args()
    print(generate(a.results, a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
