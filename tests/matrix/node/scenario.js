// The client matrix's scenario for node-postgres (see ../scenario_psycopg.py for the
// conventions). node-postgres sends `statement_timeout` as a startup parameter of its own (not in
// `options`), names prepared statements itself when a query has a `name`, pipelines when asked
// (`pipeline: true`), and reads cursors (pg-cursor) through the unnamed portal with a row limit.
'use strict'

const crypto = require('node:crypto')
const { pipeline } = require('node:stream/promises')
const { Readable } = require('node:stream')
const pg = require('pg')
const Cursor = require('pg-cursor')
const { from: copyFrom, to: copyTo } = require('pg-copy-streams')

const NAME = 'node-pg'
const T = 'm_node'
const STEP_TIMEOUT_MS = 20000
const env = process.env
const BASE = {
  host: env.MATRIX_HOST,
  port: Number(env.MATRIX_PORT),
  user: env.MATRIX_USER,
  password: env.MATRIX_PASSWORD,
  database: env.MATRIX_DB,
  connectionTimeoutMillis: 10000,
}
const STARTUP = { application_name: `matrix-${NAME}`, statement_timeout: 12345 }

const out = (key, ...values) => process.stdout.write(`${key}: ${values.map(fmt).join(' ')}\n`)
const fmt = (v) => (typeof v === 'string' ? v : JSON.stringify(v))
const err = (e) => (e && e.code && /^[0-9A-Z]{5}$/.test(e.code) ? `${e.code} ${e.message}` : `${e && e.constructor.name}: ${e && e.message}`)
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

// Connects, remembering the ParameterStatus messages of the login and after.
async function connect(extra = STARTUP) {
  const client = new pg.Client({ ...BASE, ...extra })
  client.reported = {}
  client.connection.on('parameterStatus', (m) => {
    client.reported[m.parameterName] = m.parameterValue
  })
  client.errors = []
  client.on('error', (e) => client.errors.push(err(e)))
  await client.connect()
  return client
}

async function one(client, text, values) {
  const r = await client.query({ text, values, rowMode: 'array' })
  return r.rows[0][0]
}

async function stepStartup() {
  let c = await connect()
  for (const p of ['application_name', 'statement_timeout', 'client_encoding', 'DateStyle']) {
    out(`startup.show.${p}`, await one(c, `SHOW ${p}`))
  }
  for (const p of [
    'application_name', 'client_encoding', 'DateStyle', 'integer_datetimes', 'IntervalStyle', 'is_superuser',
    'server_encoding', 'server_version', 'session_authorization', 'standard_conforming_strings', 'TimeZone',
  ]) {
    out(`startup.reported.${p}`, c.reported[p] ?? null)
  }
  out('startup.key_pid_is_backend_pid', c.processID === (await one(c, 'SELECT pg_backend_pid()')))
  await c.query('SET statement_timeout = 999')
  out('startup.after_set', await one(c, 'SHOW statement_timeout'))
  await c.query('DISCARD ALL')
  out('startup.after_discard.statement_timeout', await one(c, 'SHOW statement_timeout'))
  out('startup.after_discard.application_name', await one(c, 'SHOW application_name'))
  await c.end()
  c = await connect({ application_name: `matrix-${NAME}-2` })
  out('startup.other.statement_timeout', await one(c, 'SHOW statement_timeout'))
  out('startup.other.application_name', await one(c, 'SHOW application_name'))
  await c.end()
  c = await connect()
  out('startup.again.statement_timeout', await one(c, 'SHOW statement_timeout'))
  out('startup.again.application_name', await one(c, 'SHOW application_name'))
  await c.end()
}

async function stepEncoding() {
  const c = await connect()
  await c.query("SET client_encoding TO 'latin1'")
  out('encoding.reported', c.reported.client_encoding)
  out('encoding.show', await one(c, 'SHOW client_encoding'))
  out('encoding.text', await one(c, "SELECT 'é' || chr(255)"))
  await c.query('RESET client_encoding')
  out('encoding.reset', c.reported.client_encoding, await one(c, 'SHOW client_encoding'))
  await c.end()
}

async function stepTx() {
  const c = await connect()
  await c.query(`DROP TABLE IF EXISTS ${T}_tx`)
  await c.query(`CREATE TABLE ${T}_tx (id int PRIMARY KEY, v text)`)
  await c.query('BEGIN')
  const r = await c.query(`INSERT INTO ${T}_tx VALUES ($1, $2), ($3, $4)`, [1, 'a', 2, 'b'])
  out('tx.insert', r.command, r.rowCount)
  out('tx.commit', (await c.query('COMMIT')).command)
  await c.query('BEGIN')
  await c.query(`INSERT INTO ${T}_tx VALUES (10, 'rolled back')`)
  out('tx.rollback', (await c.query('ROLLBACK')).command)
  await c.query('BEGIN')
  await c.query(`INSERT INTO ${T}_tx VALUES (3, 'c')`)
  await c.query('SAVEPOINT s1')
  await c.query(`INSERT INTO ${T}_tx VALUES (4, 'd')`)
  try {
    await c.query(`INSERT INTO ${T}_tx VALUES ($1, $2)`, [1, 'dup'])
  } catch (e) {
    out('tx.savepoint_error', err(e), e.detail)
  }
  await c.query('ROLLBACK TO SAVEPOINT s1')
  await c.query(`INSERT INTO ${T}_tx VALUES (5, 'e')`)
  await c.query('COMMIT')
  out('tx.ids', (await c.query(`SELECT id FROM ${T}_tx ORDER BY id`)).rows.map((r) => r.id))
  await c.query('BEGIN')
  await c.query(`UPDATE ${T}_tx SET v = 'z'`)
  for (const [k, q] of [['tx.abort_error', 'SELECT 1 / 0'], ['tx.aborted_error', 'SELECT 1']]) {
    try {
      await c.query(q)
    } catch (e) {
      out(k, err(e))
    }
  }
  await c.query('ROLLBACK')
  out('tx.after_rollback', await one(c, `SELECT string_agg(v, ',' ORDER BY id) FROM ${T}_tx`))
  await c.end()
}

async function stepPipeline() {
  let c = await connect()
  await c.query(`DROP TABLE IF EXISTS ${T}_pipe`)
  await c.query(`CREATE TABLE ${T}_pipe (id int PRIMARY KEY)`)
  await c.end()
  // Queued (not pipelined): each query waits for the previous one's ReadyForQuery.
  c = await connect()
  const settle = (ps) => Promise.allSettled(ps).then((rs) => rs.map((r) => (r.status === 'fulfilled' ? r.value : err(r.reason))))
  const queued = await settle([
    c.query(`INSERT INTO ${T}_pipe VALUES ($1)`, [1]).then((r) => r.command),
    c.query(`INSERT INTO ${T}_pipe VALUES ($1)`, [1]).then((r) => r.command),
    one(c, 'SELECT $1::int * 2', [21]),
  ])
  out('pipeline.queued', queued)
  await c.end()
  // Pipelined: every query is written before the first answer; each has its own Sync.
  c = await connect({ ...STARTUP, pipeline: true })
  const piped = await settle([
    c.query(`INSERT INTO ${T}_pipe VALUES ($1)`, [2]).then((r) => r.command),
    c.query(`INSERT INTO ${T}_pipe VALUES ($1)`, [2]).then((r) => r.command),
    one(c, 'SELECT $1::int * 3', [7]),
    c.query('BEGIN').then((r) => r.command),
    c.query('SELECT 1 / 0').then((r) => r.command),
    c.query('SELECT 1').then((r) => r.command),
    c.query('ROLLBACK').then((r) => r.command),
  ])
  out('pipeline.piped', piped)
  const many = await settle(Array.from({ length: 50 }, (_, i) => one(c, 'SELECT $1::int', [i])))
  out('pipeline.many', many.reduce((a, b) => a + b, 0))
  out('pipeline.rows', (await c.query(`SELECT id FROM ${T}_pipe ORDER BY id`)).rows.map((r) => r.id))
  await c.end()
}

async function waitActive(marker) {
  const w = await connect()
  try {
    const deadline = Date.now() + 10000
    while (Date.now() < deadline) {
      const n = await one(w, "SELECT count(*)::int FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()", [`%${marker}%`])
      if (n > 0) return true
      await sleep(50)
    }
    return false
  } finally {
    await w.end()
  }
}

async function stepCancel() {
  const c = await connect()
  const start = Date.now()
  const q = new pg.Query('SELECT pg_sleep(30) /* cancel-me */')
  const done = new Promise((resolve) => {
    q.on('error', (e) => resolve(err(e)))
    q.on('end', () => resolve('not cancelled'))
  })
  c.query(q)
  out('cancel.seen_running', await waitActive('cancel-me'))
  const canceler = new pg.Client({ ...BASE, ...STARTUP })
  canceler.cancel(c, q)
  out('cancel.result', await done)
  out('cancel.fast', Date.now() - start < 10000)
  out('cancel.after', await one(c, 'SELECT 1'))
  await c.end()
}

async function stepLarge() {
  const c = await connect()
  const r = await c.query({ text: "SELECT g, repeat('x', g % 100) FROM generate_series(1, 100000) g", rowMode: 'array' })
  out('large.rows', r.rows.length, r.rows.reduce((a, x) => a + x[0], 0), r.rows.reduce((a, x) => a + x[1].length, 0))
  const big = await one(c, "SELECT repeat('y', 300000) || 'end'")
  out('large.value', big.length, big.slice(-3))
  let param = ''
  for (let i = 0; i < 400000; i++) param += String.fromCharCode(0x41 + (i % 26))
  param += 'é'
  const md5 = crypto.createHash('md5').update(param, 'utf8').digest('hex')
  out('large.param_md5_match', (await one(c, 'SELECT md5($1::text)', [param])) === md5)
  out('large.after', await one(c, "SELECT 'ok'"))
  await c.end()
}

async function stepNotify() {
  const c = await connect()
  const other = await connect()
  const got = []
  c.on('notification', (n) => got.push(n))
  await c.query('LISTEN matrix_chan')
  const own = await one(c, 'SELECT pg_backend_pid()')
  const otherPid = await one(other, 'SELECT pg_backend_pid()')
  await c.query("NOTIFY matrix_chan, 'self-1'")
  await other.query("SELECT pg_notify('matrix_chan', 'other-1')")
  const deadline = Date.now() + 5000
  while (got.length < 2 && Date.now() < deadline) await sleep(20)
  for (const n of got) {
    const who = n.processId === own ? 'pid=own' : n.processId === otherPid ? 'pid=other' : 'pid=?'
    out('notify.got', n.channel, n.payload, who)
  }
  out('notify.self_pid_is_key_pid', got.filter((n) => n.payload === 'self-1').map((n) => n.processId === c.processID))
  got.length = 0
  await c.query('UNLISTEN *')
  await other.query("NOTIFY matrix_chan, 'after-unlisten'")
  await sleep(500)
  out('notify.after_unlisten', got.map((n) => n.payload))
  await c.end()
  await other.end()
}

async function stepCopy() {
  const c = await connect()
  await c.query(`DROP TABLE IF EXISTS ${T}_copy`)
  await c.query(`CREATE TABLE ${T}_copy (id int, s text)`)
  const lines = []
  for (let i = 0; i < 5000; i++) lines.push(`${i}\trow ${i} é\\t\\\\\n`)
  const ingest = c.query(copyFrom(`COPY ${T}_copy FROM STDIN`))
  await pipeline(Readable.from(lines), ingest)
  out('copy.in', ingest.rowCount)
  const h = crypto.createHash('md5')
  const egress = c.query(copyTo(`COPY (SELECT * FROM ${T}_copy ORDER BY id) TO STDOUT`))
  for await (const chunk of egress) h.update(chunk)
  out('copy.out', egress.rowCount, h.digest('hex'))
  try {
    await pipeline(Readable.from(['1\tok\n', 'x\tbad\n']), c.query(copyFrom(`COPY ${T}_copy FROM STDIN`)))
    out('copy.bad', 'accepted')
  } catch (e) {
    out('copy.bad', err(e))
  }
  out('copy.count', await one(c, `SELECT count(*)::int FROM ${T}_copy`))
  await c.end()
}

async function stepPrepared() {
  const c = await connect()
  await c.query(`DROP TABLE IF EXISTS ${T}_prep`)
  await c.query(`CREATE TABLE ${T}_prep (id int, v text)`)
  for (let i = 0; i < 20; i++) await c.query({ name: 'ins', text: `INSERT INTO ${T}_prep VALUES ($1, $2)`, values: [i, `v${i}`] })
  const q = (n) => c.query({ name: 'sel', text: `SELECT * FROM ${T}_prep WHERE id < $1 ORDER BY id`, values: [n], rowMode: 'array' })
  const attempt = async (key, n) => {
    try {
      out(key, (await q(n)).rows)
    } catch (e) {
      out(key, err(e))
    }
  }
  await attempt('prepared.first', 3)
  await c.query(`ALTER TABLE ${T}_prep ADD COLUMN w int DEFAULT 7`)
  await attempt('prepared.after_alter.0', 2)
  await attempt('prepared.after_alter.1', 2)
  await c.query(`DROP TABLE ${T}_prep`)
  await attempt('prepared.after_drop', 2)
  await c.query(`CREATE TABLE ${T}_prep (id int, v text)`)
  await c.query(`INSERT INTO ${T}_prep VALUES (1, 'again')`)
  await attempt('prepared.recreated', 5)
  await c.query('DEALLOCATE ALL')
  await attempt('prepared.after_deallocate', 5)
  for (let i = 0; i < 200; i++) await c.query({ name: `many${i}`, text: `SELECT $1::int + ${i}`, values: [i] })
  out('prepared.server_side', await one(c, 'SELECT count(*)::int FROM pg_prepared_statements'))
  await c.end()
}

async function stepCursor() {
  const c = await connect()
  const read = (cur, n) => new Promise((resolve, reject) => cur.read(n, (e, rows) => (e ? reject(e) : resolve(rows))))
  const close = (cur) => new Promise((resolve) => cur.close(() => resolve()))
  // Outside a transaction: the unnamed portal stays open between reads (no Sync in between).
  let cur = c.query(new Cursor('SELECT g FROM generate_series(1, 1000) g'))
  const sizes = []
  for (let rows = await read(cur, 300); rows.length > 0; rows = await read(cur, 300)) sizes.push(rows.length)
  await close(cur)
  out('cursor.chunks', sizes)
  await c.query('BEGIN')
  cur = c.query(new Cursor('SELECT g FROM generate_series(1, 2500) g'))
  let total = 0
  for (let rows = await read(cur, 400); rows.length > 0; rows = await read(cur, 400)) total += rows.reduce((a, r) => a + r.g, 0)
  await close(cur)
  await c.query('COMMIT')
  out('cursor.in_tx', total)
  out('cursor.after', await one(c, 'SELECT count(*)::int FROM pg_cursors'))
  await c.end()
}

async function stepTerminate() {
  const c = await connect()
  try {
    await c.query('SELECT pg_terminate_backend(pg_backend_pid())')
    out('terminate.result', 'not terminated')
  } catch (e) {
    out('terminate.result', err(e))
  }
  await sleep(200)
  out('terminate.error_events', c.errors)
  try {
    await c.query('SELECT 1')
    out('terminate.next', 'ok')
  } catch (e) {
    out('terminate.next', err(e))
  }
  const again = await connect()
  out('terminate.reconnect', await one(again, "SELECT 'back'"))
  await again.end()
}

async function main() {
  const steps = [
    ['startup', stepStartup], ['encoding', stepEncoding], ['tx', stepTx], ['pipeline', stepPipeline],
    ['cancel', stepCancel], ['large', stepLarge], ['notify', stepNotify], ['copy', stepCopy],
    ['prepared', stepPrepared], ['cursor', stepCursor], ['terminate', stepTerminate],
  ]
  for (const [name, step] of steps) {
    let timer
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`step took more than ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS)
    })
    try {
      await Promise.race([step(), timeout])
    } catch (e) {
      out(`${name}.failed`, err(e))
    } finally {
      clearTimeout(timer)
    }
  }
  out('done', NAME)
  process.exit(0) // connections a timed-out step left behind must not keep us alive
}

main()
