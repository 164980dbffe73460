"""The client matrix's scenario for psycopg 3 (tests/tests/client_matrix.rs runs it directly
against PostgreSQL and through pgpivot, and diffs the transcripts).

Connection from MATRIX_HOST, MATRIX_PORT, MATRIX_USER, MATRIX_PASSWORD, MATRIX_DB. Every step
opens its own connections, so one step's failure cannot leak into the next; a step that raises
prints one `<step>.failed` line and the scenario goes on. Values that differ from run to run (pids,
timings) are printed as relations or booleans only. Every connection uses prepare_threshold=0:
each statement is prepared at the protocol level on first use.
"""

import hashlib
import os
import signal
import threading
import time

import psycopg
from psycopg import sql

NAME = "psycopg"
STEP_TIMEOUT_S = 20
ENV = os.environ
BASE = dict(
    host=ENV["MATRIX_HOST"],
    port=ENV["MATRIX_PORT"],
    user=ENV["MATRIX_USER"],
    password=ENV["MATRIX_PASSWORD"],
    dbname=ENV["MATRIX_DB"],
    connect_timeout=10,
    prepare_threshold=0,
    autocommit=True,
)
STARTUP = dict(application_name=f"matrix-{NAME}", options="-c statement_timeout=12345")
T = f"m_{NAME}"


def out(key, *values):
    print(f"{key}: " + " ".join(str(v) for v in values), flush=True)


def err(e):
    """A server error as SQLSTATE and message; anything else as its class."""
    diag = getattr(e, "diag", None)
    if getattr(e, "sqlstate", None):
        return f"{e.sqlstate} {diag.message_primary}"
    return f"{type(e).__name__}"


def connect(**extra):
    return psycopg.connect(**{**BASE, **STARTUP, **extra})


def one(conn, query, params=None):
    return conn.execute(query, params).fetchone()[0]


def step_startup():
    with connect() as conn:
        for p in ["application_name", "statement_timeout", "client_encoding", "DateStyle"]:
            out(f"startup.show.{p}", one(conn, f"SHOW {p}"))
        for p in [
            "application_name", "client_encoding", "DateStyle", "integer_datetimes",
            "IntervalStyle", "is_superuser", "server_encoding", "server_version",
            "session_authorization", "standard_conforming_strings", "TimeZone",
        ]:
            out(f"startup.reported.{p}", conn.info.parameter_status(p))
        out("startup.key_pid_is_backend_pid", conn.info.backend_pid == one(conn, "SELECT pg_backend_pid()"))
        conn.execute("SET statement_timeout = 999")
        out("startup.after_set", one(conn, "SHOW statement_timeout"))
        conn.execute("DISCARD ALL")
        out("startup.after_discard.statement_timeout", one(conn, "SHOW statement_timeout"))
        out("startup.after_discard.application_name", one(conn, "SHOW application_name"))
    # Other startup parameters, then the first ones again: each login sees only its own.
    with connect(application_name=f"matrix-{NAME}-2", options="") as conn:
        out("startup.other.statement_timeout", one(conn, "SHOW statement_timeout"))
        out("startup.other.application_name", one(conn, "SHOW application_name"))
    with connect() as conn:
        out("startup.again.statement_timeout", one(conn, "SHOW statement_timeout"))
        out("startup.again.application_name", one(conn, "SHOW application_name"))


def step_encoding():
    with connect() as conn:
        conn.execute("SET client_encoding TO 'latin1'")
        out("encoding.reported", conn.info.parameter_status("client_encoding"), conn.info.encoding)
        out("encoding.show", one(conn, "SHOW client_encoding"))
        out("encoding.text", one(conn, "SELECT 'é' || chr(255)"))
        out("encoding.param", one(conn, "SELECT octet_length(convert_to(%s::text, 'UTF8'))", ["ñé"]))
        conn.execute("RESET client_encoding")
        out("encoding.reset", conn.info.parameter_status("client_encoding"), one(conn, "SHOW client_encoding"))


def step_tx():
    with connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {T}_tx")
        conn.execute(f"CREATE TABLE {T}_tx (id int PRIMARY KEY, v text)")
        with conn.transaction():
            cur = conn.execute(f"INSERT INTO {T}_tx VALUES (1, 'a'), (2, 'b')")
            out("tx.insert", cur.statusmessage, cur.rowcount)
        try:
            with conn.transaction():
                conn.execute(f"INSERT INTO {T}_tx VALUES (10, 'rolled back')")
                raise psycopg.Rollback()
        finally:
            out("tx.rollback_status", conn.info.transaction_status.name)
        with conn.transaction():
            conn.execute(f"INSERT INTO {T}_tx VALUES (3, 'c')")
            try:
                with conn.transaction():  # a savepoint
                    conn.execute(f"INSERT INTO {T}_tx VALUES (4, 'd')")
                    conn.execute(f"INSERT INTO {T}_tx VALUES (1, 'dup')")
            except psycopg.Error as e:
                out("tx.savepoint_error", err(e), e.diag.message_detail)
            conn.execute(f"INSERT INTO {T}_tx VALUES (5, 'e')")
        out("tx.ids", [r[0] for r in conn.execute(f"SELECT id FROM {T}_tx ORDER BY id")])
        conn.autocommit = False
        conn.execute(f"UPDATE {T}_tx SET v = 'z'")
        try:
            conn.execute("SELECT 1 / 0")
        except psycopg.Error as e:
            out("tx.abort_error", err(e))
        try:
            conn.execute("SELECT 1")
        except psycopg.Error as e:
            out("tx.aborted_error", err(e))
        conn.rollback()
        out("tx.after_rollback", one(conn, f"SELECT string_agg(v, ',' ORDER BY id) FROM {T}_tx"))
        conn.commit()


def step_pipeline():
    with connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {T}_pipe")
        conn.execute(f"CREATE TABLE {T}_pipe (id int PRIMARY KEY)")
        results = []
        try:
            with conn.pipeline() as p:
                curs = [conn.cursor() for _ in range(4)]
                curs[0].execute(f"INSERT INTO {T}_pipe VALUES (%s)", [1])
                curs[1].execute("SELECT %s::int * 2", [21])
                p.sync()
                curs[2].execute(f"INSERT INTO {T}_pipe VALUES (%s)", [1])
                curs[3].execute("SELECT %s::int * 3", [7])
                p.sync()
        except psycopg.Error as e:
            results.append(err(e))
        out("pipeline.error", results)
        out("pipeline.first", curs[1].fetchone())
        out("pipeline.status", [c.statusmessage for c in curs])
        with conn.pipeline():
            rows = [conn.execute("SELECT %s::int", [i]) for i in range(50)]
        out("pipeline.after", sum(c.fetchone()[0] for c in rows))
        out("pipeline.rows", [r[0] for r in conn.execute(f"SELECT id FROM {T}_pipe")])


def wait_active(marker):
    with connect() as watcher:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            n = one(watcher, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
                    [f"%{marker}%"])
            if n > 0:
                return True
            time.sleep(0.05)
    return False


def step_cancel():
    with connect() as conn:
        seen = []
        t = threading.Thread(target=lambda: (seen.append(wait_active("cancel-me")), conn.cancel_safe()))
        t.start()
        start = time.monotonic()
        try:
            conn.execute("SELECT pg_sleep(30) /* cancel-me */")
            out("cancel.result", "not cancelled")
        except psycopg.Error as e:
            out("cancel.result", err(e))
        t.join()
        out("cancel.seen_running", seen)
        out("cancel.fast", time.monotonic() - start < 10)
        out("cancel.after", one(conn, "SELECT 1"))


def step_large():
    with connect() as conn:
        cur = conn.execute("SELECT g, repeat('x', g % 100) FROM generate_series(1, 100000) g")
        rows = cur.fetchall()
        out("large.rows", len(rows), sum(r[0] for r in rows), sum(len(r[1]) for r in rows))
        big = one(conn, "SELECT repeat('y', 300000) || 'end'")
        out("large.value", len(big), big[-3:])
        param = "".join(chr(0x41 + i % 26) for i in range(400000)) + "é"
        server_md5 = one(conn, "SELECT md5(%s::text)", [param])
        out("large.param_md5_match", server_md5 == hashlib.md5(param.encode()).hexdigest())
        out("large.after", one(conn, "SELECT 'ok'"))


def step_notify():
    with connect() as conn, connect() as other:
        conn.execute("LISTEN matrix_chan")
        conn.execute("NOTIFY matrix_chan, 'self-1'")
        other.execute("SELECT pg_notify('matrix_chan', 'other-1')")
        own = one(conn, "SELECT pg_backend_pid()")
        other_pid = one(other, "SELECT pg_backend_pid()")
        got = list(conn.notifies(timeout=5, stop_after=2))
        for n in got:
            out("notify.got", n.channel, n.payload, "pid=own" if n.pid == own else "pid=other" if n.pid == other_pid else "pid=?")
        out("notify.self_pid_is_key_pid", [n.pid == conn.info.backend_pid for n in got if n.payload == "self-1"])
        conn.execute("UNLISTEN *")
        other.execute("NOTIFY matrix_chan, 'after-unlisten'")
        out("notify.after_unlisten", [n.payload for n in conn.notifies(timeout=0.5)])


def step_copy():
    with connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {T}_copy")
        conn.execute(f"CREATE TABLE {T}_copy (id int, s text)")
        with conn.cursor() as cur:
            with cur.copy(f"COPY {T}_copy FROM STDIN") as copy:
                for i in range(5000):
                    copy.write_row((i, f"row {i} é\t\\"))
            out("copy.in", cur.statusmessage, cur.rowcount)
            h = hashlib.md5()
            with cur.copy(f"COPY (SELECT * FROM {T}_copy ORDER BY id) TO STDOUT") as copy:
                for block in copy:
                    h.update(block)
            out("copy.out", cur.statusmessage, h.hexdigest())
            try:
                with cur.copy(f"COPY {T}_copy FROM STDIN") as copy:
                    copy.write(b"1\tok\nx\tbad\n")
            except psycopg.Error as e:
                out("copy.bad", err(e))
        out("copy.count", one(conn, f"SELECT count(*) FROM {T}_copy"))


def step_prepared():
    with connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {T}_prep")
        conn.execute(f"CREATE TABLE {T}_prep (id int, v text)")
        for i in range(20):
            conn.execute(f"INSERT INTO {T}_prep VALUES (%s, %s)", [i, f"v{i}"])
        q = f"SELECT * FROM {T}_prep WHERE id < %s ORDER BY id"
        out("prepared.first", conn.execute(q, [3]).fetchall())
        conn.execute(f"ALTER TABLE {T}_prep ADD COLUMN w int DEFAULT 7")
        for attempt in range(2):
            try:
                out(f"prepared.after_alter.{attempt}", conn.execute(q, [2]).fetchall())
            except psycopg.Error as e:
                out(f"prepared.after_alter.{attempt}", err(e))
        conn.execute(f"DROP TABLE {T}_prep")
        try:
            conn.execute(q, [2])
        except psycopg.Error as e:
            out("prepared.after_drop", err(e))
        conn.execute(f"CREATE TABLE {T}_prep (id int, v text)")
        conn.execute(f"INSERT INTO {T}_prep VALUES (%s, %s)", [1, "again"])
        out("prepared.recreated", conn.execute(q, [5]).fetchall())
        conn.execute("DEALLOCATE ALL")
        out("prepared.after_deallocate", conn.execute(q, [5]).fetchall())
        for i in range(200):  # many distinct statements
            conn.execute(f"SELECT %s::int + {i}", [i])
        out("prepared.many", one(conn, "SELECT count(*) FROM pg_prepared_statements"))
        out("prepared.after", one(conn, f"SELECT count(*) FROM {T}_prep"))


def step_cursor():
    with connect() as conn:
        with conn.transaction():
            cur = conn.cursor("matrix_cur")
            cur.execute("SELECT g FROM generate_series(1, 1000) g")
            sizes = []
            while chunk := cur.fetchmany(300):
                sizes.append(len(chunk))
            cur.close()
        out("cursor.chunks", sizes)
        cur = conn.cursor("matrix_hold", withhold=True)
        cur.execute("SELECT g, g * 2 FROM generate_series(1, 10) g")
        out("cursor.hold_first", cur.fetchmany(3))
        out("cursor.hold_rest", len(cur.fetchall()))
        cur.close()
        out("cursor.after", one(conn, "SELECT count(*) FROM pg_cursors"))


def step_terminate():
    conn = connect()
    try:
        conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        out("terminate.result", "not terminated")
    except psycopg.Error as e:
        out("terminate.result", err(e))
    out("terminate.broken", conn.broken, conn.closed)
    try:
        conn.execute("SELECT 1")
        out("terminate.next", "ok")
    except psycopg.Error as e:
        out("terminate.next", err(e))
    conn.close()
    with connect() as again:
        out("terminate.reconnect", one(again, "SELECT 'back'"))


def alarm(_sig, _frame):
    raise TimeoutError(f"step took more than {STEP_TIMEOUT_S} s")


def main():
    signal.signal(signal.SIGALRM, alarm)
    for name, step in [
        ("startup", step_startup), ("encoding", step_encoding), ("tx", step_tx),
        ("pipeline", step_pipeline), ("cancel", step_cancel), ("large", step_large),
        ("notify", step_notify), ("copy", step_copy), ("prepared", step_prepared),
        ("cursor", step_cursor), ("terminate", step_terminate),
    ]:
        signal.alarm(STEP_TIMEOUT_S)
        try:
            step()
        except Exception as e:  # the transcript records it; the next step starts afresh
            out(f"{name}.failed", err(e))
        finally:
            signal.alarm(0)
    out("done", NAME)


if __name__ == "__main__":
    main()
