"""A study's SQLite database: images, testers, their trials, and every answer ever given.

Answers are append-only: answering a trial again adds a row (the latest one counts), undo marks rows
as undone instead of deleting them, so the log keeps everything a tester did. Every write is its own
committed transaction (WAL mode), so a crash or a closed browser loses at most the click in flight and
several testers can answer at once. Only the standard library here: the web app and the CLI share it.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from stedq.study.trials import Trial, choice_of

DB_NAME = "study.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,               -- index in the study, 0-based
    name TEXT NOT NULL UNIQUE,            -- the image_id of the tester records
    source TEXT NOT NULL,                 -- the labelled file it came from
    png TEXT NOT NULL,                    -- the rendered image, relative to the study folder
    target REAL NOT NULL,                 -- the expert's label
    truth REAL                            -- noise-free quality where known (synthetic data), else NULL
);
CREATE TABLE IF NOT EXISTS testers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token TEXT NOT NULL UNIQUE,
    seed INTEGER NOT NULL,                -- draws this tester's trial order, sides and random baseline
    simulated INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    tester_id INTEGER NOT NULL REFERENCES testers(id),
    position INTEGER NOT NULL,
    image_id INTEGER NOT NULL REFERENCES images(id),
    system TEXT NOT NULL,
    prediction REAL NOT NULL,
    a_is TEXT NOT NULL CHECK (a_is IN ('target', 'prediction')),
    UNIQUE (tester_id, position)
);
CREATE TABLE IF NOT EXISTS answers (
    id INTEGER PRIMARY KEY,
    trial_id INTEGER NOT NULL REFERENCES trials(id),
    answer TEXT NOT NULL CHECK (answer IN ('A', 'B', 'equal', 'discard')),
    choice TEXT NOT NULL CHECK (choice IN ('target', 'prediction', 'equal', 'discard')),
    answered_at TEXT NOT NULL,
    undone_at TEXT,
    client TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS answers_by_trial ON answers (trial_id, undone_at);
"""

# The answer that counts for a trial: its latest one not undone.
ACTIVE_ANSWER = "(SELECT max(id) FROM answers WHERE trial_id = t.id AND undone_at IS NULL)"


class StudyError(ValueError):
    """A study folder or request that cannot be used; the message says what and where."""


class TrialNotFound(StudyError):
    pass


@dataclass
class Progress:
    answered: int
    total: int

    @property
    def done(self) -> bool:
        return self.answered >= self.total


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def db_path(study_dir: Path) -> Path:
    return Path(study_dir) / DB_NAME


def connect(study_dir: Path, create: bool = False) -> sqlite3.Connection:
    path = db_path(study_dir)
    if not create and not path.is_file():
        raise StudyError(f"{study_dir}: not a study folder (no {DB_NAME}; make one with `stedq study create`)")
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")   # an answer acknowledged to the browser is on disk
    conn.execute("PRAGMA foreign_keys=ON")
    if create:
        conn.executescript(SCHEMA)
    return conn


@contextmanager
def write(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One committed write transaction; IMMEDIATE takes the write lock up front (no upgrade deadlocks)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# --- study setup -------------------------------------------------------------------------------------

def set_meta(conn: sqlite3.Connection, values: dict) -> None:
    with write(conn):
        conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         [(key, json.dumps(value)) for key, value in values.items()])


def get_meta(conn: sqlite3.Connection) -> dict:
    return {row["key"]: json.loads(row["value"]) for row in conn.execute("SELECT key, value FROM meta")}


def add_images(conn: sqlite3.Connection, rows: Iterable[tuple]) -> None:
    """rows: (name, source file, png path relative to the study, target[, truth])."""
    with write(conn):
        conn.executemany("INSERT INTO images (id, name, source, png, target, truth) VALUES (?, ?, ?, ?, ?, ?)",
                         [(index, *row, None)[:6] for index, row in enumerate(rows)])


def images(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute("SELECT * FROM images ORDER BY id").fetchall()


def add_tester(conn: sqlite3.Connection, name: str, seed: int, trials: list[Trial],
               simulated: bool = False) -> str:
    """Store a tester and their trials; returns their secret token (the key of their link)."""
    token = secrets.token_urlsafe(16)
    with write(conn):
        if conn.execute("SELECT 1 FROM testers WHERE name = ?", (name,)).fetchone():
            raise StudyError(f"a tester named {name!r} already exists in this study")
        cursor = conn.execute(
            "INSERT INTO testers (name, token, seed, simulated, created_at) VALUES (?, ?, ?, ?, ?)",
            (name, token, seed, int(simulated), now()))
        conn.executemany(
            "INSERT INTO trials (tester_id, position, image_id, system, prediction, a_is) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(cursor.lastrowid, t.position, t.image, t.system, t.prediction, t.a_is) for t in trials])
    return token


def testers(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT s.*, (SELECT count(*) FROM trials t WHERE t.tester_id = s.id) AS total, "
        f"(SELECT count(*) FROM trials t WHERE t.tester_id = s.id AND {ACTIVE_ANSWER} IS NOT NULL) "
        "AS answered FROM testers s ORDER BY s.id").fetchall()


def tester_by_token(conn: sqlite3.Connection, token: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM testers WHERE token = ?", (token,)).fetchone()


# --- judging -----------------------------------------------------------------------------------------

TRIAL_COLUMNS = ("t.id, t.position, t.system, t.prediction, t.a_is, i.id AS image_id, i.name AS image_name, "
                 "i.png, i.target, i.truth")


def progress(conn: sqlite3.Connection, tester_id: int) -> Progress:
    row = conn.execute(
        f"SELECT count(*) AS total, count({ACTIVE_ANSWER}) AS answered FROM trials t WHERE t.tester_id = ?",
        (tester_id,)).fetchone()
    return Progress(answered=row["answered"], total=row["total"])


def current_trial(conn: sqlite3.Connection, tester_id: int) -> sqlite3.Row | None:
    """The first trial without an answer, in the tester's order (so a tester resumes where they left)."""
    return conn.execute(
        f"SELECT {TRIAL_COLUMNS} FROM trials t JOIN images i ON i.id = t.image_id "
        f"WHERE t.tester_id = ? AND {ACTIVE_ANSWER} IS NULL ORDER BY t.position LIMIT 1",
        (tester_id,)).fetchone()


def trial_at(conn: sqlite3.Connection, tester_id: int, position: int) -> sqlite3.Row:
    if not 0 <= position < 2**31:            # beyond SQLite's integers: no such trial either
        row = None
    else:
        row = conn.execute(
            f"SELECT {TRIAL_COLUMNS} FROM trials t JOIN images i ON i.id = t.image_id "
            "WHERE t.tester_id = ? AND t.position = ?", (tester_id, position)).fetchone()
    if row is None:
        total = progress(conn, tester_id).total
        raise TrialNotFound(f"there is no trial {position} (this tester has trials 0 to {total - 1})")
    return row


def record_answer(conn: sqlite3.Connection, tester_id: int, position: int, answer: str,
                  client: str = "") -> str:
    """Store one answer (a trial answered again: the later answer counts, both stay in the log);
    returns what it means ("target", "prediction", "equal" or "discard")."""
    with write(conn):
        trial = trial_at(conn, tester_id, position)
        choice = choice_of(answer, trial["a_is"])
        conn.execute("INSERT INTO answers (trial_id, answer, choice, answered_at, client) VALUES (?, ?, ?, ?, ?)",
                     (trial["id"], answer, choice, now(), client))
    return choice


def undo_last(conn: sqlite3.Connection, tester_id: int) -> int | None:
    """Take back the tester's last answered trial (all its standing answers); returns its position."""
    with write(conn):
        row = conn.execute(
            "SELECT t.id, t.position FROM answers a JOIN trials t ON t.id = a.trial_id "
            "WHERE t.tester_id = ? AND a.undone_at IS NULL ORDER BY a.id DESC LIMIT 1",
            (tester_id,)).fetchone()
        if row is None:
            return None
        conn.execute("UPDATE answers SET undone_at = ? WHERE trial_id = ? AND undone_at IS NULL",
                     (now(), row["id"]))
    return row["position"]


def standing_answers(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Every answered trial with the answer that counts, for the tester records."""
    return conn.execute(
        "SELECT s.name AS tester, s.simulated, i.name AS image_id, t.system, i.target, t.prediction, "
        "t.position, a.choice, a.answer, a.answered_at FROM trials t "
        "JOIN testers s ON s.id = t.tester_id JOIN images i ON i.id = t.image_id "
        f"JOIN answers a ON a.id = {ACTIVE_ANSWER} ORDER BY s.id, t.position").fetchall()


def answer_log(conn: sqlite3.Connection, tester_id: int) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT t.position, a.answer, a.choice, a.answered_at, a.undone_at FROM answers a "
        "JOIN trials t ON t.id = a.trial_id WHERE t.tester_id = ? ORDER BY a.id", (tester_id,)).fetchall()


def full_log(conn: sqlite3.Connection) -> list[sqlite3.Row]:
    """Every answer ever given, undone and superseded ones included, in the order they came."""
    return conn.execute(
        "SELECT s.name AS tester, t.position, i.name AS image_id, t.system, i.target, t.prediction, t.a_is, "
        "a.answer, a.choice, a.answered_at, a.undone_at, a.client FROM answers a "
        "JOIN trials t ON t.id = a.trial_id JOIN testers s ON s.id = t.tester_id "
        "JOIN images i ON i.id = t.image_id ORDER BY a.id").fetchall()
