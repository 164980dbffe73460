//! A command's answer and its encoding as PostgreSQL messages (text columns, as Pgpool sends).

use bytes::BytesMut;
use pgpivot_protocol::build::{self, FieldSpec};

/// The text type: every admin column is text, so any client can read it by name or position.
const TEXT: u32 = 25;

pub type Row = Vec<Option<String>>;

/// What a command answers: a result set (possibly empty) or just a completion tag.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Column names; empty for commands that return no rows (PAUSE, RELOAD, ...).
    pub columns: &'static [&'static str],
    pub rows: Vec<Row>,
    pub tag: String,
    /// A message for the operator (what an action did), sent as a NOTICE.
    pub notice: Option<String>,
}

impl Output {
    pub fn rows(columns: &'static [&'static str], rows: Vec<Row>, tag_word: &str) -> Self {
        let tag = format!("{tag_word} {}", rows.len());
        Output {
            columns,
            rows,
            tag,
            notice: None,
        }
    }

    pub fn done(tag: impl Into<String>) -> Self {
        Output {
            columns: &[],
            rows: Vec::new(),
            tag: tag.into(),
            notice: None,
        }
    }

    /// RowDescription, or NoData for a command without rows (what Describe answers).
    pub fn encode_description(columns: &[&str], buf: &mut BytesMut) {
        if columns.is_empty() {
            buf.extend_from_slice(&[b'n', 0, 0, 0, 4]);
            return;
        }
        let fields: Vec<FieldSpec<'_>> = columns
            .iter()
            .map(|name| FieldSpec {
                name,
                type_oid: TEXT,
            })
            .collect();
        build::row_description(buf, &fields);
    }

    /// DataRows (or the notice) and CommandComplete.
    pub fn encode_rows(&self, buf: &mut BytesMut) {
        if let Some(message) = &self.notice {
            build::notice_response(
                buf,
                &build::ErrorFields {
                    severity: "NOTICE",
                    code: "00000",
                    message,
                    detail: None,
                    hint: None,
                },
            );
        }
        for row in &self.rows {
            let values: Vec<Option<&[u8]>> = row
                .iter()
                .map(|v| v.as_deref().map(str::as_bytes))
                .collect();
            build::data_row(buf, &values);
        }
        build::command_complete(buf, &self.tag);
    }

    /// The full simple-query answer (without ReadyForQuery).
    pub fn encode_simple(&self, buf: &mut BytesMut) {
        if !self.columns.is_empty() {
            Self::encode_description(self.columns, buf);
        }
        self.encode_rows(buf);
    }
}

/// A value cell.
pub fn v(s: impl ToString) -> Option<String> {
    Some(s.to_string())
}

/// An optional cell: NULL when absent.
pub fn opt<T: ToString>(s: Option<T>) -> Option<String> {
    s.map(|s| s.to_string())
}
