"""The judging web app (Starlette + Jinja2, no front-end build): one page per tester, reached through
their secret link /t/<token>.

    GET  /                      what this is (no tester list: links are handed out by the organizer)
    GET  /t/<token>             the next unanswered trial (resume), or "all done"
    GET  /t/<token>/image/<n>   trial n's image (PNG)
    POST /t/<token>/answer      form: position, answer (A | B | equal | discard) -> 303 back to the page
    POST /t/<token>/undo        take back the last answer -> 303 back to the page
    GET  /healthz               "ok" when the study database answers

Forms post and redirect (no client-side state): a reload never resends an answer and the page always
shows what the database says. An unknown token gets 403, a trial that does not exist 404, a bad answer
400, each with a page saying what was wrong. Every request opens its own SQLite connection.
"""

from __future__ import annotations

import logging
import re
import socket
import sqlite3
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from stedq.study import store
from stedq.study.trials import ANSWERS

log = logging.getLogger(__name__)

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
# The token is in the URL: keep it out of Referer headers, caches and other sites' frames.
POSITION = re.compile(r"[0-9]{1,9}")   # ASCII digits only, and small enough for SQLite
HEADERS = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Frame-Options": "DENY",
           "X-Content-Type-Options": "nosniff"}


def _error(request: Request, status: int, title: str, message: str) -> Response:
    return TEMPLATES.TemplateResponse(request, "error.html", {"title": title, "message": message},
                                      status_code=status, headers=HEADERS)


def create_app(study_dir: Path) -> Starlette:
    study_dir = Path(study_dir).resolve()
    store.connect(study_dir).close()   # fail at start, not on the first tester, when the folder is wrong

    def db() -> sqlite3.Connection:
        return store.connect(study_dir)

    def with_tester(handler):
        """Look the token up; unknown tokens get 403 and never reach the handler."""
        def endpoint(request: Request) -> Response:
            conn = db()
            try:
                tester = store.tester_by_token(conn, request.path_params["token"])
                if tester is None:
                    return _error(request, 403, "Unknown link",
                                  "This study link is not valid. Check it with the study organizer.")
                return handler(request, conn, tester)
            finally:
                conn.close()
        return endpoint

    def index(request: Request) -> Response:
        return TEMPLATES.TemplateResponse(request, "index.html", {}, headers=HEADERS)

    def healthz(request: Request) -> Response:
        conn = db()
        try:
            conn.execute("SELECT count(*) FROM testers").fetchone()
        finally:
            conn.close()
        return PlainTextResponse("ok")

    def judge(request: Request, conn: sqlite3.Connection, tester: sqlite3.Row) -> Response:
        progress = store.progress(conn, tester["id"])
        trial = store.current_trial(conn, tester["id"])
        if trial is None:
            return TEMPLATES.TemplateResponse(request, "done.html", {"tester": tester, "progress": progress},
                                              headers=HEADERS)
        target, prediction = trial["target"], trial["prediction"]
        a, b = (target, prediction) if trial["a_is"] == "target" else (prediction, target)
        return TEMPLATES.TemplateResponse(request, "judge.html", {
            "tester": tester, "trial": trial, "progress": progress, "a": a, "b": b,
            "percent": 100.0 * progress.answered / max(progress.total, 1)}, headers=HEADERS)

    def image(request: Request, conn: sqlite3.Connection, tester: sqlite3.Row) -> Response:
        try:
            trial = store.trial_at(conn, tester["id"], request.path_params["position"])
        except store.TrialNotFound as exc:
            return _error(request, 404, "No such trial", str(exc))
        path = study_dir / trial["png"]
        if not path.is_file():
            log.error("study %s: image file %s of trial %d is missing", study_dir, path, trial["position"])
            return _error(request, 404, "Image missing",
                          f"The image file {trial['png']} of this study is missing on the server. "
                          "Tell the study organizer; your answers so far are saved.")
        return FileResponse(path, media_type="image/png", headers={**HEADERS, "Cache-Control": "private, max-age=3600"})

    async def read_form(request: Request) -> dict[str, str]:
        form = await request.form()
        return {key: str(value) for key, value in form.items()}

    async def answer(request: Request) -> Response:
        form = await read_form(request)
        handler = with_tester(lambda req, conn, tester: _answer(req, conn, tester, form))
        return await run_in_threadpool(handler, request)   # SQLite may wait for a lock: not on the loop

    def _answer(request: Request, conn: sqlite3.Connection, tester: sqlite3.Row, form: dict) -> Response:
        value, position = form.get("answer", ""), form.get("position", "")
        if value not in ANSWERS:
            return _error(request, 400, "Bad answer",
                          f"answer must be one of {', '.join(ANSWERS)}, got {value!r}")
        if not POSITION.fullmatch(position):
            return _error(request, 400, "Bad answer", f"position must be a trial number, got {position!r}")
        try:
            choice = store.record_answer(conn, tester["id"], int(position), value,
                                         client=request.headers.get("user-agent", "")[:200])
        except store.TrialNotFound as exc:
            return _error(request, 404, "No such trial", str(exc))
        log.info("tester %s answered trial %s: %s (%s)", tester["name"], position, value, choice)
        return RedirectResponse(f"/t/{tester['token']}", status_code=303, headers=HEADERS)

    def undo(request: Request, conn: sqlite3.Connection, tester: sqlite3.Row) -> Response:
        position = store.undo_last(conn, tester["id"])
        log.info("tester %s undid trial %s", tester["name"], position)
        return RedirectResponse(f"/t/{tester['token']}", status_code=303, headers=HEADERS)

    routes = [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/t/{token}", with_tester(judge)),
        Route("/t/{token}/image/{position:int}", with_tester(image)),
        Route("/t/{token}/answer", answer, methods=["POST"]),
        Route("/t/{token}/undo", with_tester(undo), methods=["POST"]),
    ]
    def server_error(request: Request, exc: Exception) -> Response:
        log.exception("study %s: %s %s failed", study_dir, request.method, request.url.path, exc_info=exc)
        return _error(request, 500, "Something went wrong",
                      "The server could not handle this request (the organizer can see why in its log). "
                      "Your earlier answers are saved: reload the page to go on.")

    return Starlette(routes=routes, exception_handlers={Exception: server_error})


def tester_links(study_dir: Path, base_url: str) -> list[tuple[str, str, str]]:
    """(name, link, progress) of every person (not simulated) tester, for the organizer."""
    conn = store.connect(study_dir)
    try:
        rows = store.testers(conn)
    finally:
        conn.close()
    return [(r["name"], f"{base_url.rstrip('/')}/t/{r['token']}", f"{r['answered']}/{r['total']}")
            for r in rows if not r["simulated"]]


def default_base_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):      # every interface: the testers need this machine's name
        host = socket.getfqdn()
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def listen(host: str, port: int) -> socket.socket:
    """The bound socket, so that the printed links carry the real port (also for --port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise store.StudyError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(study_dir: Path, host: str = "127.0.0.1", port: int = 8080, base_url: str | None = None) -> None:
    import uvicorn

    app = create_app(study_dir)
    sock = listen(host, port)
    port = sock.getsockname()[1]
    links = tester_links(study_dir, base_url or default_base_url(host, port))
    print(f"study {study_dir}: serving on {host}:{port}; {len(links)} tester link(s) "
          "(give each tester only their own):")
    for name, link, done in links:
        print(f"  {name:<16} {done:>9}  {link}")
    print("stop with Ctrl+C; every answer is already saved", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[sock])
