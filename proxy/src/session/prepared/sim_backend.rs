//! A toy PostgreSQL backend for the simulator: the parts of the extended protocol, and of the
//! SQL that creates and drops prepared statements, that the prepared-statement code relies on.

use std::collections::HashMap;

use bytes::BytesMut;
use pgpivot_protocol::build::{self, ErrorFields, FieldSpec};

use super::cstr;
use super::rewrite::tests::msg;

fn split_cstr(data: &[u8]) -> (&[u8], &[u8]) {
    cstr(data).expect("test frames are well formed")
}

/// The parts of PostgreSQL's extended-protocol behaviour this module relies on.
#[derive(Default)]
pub(super) struct ToyBackend {
    /// Prepared statements by name (`""`: the unnamed one): (query, parameter section).
    pub(super) statements: HashMap<Vec<u8>, (Vec<u8>, Vec<u8>)>,
    portals: HashMap<Vec<u8>, Vec<u8>>,
    skipping: bool,
    pub(super) out: Vec<u8>,
}

impl ToyBackend {
    fn error(&mut self, code: &str, message: String) {
        let mut b = BytesMut::new();
        build::error_response(
            &mut b,
            &ErrorFields {
                severity: "ERROR",
                code,
                message: &message,
                detail: None,
                hint: None,
            },
        );
        self.out.extend_from_slice(&b);
        self.skipping = true;
    }

    fn reply(&mut self, tag: u8, body: &[u8]) {
        self.out.extend(msg(tag, body));
    }

    fn describe_result(&mut self, query: &[u8]) {
        if query.starts_with(b"SELECT") {
            let mut b = BytesMut::new();
            let name = String::from_utf8_lossy(query);
            build::row_description(
                &mut b,
                &[FieldSpec {
                    name: &name,
                    type_oid: 25,
                }],
            );
            self.out.extend_from_slice(&b);
        } else {
            self.reply(b'n', b"");
        }
    }

    pub(super) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let len = i32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize + 1;
            let (frame, rest) = bytes.split_at(len);
            self.handle(frame[0], &frame[5..]);
            bytes = rest;
        }
    }

    fn handle(&mut self, tag: u8, body: &[u8]) {
        if tag == b'S' {
            self.skipping = false;
            self.portals.clear();
            self.reply(b'Z', b"I");
            return;
        }
        if self.skipping {
            return;
        }
        match tag {
            b'P' => {
                let (name, rest) = split_cstr(body);
                let (query, params) = split_cstr(rest);
                if !name.is_empty() && self.statements.contains_key(name) {
                    let n = String::from_utf8_lossy(name);
                    return self.error(
                        "42P05",
                        format!("prepared statement \"{n}\" already exists"),
                    );
                }
                if query.starts_with(b"BAD") {
                    return self.error("42601", "syntax error at or near \"BAD\"".into());
                }
                self.statements
                    .insert(name.to_vec(), (query.to_vec(), params.to_vec()));
                self.reply(b'1', b"");
            }
            b'B' => {
                let (portal, rest) = split_cstr(body);
                let (name, _) = split_cstr(rest);
                let Some((query, _)) = self.statements.get(name) else {
                    let n = String::from_utf8_lossy(name);
                    return self.error(
                        "26000",
                        format!("prepared statement \"{n}\" does not exist"),
                    );
                };
                self.portals.insert(portal.to_vec(), query.clone());
                self.reply(b'2', b"");
            }
            b'D' => {
                let (name, _) = split_cstr(&body[1..]);
                if body[0] == b'S' {
                    let Some((query, params)) = self.statements.get(name).cloned() else {
                        let n = String::from_utf8_lossy(name);
                        return self.error(
                            "26000",
                            format!("prepared statement \"{n}\" does not exist"),
                        );
                    };
                    self.reply(b't', &params);
                    self.describe_result(&query);
                } else {
                    let Some(query) = self.portals.get(name).cloned() else {
                        return self.error("34000", "portal does not exist".into());
                    };
                    self.describe_result(&query);
                }
            }
            b'E' => {
                let (portal, _) = split_cstr(body);
                let Some(query) = self.portals.get(portal).cloned() else {
                    return self.error("34000", "portal does not exist".into());
                };
                self.run(&query, false);
            }
            b'C' => {
                let (name, _) = split_cstr(&body[1..]);
                if body[0] == b'S' {
                    self.statements.remove(name);
                } else {
                    self.portals.remove(name);
                }
                self.reply(b'3', b"");
            }
            b'Q' => {
                self.statements.remove(&b""[..]);
                let (query, _) = split_cstr(body);
                // Statements run in order; an error ends the query (toy texts hold no quotes).
                for statement in query.split(|&b| b == b';') {
                    if !statement.is_empty() && !self.run(statement, true) {
                        break;
                    }
                }
                self.skipping = false;
                self.reply(b'Z', b"I");
            }
            b'F' => {
                self.reply(b'V', &(-1i32).to_be_bytes());
                self.reply(b'Z', b"I");
            }
            _ => {} // Flush, CopyData outside COPY: nothing
        }
    }

    /// One SQL statement, from a Query (`simple`) or an Execute. False: it failed.
    fn run(&mut self, sql: &[u8], simple: bool) -> bool {
        let text = String::from_utf8_lossy(sql).into_owned();
        let words: Vec<&str> = text.split(' ').collect();
        match words[..] {
            ["FAIL", ..] => {
                self.error("22012", "division by zero".into());
                return false;
            }
            ["DEALLOCATE", "ALL"] => {
                self.statements.retain(|k, _| k.is_empty());
                self.reply(b'C', b"DEALLOCATE ALL\0");
            }
            ["DEALLOCATE", name] => {
                if self.statements.remove(name.as_bytes()).is_none() {
                    let message = format!("prepared statement \"{name}\" does not exist");
                    self.error("26000", message);
                    return false;
                }
                self.reply(b'C', b"DEALLOCATE\0");
            }
            ["PREPARE", name, "AS", query] => {
                if self.statements.contains_key(name.as_bytes()) {
                    let message = format!("prepared statement \"{name}\" already exists");
                    self.error("42P05", message);
                    return false;
                }
                let def = (query.as_bytes().to_vec(), vec![0, 0]);
                self.statements.insert(name.as_bytes().to_vec(), def);
                self.reply(b'C', b"PREPARE\0");
            }
            ["SELECT", ..] if !simple => {
                let mut b = BytesMut::new();
                build::data_row(&mut b, &[Some(sql)]);
                self.out.extend_from_slice(&b);
                self.reply(b'C', b"SELECT 1\0");
            }
            _ if !simple => self.reply(b'C', b"INSERT 0 1\0"),
            _ => {
                self.describe_result(sql);
                self.reply(b'C', b"SELECT 1\0");
            }
        }
        true
    }
}
