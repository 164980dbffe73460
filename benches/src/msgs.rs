//! Protocol messages for the micro-benchmarks: what pgbench's clients send in each `-M` mode,
//! what PostgreSQL answers, and a fake server that answers any staged client stream the way
//! PostgreSQL would (so the response plan of the prepared-statement mapping sees real replies).

/// One frame: tag, length, body.
pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + 5);
    v.push(tag);
    v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn cstr(v: &mut Vec<u8>, s: &str) {
    v.extend_from_slice(s.as_bytes());
    v.push(0);
}

/// pgbench's select-only statement.
pub const SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";

pub fn query(sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, sql);
    msg(b'Q', &b)
}

pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend_from_slice(&0i16.to_be_bytes());
    msg(b'P', &b)
}

/// Bind with one text parameter.
pub fn bind(portal: &str, stmt: &str, param: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    cstr(&mut b, stmt);
    b.extend_from_slice(&0i16.to_be_bytes()); // parameter formats: all text
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&(param.len() as i32).to_be_bytes());
    b.extend_from_slice(param);
    b.extend_from_slice(&0i16.to_be_bytes()); // result formats: all text
    msg(b'B', &b)
}

pub fn describe_portal(portal: &str) -> Vec<u8> {
    let mut b = vec![b'P'];
    cstr(&mut b, portal);
    msg(b'D', &b)
}

pub fn execute(portal: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    b.extend_from_slice(&0i32.to_be_bytes());
    msg(b'E', &b)
}

pub fn sync() -> Vec<u8> {
    msg(b'S', &[])
}

/// One transaction of pgbench select-only in `-M simple`, `extended` or `prepared` (the
/// statement already prepared: what every transaction after the first sends).
pub fn pgbench_select(mode: &str, aid: u32) -> Vec<u8> {
    let p = aid.to_string();
    match mode {
        "simple" => query(&SELECT.replace("$1", &p)),
        "extended" => [
            parse("", SELECT),
            bind("", "", p.as_bytes()),
            describe_portal(""),
            execute(""),
            sync(),
        ]
        .concat(),
        "prepared" => [
            bind("", "P0_1", p.as_bytes()),
            describe_portal(""),
            execute(""),
            sync(),
        ]
        .concat(),
        other => panic!("unknown mode {other}"),
    }
}

/// RowDescription of one int4 column.
pub fn row_description(name: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&1i16.to_be_bytes());
    cstr(&mut b, name);
    b.extend_from_slice(&0i32.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&23i32.to_be_bytes());
    b.extend_from_slice(&4i16.to_be_bytes());
    b.extend_from_slice(&(-1i32).to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    msg(b'T', &b)
}

/// DataRow with the given text columns.
pub fn data_row(cols: &[&[u8]]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(cols.len() as i16).to_be_bytes());
    for c in cols {
        b.extend_from_slice(&(c.len() as i32).to_be_bytes());
        b.extend_from_slice(c);
    }
    msg(b'D', &b)
}

/// A pgbench_accounts row as text (aid, bid, abalance, 84-byte filler).
pub fn account_row(aid: u32) -> Vec<u8> {
    let aid = aid.to_string();
    data_row(&[aid.as_bytes(), b"1", b"0", &[b' '; 84]])
}

pub fn command_complete(tag: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, tag);
    msg(b'C', &b)
}

pub fn ready(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}

/// A result set of `rows` pgbench_accounts rows, then CommandComplete and ReadyForQuery.
pub fn result_set(rows: u32) -> Vec<u8> {
    let mut v = row_description("aid");
    for aid in 1..=rows {
        v.extend(account_row(aid));
    }
    v.extend(command_complete(&format!("SELECT {rows}")));
    v.extend(ready(b'I'));
    v
}

/// What PostgreSQL answers to `client` (whole frames, as staged for the server), each query or
/// Execute returning `rows` rows.
pub fn server_replies(client: &[u8], rows: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 5 <= client.len() {
        let tag = client[pos];
        let len =
            i32::from_be_bytes(client[pos + 1..pos + 5].try_into().expect("4 bytes")) as usize;
        let body = &client[pos + 5..pos + 1 + len];
        pos += 1 + len;
        match tag {
            b'Q' => out.extend(result_set(rows)),
            b'P' => out.extend(msg(b'1', &[])),
            b'B' => out.extend(msg(b'2', &[])),
            b'C' => out.extend(msg(b'3', &[])),
            b'D' if body.first() == Some(&b'S') => {
                // Unknown statements (pgpivot's probe) fail; the rest describe one int4.
                if body[1..].starts_with(b"pgpivot_none") {
                    out.extend(msg(
                        b'E',
                        b"SERROR\0C26000\0Mprepared statement does not exist\0\0",
                    ));
                } else {
                    out.extend(msg(b't', &[0, 0]));
                    out.extend(row_description("abalance"));
                }
            }
            b'D' => out.extend(row_description("abalance")),
            b'E' => {
                for aid in 1..=rows {
                    out.extend(account_row(aid));
                }
                out.extend(command_complete(&format!("SELECT {rows}")));
            }
            b'S' => out.extend(ready(b'I')),
            _ => {}
        }
    }
    out
}
