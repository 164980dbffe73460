"""The client matrix's scenario for asyncpg (see scenario_psycopg.py for the conventions).

asyncpg prepares every statement at the protocol level, keeps an LRU cache of them per
connection (closing the evicted ones) and reads cursors through named portals with a row limit,
so this scenario leans on those paths.
"""

import asyncio
import hashlib
import io
import os
import time

import asyncpg

NAME = "asyncpg"
STEP_TIMEOUT_S = 20
ENV = os.environ
T = f"m_{NAME}"


def out(key, *values):
    print(f"{key}: " + " ".join(str(v) for v in values), flush=True)


def err(e):
    code = getattr(e, "sqlstate", None)
    if code:
        return f"{code} {e.args[0] if e.args else ''}"
    return type(e).__name__


async def connect(settings=None):
    return await asyncpg.connect(
        host=ENV["MATRIX_HOST"],
        port=int(ENV["MATRIX_PORT"]),
        user=ENV["MATRIX_USER"],
        password=ENV["MATRIX_PASSWORD"],
        database=ENV["MATRIX_DB"],
        timeout=10,
        server_settings=settings
        if settings is not None
        else {"application_name": f"matrix-{NAME}", "statement_timeout": "12345"},
    )


def rows(records):
    return [tuple(r) for r in records]


async def step_startup():
    conn = await connect()
    try:
        for p in ["application_name", "statement_timeout", "client_encoding", "DateStyle"]:
            out(f"startup.show.{p}", await conn.fetchval(f"SHOW {p}"))
        s = conn.get_settings()
        for p in [
            "application_name", "client_encoding", "DateStyle", "integer_datetimes",
            "IntervalStyle", "is_superuser", "server_encoding", "server_version",
            "session_authorization", "standard_conforming_strings", "TimeZone",
        ]:
            out(f"startup.reported.{p}", getattr(s, p, None))
        own = await conn.fetchval("SELECT pg_backend_pid()")
        out("startup.key_pid_is_backend_pid", conn.get_server_pid() == own)
        await conn.execute("SET statement_timeout = 999")
        out("startup.after_set", await conn.fetchval("SHOW statement_timeout"))
        await conn.execute("DISCARD ALL")
        # DISCARD ALL also dropped asyncpg's cached statements: new texts are prepared afresh.
        out("startup.after_discard.statement_timeout", await conn.fetchval("SHOW statement_timeout -- 2"))
        out("startup.after_discard.application_name", await conn.fetchval("SHOW application_name -- 2"))
    finally:
        await conn.close()
    conn = await connect({"application_name": f"matrix-{NAME}-2"})
    out("startup.other.statement_timeout", await conn.fetchval("SHOW statement_timeout"))
    out("startup.other.application_name", await conn.fetchval("SHOW application_name"))
    await conn.close()
    conn = await connect()
    out("startup.again.statement_timeout", await conn.fetchval("SHOW statement_timeout"))
    out("startup.again.application_name", await conn.fetchval("SHOW application_name"))
    await conn.close()


async def step_encoding():
    conn = await connect()
    try:
        await conn.execute("SET client_encoding TO 'latin1'")
        out("encoding.reported", conn.get_settings().client_encoding)
        out("encoding.show", await conn.fetchval("SHOW client_encoding"))
        out("encoding.text", await conn.fetchval("SELECT 'é' || chr(255)"))
        await conn.execute("RESET client_encoding")
        out("encoding.reset", conn.get_settings().client_encoding, await conn.fetchval("SHOW client_encoding"))
    finally:
        await conn.close()


async def step_tx():
    conn = await connect()
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {T}_tx")
        await conn.execute(f"CREATE TABLE {T}_tx (id int PRIMARY KEY, v text)")
        async with conn.transaction():
            out("tx.insert", await conn.execute(f"INSERT INTO {T}_tx VALUES ($1, $2), ($3, $4)", 1, "a", 2, "b"))
        tr = conn.transaction()
        await tr.start()
        await conn.execute(f"INSERT INTO {T}_tx VALUES (10, 'rolled back')")
        await tr.rollback()
        out("tx.rollback_in_tx", conn.is_in_transaction())
        async with conn.transaction():
            await conn.execute(f"INSERT INTO {T}_tx VALUES (3, 'c')")
            try:
                async with conn.transaction():  # a savepoint
                    await conn.execute(f"INSERT INTO {T}_tx VALUES (4, 'd')")
                    await conn.execute(f"INSERT INTO {T}_tx VALUES ($1, $2)", 1, "dup")
            except asyncpg.PostgresError as e:
                out("tx.savepoint_error", err(e), e.detail)
            await conn.execute(f"INSERT INTO {T}_tx VALUES (5, 'e')")
        out("tx.ids", [r[0] for r in await conn.fetch(f"SELECT id FROM {T}_tx ORDER BY id")])
        tr = conn.transaction()
        await tr.start()
        await conn.execute(f"UPDATE {T}_tx SET v = 'z'")
        try:
            await conn.fetchval("SELECT 1 / 0")
        except asyncpg.PostgresError as e:
            out("tx.abort_error", err(e))
        try:
            await conn.fetchval("SELECT 1")
        except asyncpg.PostgresError as e:
            out("tx.aborted_error", err(e))
        await tr.rollback()
        out("tx.after_rollback", await conn.fetchval(f"SELECT string_agg(v, ',' ORDER BY id) FROM {T}_tx"))
    finally:
        await conn.close()


async def step_pipeline():
    conn = await connect()
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {T}_pipe")
        await conn.execute(f"CREATE TABLE {T}_pipe (id int PRIMARY KEY)")
        # executemany pipelines Bind/Execute for every argument set before one Sync.
        try:
            await conn.executemany(f"INSERT INTO {T}_pipe VALUES ($1)", [(1,), (2,), (1,), (3,)])
        except asyncpg.PostgresError as e:
            out("pipeline.error", err(e))
        out("pipeline.rows_after_error", await conn.fetchval(f"SELECT count(*) FROM {T}_pipe"))
        await conn.executemany(f"INSERT INTO {T}_pipe VALUES ($1)", [(i,) for i in range(100)])
        out("pipeline.rows", await conn.fetchval(f"SELECT count(*) FROM {T}_pipe"))
        # Several queries in flight at once on one connection are refused by asyncpg itself.
        results = await asyncio.gather(
            *(conn.fetchval("SELECT $1::int * 2", i) for i in range(3)), return_exceptions=True)
        out("pipeline.concurrent", [r if isinstance(r, int) else type(r).__name__ for r in results])
    finally:
        await conn.close()


async def wait_active(marker):
    watcher = await connect()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            n = await watcher.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()",
                f"%{marker}%")
            if n > 0:
                return True
            await asyncio.sleep(0.05)
        return False
    finally:
        await watcher.close()


async def step_cancel():
    conn = await connect()
    try:
        start = time.monotonic()
        task = asyncio.create_task(conn.fetchval("SELECT pg_sleep(30) /* cancel-me */"))
        out("cancel.seen_running", await wait_active("cancel-me"))
        task.cancel()
        try:
            await task
            out("cancel.result", "not cancelled")
        except asyncio.CancelledError:
            out("cancel.result", "CancelledError")
        out("cancel.after", await conn.fetchval("SELECT 1"))
        out("cancel.fast", time.monotonic() - start < 10)
        # A statement_timeout is the server cancelling: same error path, no cancel request.
        try:
            await conn.execute("SET statement_timeout = 100; SELECT pg_sleep(5)")
        except asyncpg.PostgresError as e:
            out("cancel.timeout", err(e))
        await conn.execute("RESET statement_timeout")
    finally:
        await conn.close()


async def step_large():
    conn = await connect()
    try:
        recs = await conn.fetch("SELECT g, repeat('x', g % 100) FROM generate_series(1, 100000) g")
        out("large.rows", len(recs), sum(r[0] for r in recs), sum(len(r[1]) for r in recs))
        big = await conn.fetchval("SELECT repeat('y', 300000) || 'end'")
        out("large.value", len(big), big[-3:])
        param = "".join(chr(0x41 + i % 26) for i in range(400000)) + "é"
        server_md5 = await conn.fetchval("SELECT md5($1::text)", param)
        out("large.param_md5_match", server_md5 == hashlib.md5(param.encode()).hexdigest())
        out("large.after", await conn.fetchval("SELECT 'ok'"))
    finally:
        await conn.close()


async def step_notify():
    conn, other = await connect(), await connect()
    try:
        got = asyncio.Queue()
        await conn.add_listener("matrix_chan", lambda c, pid, ch, payload: got.put_nowait((pid, ch, payload)))
        own = await conn.fetchval("SELECT pg_backend_pid()")
        other_pid = await other.fetchval("SELECT pg_backend_pid()")
        await conn.execute("NOTIFY matrix_chan, 'self-1'")
        await other.execute("SELECT pg_notify('matrix_chan', 'other-1')")
        self_pids = []
        for _ in range(2):
            pid, ch, payload = await asyncio.wait_for(got.get(), 5)
            out("notify.got", ch, payload, "pid=own" if pid == own else "pid=other" if pid == other_pid else "pid=?")
            if payload == "self-1":
                self_pids.append(pid)
        out("notify.self_pid_is_key_pid", [pid == conn.get_server_pid() for pid in self_pids])
        await conn.reset()  # UNLISTEN * among other things
        await other.execute("NOTIFY matrix_chan, 'after-unlisten'")
        await asyncio.sleep(0.5)
        out("notify.after_unlisten", got.qsize())
    finally:
        await conn.close()
        await other.close()


async def step_copy():
    conn = await connect()
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {T}_copy")
        await conn.execute(f"CREATE TABLE {T}_copy (id int, s text)")
        tag = await conn.copy_records_to_table(f"{T}_copy", records=[(i, f"row {i} é\t\\") for i in range(5000)])
        out("copy.in_binary", tag)
        text = "".join(f"{i}\ttext {i}\n" for i in range(5000, 6000)).encode()
        out("copy.in_text", await conn.copy_to_table(f"{T}_copy", source=io.BytesIO(text)))
        buf = io.BytesIO()
        tag = await conn.copy_from_query(f"SELECT * FROM {T}_copy ORDER BY id", output=buf)
        out("copy.out", tag, hashlib.md5(buf.getvalue()).hexdigest())
        try:
            await conn.copy_to_table(f"{T}_copy", source=io.BytesIO(b"1\tok\nx\tbad\n"))
        except asyncpg.PostgresError as e:
            out("copy.bad", err(e))
        out("copy.count", await conn.fetchval(f"SELECT count(*) FROM {T}_copy"))
    finally:
        await conn.close()


async def step_prepared():
    conn = await connect()
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {T}_prep")
        await conn.execute(f"CREATE TABLE {T}_prep (id int, v text)")
        await conn.executemany(f"INSERT INTO {T}_prep VALUES ($1, $2)", [(i, f"v{i}") for i in range(20)])
        q = f"SELECT * FROM {T}_prep WHERE id < $1 ORDER BY id"
        stmt = await conn.prepare(q)
        out("prepared.first", rows(await stmt.fetch(3)))
        out("prepared.repeat", sum([len(await stmt.fetch(i)) for i in range(50)]))
        await conn.execute(f"ALTER TABLE {T}_prep ADD COLUMN w int DEFAULT 7")
        try:
            out("prepared.explicit_after_alter", rows(await stmt.fetch(2)))
        except asyncpg.PostgresError as e:
            out("prepared.explicit_after_alter", err(e))
        for attempt in range(2):  # the statement cache re-prepares by itself
            try:
                out(f"prepared.cached_after_alter.{attempt}", rows(await conn.fetch(q, 2)))
            except asyncpg.PostgresError as e:
                out(f"prepared.cached_after_alter.{attempt}", err(e))
        await conn.execute(f"DROP TABLE {T}_prep")
        try:
            await conn.fetch(q, 2)
        except asyncpg.PostgresError as e:
            out("prepared.after_drop", err(e))
        await conn.execute(f"CREATE TABLE {T}_prep (id int, v text)")
        await conn.execute(f"INSERT INTO {T}_prep VALUES ($1, $2)", 1, "again")
        out("prepared.recreated", rows(await conn.fetch(q, 5)))
        for i in range(300):  # more than the cache holds: evicted statements are closed
            await conn.fetchval(f"SELECT $1::int + {i}", i)
        out("prepared.server_side", await conn.fetchval("SELECT count(*) FROM pg_prepared_statements"))
        out("prepared.after", await conn.fetchval(f"SELECT count(*) FROM {T}_prep"))
        await conn.execute("DEALLOCATE ALL")
        try:
            out("prepared.after_deallocate", rows(await conn.fetch(q, 5)))
        except asyncpg.PostgresError as e:
            out("prepared.after_deallocate", err(e))
        out("prepared.after_deallocate_again", rows(await conn.fetch(q, 5)))
    finally:
        await conn.close()


async def step_cursor():
    conn = await connect()
    try:
        async with conn.transaction():
            cur = await conn.cursor("SELECT g FROM generate_series(1, 1000) g")
            sizes = []
            while chunk := await cur.fetch(300):
                sizes.append(len(chunk))
            out("cursor.chunks", sizes)
            total = 0
            async for r in conn.cursor("SELECT g FROM generate_series(1, 2500) g", prefetch=400):
                total += r[0]
            out("cursor.iterated", total)
        out("cursor.after", await conn.fetchval("SELECT count(*) FROM pg_cursors"))
    finally:
        await conn.close()


async def step_terminate():
    conn = await connect()
    try:
        await conn.fetchval("SELECT pg_terminate_backend(pg_backend_pid())")
        out("terminate.result", "not terminated")
    except Exception as e:
        out("terminate.result", err(e))
    await asyncio.sleep(0.2)
    out("terminate.closed", conn.is_closed())
    try:
        await conn.fetchval("SELECT 1")
        out("terminate.next", "ok")
    except Exception as e:
        out("terminate.next", type(e).__name__)
    conn.terminate()
    again = await connect()
    out("terminate.reconnect", await again.fetchval("SELECT 'back'"))
    await again.close()


async def main():
    for name, step in [
        ("startup", step_startup), ("encoding", step_encoding), ("tx", step_tx),
        ("pipeline", step_pipeline), ("cancel", step_cancel), ("large", step_large),
        ("notify", step_notify), ("copy", step_copy), ("prepared", step_prepared),
        ("cursor", step_cursor), ("terminate", step_terminate),
    ]:
        try:
            await asyncio.wait_for(step(), STEP_TIMEOUT_S)
        except Exception as e:  # the transcript records it; the next step starts afresh
            out(f"{name}.failed", err(e))
    out("done", NAME)


if __name__ == "__main__":
    asyncio.run(main())
