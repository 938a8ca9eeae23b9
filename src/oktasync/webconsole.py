"""The web console of ``oktasync serve`` (``[serve] console = true``): server-rendered pages
(aiohttp-jinja2, templates in ``webui/``, shipped in the package, nothing from a CDN), usable
without JavaScript except the live view (server-sent events).

Access: a password (``console_password_hash``, scrypt, or ``console_password``); a session is a
random token in an HttpOnly, SameSite=Strict cookie (Secure under TLS) kept in memory; every
state-changing request carries the session's anti-forgery token; failed sign-ins are limited
per client address. Secrets are never shown back: a secret typed into the settings form is
stored as a 0600 file in the state directory and referenced as ``file:``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import aiohttp_jinja2
import jinja2
import orjson
import tomlkit
from aiohttp import web

from oktasync.config import AppConfig, Config, ConfigError, load_config
from oktasync.engine import target_headers
from oktasync.errors import cause_of
from oktasync.history import audit_path, find_report, reports
from oktasync.http import make_session
from oktasync.network import route_of
from oktasync.passwords import check_password
from oktasync.progress import RunProgress
from oktasync.settings import AppSettings, toml_value

COOKIE = "oktasync_session"
SESSION_S = 8 * 3600
LOGIN_FAILURES, LOGIN_WINDOW_S = 5, 300.0
ACTIONS = (("incremental", "Synchronize"), ("full", "Full sync"), ("reconcile", "Reconcile"),
           ("preview", "Preview"))
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Host(Protocol):
    """What the console needs of the service."""

    config: Config
    progress: dict[str, RunProgress]

    def app(self, name: str) -> AppConfig | None: ...

    def running(self, name: str) -> bool: ...

    def start_run(self, app: AppConfig, kind: str) -> None: ...

    def last_run(self, name: str) -> dict[str, Any] | None: ...

    def healthy_now(self, app: AppConfig) -> bool: ...

    def reload_now(self) -> str | None: ...

    def held_now(self, app: AppConfig) -> list[Any]: ...

    def release_held_now(self, app: AppConfig) -> None: ...


@dataclass
class Session:
    csrf: str
    expires: float


@dataclass
class Console:
    host: Host
    tls: bool
    sessions: dict[str, Session] = field(default_factory=dict)
    failures: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))

    def routes(self, app: web.Application) -> None:
        aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("oktasync", "webui"),
                             autoescape=True)
        app.middlewares.append(self._guard)
        add_get, add_post = app.router.add_get, app.router.add_post
        add_get("/", self.apps)
        add_get("/login", self.login_page)
        add_post("/login", self.login)
        add_post("/logout", self.logout)
        add_post("/apps/{name}/run", self.run)
        add_get("/apps/{name}/live", self.live)
        add_get("/apps/{name}/progress", self.progress_events)
        add_get("/apps/{name}/history", self.history)
        add_get("/apps/{name}/runs/{run_id}", self.report)
        add_get("/apps/{name}/runs/{run_id}/audit.csv", self.audit)
        add_post("/apps/{name}/held/release", self.release)
        add_post("/apps/{name}/test", self.test)
        add_get("/apps/{name}/runs/{run_id}/plan.csv", self.plan)
        add_get("/apps/{name}/settings", self.settings_page)
        add_post("/apps/{name}/settings", self.save_settings)

    # -- access ------------------------------------------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every console page needs a session; every POST but the sign-in, its token."""
        if not self._console_path(request.path) or request.path == "/login":
            return await handler(request)
        session = self._session(request)
        if session is None:
            if request.method == "GET":
                raise web.HTTPSeeOther("/login")
            raise web.HTTPUnauthorized(text="sign in first")
        if request.method == "POST":
            form = await request.post()
            sent = str(form.get("csrf", "")).encode("utf-8", "replace")
            if not secrets.compare_digest(sent, session.csrf.encode()):
                raise web.HTTPForbidden(text="the form's anti-forgery token is missing or "
                                             "wrong: reload the page and try again")
        request["session"] = session
        return await handler(request)

    @staticmethod
    def _console_path(path: str) -> bool:
        return path in ("/", "/login", "/logout") or path.startswith("/apps/")

    def _session(self, request: web.Request) -> Session | None:
        token = request.cookies.get(COOKIE, "")
        session = self.sessions.get(token)
        if session is None or session.expires < time.time():
            self.sessions.pop(token, None)
            return None
        return session

    async def login_page(self, request: web.Request) -> web.StreamResponse:
        return _page(request, "login.html", {"title": "sign in"})

    async def login(self, request: web.Request) -> web.StreamResponse:
        client = request.remote or "?"
        failures = self.failures[client]
        now = time.monotonic()
        while failures and failures[0] < now - LOGIN_WINDOW_S:
            failures.popleft()
        if len(failures) >= LOGIN_FAILURES:
            return _page(request, "login.html", {"error": "too many failed sign-ins from this "
                         "address: wait five minutes"}, status=429)
        password = str((await request.post()).get("password", ""))
        if not self._password_ok(password):
            failures.append(now)
            await asyncio.sleep(0.5)  # every refusal costs the guesser time
            return _page(request, "login.html", {"error": "wrong password"}, status=401)
        failures.clear()
        token = secrets.token_urlsafe(32)
        self.sessions[token] = Session(secrets.token_urlsafe(32), time.time() + SESSION_S)
        response = web.HTTPSeeOther("/")
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", secure=self.tls,
                            max_age=SESSION_S, path="/")
        raise response

    def _password_ok(self, password: str) -> bool:
        config = self.host.config
        if config.console_password_hash is not None:
            return check_password(password, config.console_password_hash)
        if config.console_password is not None:
            return secrets.compare_digest(password.encode(),
                                          config.console_password.reveal().encode())
        return False

    async def logout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.pop(request.cookies.get(COOKIE, ""), None)
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        raise response

    # -- pages -------------------------------------------------------------------------------

    async def apps(self, request: web.Request) -> web.StreamResponse:
        rows = [{"name": a.name, "okta_url": a.okta_url, "targets": a.targets,
                 "schedule": _schedule_words(a), "changes": a.changes,
                 "last": self.host.last_run(a.name), "healthy": self.host.healthy_now(a),
                 "running": self.host.running(a.name)} for a in self.host.config.apps]
        return _page(request, "apps.html", {"title": "apps", "apps": rows, "actions": ACTIONS,
                                            "flash": request.query.get("flash")})

    async def run(self, request: web.Request) -> web.StreamResponse:
        app = self._app(request)
        kind = str((await request.post()).get("kind", ""))
        if kind not in dict(ACTIONS):
            raise web.HTTPBadRequest(text=f"no such run: {kind!r}")
        if self.host.running(app.name):
            raise web.HTTPSeeOther(f"/?flash=a run of {app.name} is going: wait for it to end")
        previous = self.host.progress.get(app.name)
        self.host.start_run(app, kind)
        after = f"?after={previous.run_id}" if previous is not None else ""
        raise web.HTTPSeeOther(f"/apps/{app.name}/live{after}")

    async def live(self, request: web.Request) -> web.StreamResponse:
        app = self._app(request)
        return _page(request, "live.html", {"title": f"{app.name} live", "app": app.name,
                                            "after": request.query.get("after", "")})

    async def progress_events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: the app's run snapshot twice a second until it ends."""
        app = self._app(request)
        after = request.query.get("after")  # a run asked for: not the one before it
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        while True:
            progress = self.host.progress.get(app.name)
            snapshot = progress.snapshot() if progress is not None and \
                progress.run_id != after else None
            await response.write(b"data: " + orjson.dumps(snapshot) + b"\n\n")
            if snapshot is not None and snapshot["ended"] and not self.host.running(app.name):
                return response
            await asyncio.sleep(0.5)

    async def history(self, request: web.Request) -> web.StreamResponse:
        app = self._app(request)
        runs = [{"run_id": r.get("run_id"), "kind": r.get("kind"),
                 "exit_code": r.get("exit_code"), "outcome": r.get("outcome"),
                 "wall": f"{r.get('wall_time_s', 0):.1f} s",
                 "writes": sum(int(t.get("requests", {}).get("writes", 0))
                               for t in (r.get("targets") or {}).values())}
                for r in reports(self.host.config.state_dir / app.name)]
        held = await asyncio.to_thread(self.host.held_now, app)
        return _page(request, "history.html", {"title": f"{app.name} history", "app": app.name,
                                               "runs": list(reversed(runs)),
                                               "chart": history_chart(runs), "held": held,
                                               "flash": request.query.get("flash")})

    async def release(self, request: web.Request) -> web.StreamResponse:
        """The held deactivations let go: their users synced now, past the guards."""
        app = self._app(request)
        if self.host.running(app.name):
            raise web.HTTPSeeOther(f"/apps/{app.name}/history?flash=a run of {app.name} is "
                                   "going: release when it has ended")
        self.host.release_held_now(app)
        raise web.HTTPSeeOther(f"/apps/{app.name}/history?flash=released: their users are "
                               "being synced")

    async def report(self, request: web.Request) -> web.StreamResponse:
        app, run_id = self._app(request), request.match_info["run_id"]
        found = find_report(self.host.config.state_dir, [app.name], run_id)
        if found is None:
            raise web.HTTPNotFound(text=f"no run {run_id} of {app.name}")
        audit = audit_path(self.host.config.state_dir / app.name, run_id).exists()
        plan = _plan_path(self.host.config.state_dir, app.name, run_id).exists()
        return _page(request, "report.html", {"title": run_id, "app": app.name,
                                              "run_id": run_id, "report": found,
                                              "audit": audit, "plan": plan})

    async def plan(self, request: web.Request) -> web.StreamResponse:
        """A preview's plan: one row per write it would make."""
        app, run_id = self._app(request), request.match_info["run_id"]
        path = _plan_path(self.host.config.state_dir, app.name, run_id)
        if not path.exists():
            raise web.HTTPNotFound(text=f"no plan of run {run_id}")
        return web.FileResponse(path, headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{path.name}"'})

    async def audit(self, request: web.Request) -> web.StreamResponse:
        app, run_id = self._app(request), request.match_info["run_id"]
        path = audit_path(self.host.config.state_dir / app.name, run_id)
        if find_report(self.host.config.state_dir, [app.name], run_id) is None or \
                not path.exists():
            raise web.HTTPNotFound(text=f"no audit of run {run_id}")
        return web.FileResponse(path, headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{path.name}"'})

    async def test(self, request: web.Request) -> web.StreamResponse:
        """Each server of the app asked what a sync needs of it: the credentials, the reads,
        the right to manage users, and the rate-limit headroom its answers announce."""
        app = self._app(request)
        only = str((await request.post()).get("server", ""))  # one server, or all of them
        checks = [await _okta_checks(app)] if only in ("", "okta") else []
        for name in app.targets:
            if only in ("", name):
                checks.append(await _target_checks(name, self.host.config.targets[name]))
        return _page(request, "test.html", {"title": f"{app.name} test", "app": app.name,
                                            "servers": checks})

    # -- settings ----------------------------------------------------------------------------

    async def settings_page(self, request: web.Request) -> web.StreamResponse:
        app = self._app(request)
        table = _app_table(self.host.config.path, app.name)
        return _page(request, "settings.html", {"title": f"{app.name} settings",
                                                "app": app.name,
                                                "fields": _fields(table, {})})

    async def save_settings(self, request: web.Request) -> web.StreamResponse:
        """The form into the file: validated as the file is (every problem beside its field),
        written atomically with its comments kept (tomlkit), then reloaded as SIGHUP does."""
        app = self._app(request)
        form = await request.post()
        path = self.host.config.path
        document = tomlkit.parse(path.read_text(encoding="utf-8"))
        table = next(t for t in document["app"] if t.get("name") == app.name)
        typed = {f.key: [problem] for f in FORM_FIELDS
                 if (problem := _apply(table, f, form, self.host.config.state_dir, app.name))}
        if typed:
            return _page(request, "settings.html", {
                "title": f"{app.name} settings", "app": app.name,
                "fields": _fields(table, typed)}, status=400)
        candidate = path.with_name(f".{path.name}.console-{os.getpid()}")
        candidate.write_text(tomlkit.dumps(document), encoding="utf-8")
        os.chmod(candidate, path.stat().st_mode & 0o777)
        try:
            load_config(candidate)
        except ConfigError as exc:
            candidate.unlink()
            errors = _errors_by_field(exc.problems)
            return _page(request, "settings.html", {
                "title": f"{app.name} settings", "app": app.name,
                "fields": _fields(table, errors), "other_errors": errors.get("", [])},
                status=400)
        os.replace(candidate, path)
        problem = self.host.reload_now()
        flash = f"saved; {problem}" if problem else "saved and reloaded"
        raise web.HTTPSeeOther(f"/?flash={flash}")

    def _app(self, request: web.Request) -> AppConfig:
        app = self.host.app(request.match_info["name"])
        if app is None:
            raise web.HTTPNotFound(text="no such app")
        return app


@dataclass(frozen=True)
class FormField:
    key: str
    kind: str  # "text", "bool", "secret"
    help: str


SEED_FIELDS = (
    FormField("okta_url", "text", "The Okta org URL."),
    FormField("okta_token", "secret", "The Okta API token: typed here, it is stored in a "
              "0600 file in the state directory and referenced as file:."),
    FormField("username_regex", "text", "A Java regex on the Okta login (empty: the login)."),
    FormField("username_replacement", "text", 'Its replacement, "$1" by default.'),
    FormField("schedule", "text", 'The scheduler interval, e.g. "1h", or "cron:..."'),
    FormField("import_users", "bool", "Import: create missing users."),
    FormField("update_users", "bool", "Update: keep names and e-mails in line."),
    FormField("sync_user_status", "bool", "Enable/Disable: follow Okta's user status."),
)


def _every_other_field() -> tuple[FormField, ...]:
    """The app's other settings, each by its kind of value, with the schema's description:
    a string as text, true/false as a box, a secret never shown back, the rest (numbers,
    limits, lists, tables) as their TOML value."""
    seed = {f.key for f in SEED_FIELDS} | {"name"}
    fields = []
    for key, info in AppSettings.model_fields.items():
        if key in seed:
            continue
        annotation = str(info.annotation)
        kind = ("secret" if "SecretSetting" in annotation else
                "bool" if isinstance(info.default, bool) else
                "text" if annotation in ("<class 'str'>", "str | None", "typing.Optional[str]")
                else "toml")
        fields.append(FormField(key, kind, " ".join((info.description or "").split())))
    return tuple(fields)


FORM_FIELDS = SEED_FIELDS + _every_other_field()
FIELD_KEYS = frozenset(f.key for f in FORM_FIELDS)


def _fields(table: Any, errors: dict[str, list[str]]) -> list[dict[str, Any]]:
    out = []
    for f in FORM_FIELDS:
        value = table.get(f.key)
        shown: Any = None if f.kind == "secret" else value
        if f.kind == "bool" and value is None:
            shown = AppSettings.model_fields[f.key].default
        elif f.kind == "toml" and value is not None:
            shown = toml_value(value.unwrap() if hasattr(value, "unwrap") else value)
        source = ("written in the file" if isinstance(value, str)
                  and not value.startswith(("${", "file:")) else str(value or "not set"))
        out.append({"key": f.key, "kind": f.kind, "help": f.help, "value": shown,
                    "source": source, "error": "; ".join(errors.get(f.key, []))})
    return out


def _apply(table: Any, f: FormField, form: Any, state_dir: Path, app: str) -> str | None:
    """The form's value into the file's table; why not, for a value that is not TOML."""
    raw = form.get(f.key)
    if f.kind == "bool":
        checked = raw == "true"
        if f.key in table or checked != AppSettings.model_fields[f.key].default:
            table[f.key] = checked  # a default left alone stays unwritten
    elif f.kind == "secret":
        if raw:  # empty: unchanged
            folder = state_dir / "secrets"
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            secret_file = folder / f"{app}.{f.key}"
            descriptor = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                handle.write(str(raw))
            table[f.key] = f"file:{secret_file}"
    elif raw is None or str(raw).strip() == "":
        if f.key in table:
            del table[f.key]
    elif f.kind == "toml":
        try:
            table[f.key] = tomlkit.parse(f"value = {raw}")["value"]
        except tomlkit.exceptions.ParseError:
            return f"not a TOML value: write it as the file would, e.g. {toml_value([1])}"
    else:
        table[f.key] = str(raw)
    return None


def _errors_by_field(problems: list[str]) -> dict[str, list[str]]:
    """``app[0] (corp).schedule: not a duration`` → {"schedule": ["not a duration"]}."""
    found: dict[str, list[str]] = defaultdict(list)
    for problem in problems:
        where, _, message = problem.partition(": ")
        key = where.rpartition(".")[2]
        found[key if key in FIELD_KEYS else ""].append(
            message if key in FIELD_KEYS else problem)
    return found


@dataclass
class Check:
    what: str
    ok: bool
    detail: str


async def _probe(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                 what: str, meaning: str) -> tuple[Check, Any]:
    """One GET, judged: its status in words, and its answer's headers for the headroom."""
    try:
        async with session.get(url, headers=headers, allow_redirects=False) as answer:
            await answer.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Check(what, False, f"no answer: {cause_of(exc, 10).words}"), None
    if answer.status == 200:
        return Check(what, True, meaning), answer.headers
    if answer.status in (401, 403):
        return Check(what, False, f"HTTP {answer.status}: the credentials are refused, or "
                                  "lack the permission"), answer.headers
    return Check(what, False, f"HTTP {answer.status}"), answer.headers


def _headroom(headers: Any) -> Check:
    if headers is None:
        return Check("rate-limit headroom", False, "no answer to read it from")
    for limit, left in (("X-Rate-Limit-Limit", "X-Rate-Limit-Remaining"),
                        ("X-RateLimit-Limit", "X-RateLimit-Remaining")):
        if limit in headers and left in headers:
            return Check("rate-limit headroom", int(headers[left]) > 0,
                         f"{headers[left]} of {headers[limit]} left in this window")
    return Check("rate-limit headroom", True, "the server announces no rate limit")


async def _okta_checks(app: AppConfig) -> dict[str, Any]:
    name = f"Okta ({app.name})"
    session = make_session(connections=2, timeout_s=10,
                           route=route_of(name, app.okta_url, app.okta_network))
    try:
        headers = {"Accept": "application/json"}
        if app.okta_token is not None:
            headers["Authorization"] = f"SSWS {app.okta_token.reveal()}"
        else:
            return {"server": name, "key": "okta", "checks": [Check(
                "service app", True, "checked by every run before it reads (okta_auth = "
                "\"oauth\"): a refusal stops it with what to fix")]}
        users, seen = await _probe(session, app.okta_url + "/api/v1/users?limit=1", headers,
                                   "credentials, read users", "users can be read")
        groups, _ = await _probe(session, app.okta_url + "/api/v1/groups?limit=1", headers,
                                 "read groups", "groups can be read")
        return {"server": name, "key": "okta", "checks": [users, groups, _headroom(seen)]}
    finally:
        await session.close()


async def _target_checks(name: str, target: Any) -> dict[str, Any]:
    session = make_session(connections=2, timeout_s=10,
                           route=route_of(name, target.url, target.network))
    base = target.url.rstrip("/")
    headers = target_headers(target)
    if target.kind == "jira-dc":
        probes = [(f"{base}/rest/api/2/myself", "credentials", "signed in"),
                  (f"{base}/rest/api/2/user/list?maxResults=1", "manage users",
                   "an administrator's user listing answered: this account can manage users")]
    elif target.kind == "confluence-dc":
        probes = [(f"{base}/rest/api/user/current", "credentials", "signed in"),
                  (f"{base}/rest/api/admin/users/list/active?limit=1", "manage users",
                   "an administrator's user listing answered: this account can manage users")]
    else:
        probes = [(f"{base}/Users?count=1", "credentials, read users", "users can be read"),
                  (f"{base}/Groups?count=1", "read groups", "groups can be read")]
    try:
        checks, seen = [], None
        for url, what, meaning in probes:
            check, answer_headers = await _probe(session, url, headers, what, meaning)
            checks.append(check)
            seen = seen or answer_headers
        return {"server": name, "key": name, "checks": [*checks, _headroom(seen)]}
    finally:
        await session.close()


def _plan_path(state_dir: Path, app: str, run_id: str) -> Path:
    if not all(c.isalnum() or c in "._-" for c in run_id):
        raise web.HTTPNotFound(text="no such run")
    return state_dir / app / f"plan-{run_id}.csv"


def history_chart(runs: list[dict[str, Any]], width: int = 640, height: int = 120) -> str:
    """The runs' durations (bars) and writes (dots) as an inline SVG: no JavaScript, no
    library; the newest run on the right."""
    shown = runs[-40:]
    if not shown:
        return ""
    walls = [float(str(r["wall"]).split()[0]) for r in shown]
    writes = [int(r["writes"]) for r in shown]
    top_wall, top_writes = max(walls) or 1.0, max(writes) or 1
    step = width / len(shown)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20}" '
             f'role="img" aria-label="duration and writes per run" id="history-chart">']
    for i, (wall, wrote) in enumerate(zip(walls, writes, strict=True)):
        bar = wall / top_wall * height
        parts.append(f'<rect x="{i * step + 1:.1f}" y="{height - bar:.1f}" '
                     f'width="{max(1.0, step - 2):.1f}" height="{bar:.1f}" fill="#9db8e8">'
                     f"<title>{wall:.1f} s, {wrote} writes</title></rect>")
        dot = wrote / top_writes * height
        parts.append(f'<circle cx="{i * step + step / 2:.1f}" cy="{height - dot:.1f}" r="3" '
                     'fill="#1d2330"/>')
    parts.append(f'<text x="0" y="{height + 15}" font-size="11">bars: duration (longest '
                 f"{top_wall:.1f} s); dots: writes (most {top_writes})</text></svg>")
    return "".join(parts)


def _app_table(path: Path, name: str) -> Any:
    document = tomlkit.parse(path.read_text(encoding="utf-8"))
    return next(t for t in document["app"] if t.get("name") == name)


def _schedule_words(app: AppConfig) -> str:
    schedule = app.schedule
    return f"cron {schedule.cron} ({schedule.zone})" if schedule.cron else \
        f"every {int(schedule.every_s or 0)} s"


def _page(request: web.Request, template: str, context: dict[str, Any],
          status: int = 200) -> web.Response:
    context = {"session": request.get("session"), **context}
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'")
    response.headers["X-Frame-Options"] = "DENY"
    return response


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
