//! Text from outside — notification payloads, database messages, anything a
//! client sent — reaches the log only through [`untrusted`] (or [`error`]
//! for errors, whose messages quote the database and clients too): quoted,
//! with newlines and terminal escapes escaped, and capped in length, so
//! neither a database role nor a client can forge log lines or drive the
//! terminal of whoever reads the log. [`error_chain`] puts an error and its
//! causes on one line.

use std::fmt;

/// Most characters of one untrusted value written to the log.
pub const MAX_CHARS: usize = 200;

/// Most characters of one error written to the log: errors carry what
/// Postgres said (detail, hint, where), which an operator needs whole.
pub const MAX_ERROR_CHARS: usize = 4096;

/// See [`untrusted`].
pub struct Untrusted<T> {
    text: T,
    max_chars: usize,
}

/// Wraps `text` for a log field (`payload = %untrusted(text)`): it prints as
/// a double-quoted string with control characters escaped (`\n`, `\u{1b}`),
/// cut after [`MAX_CHARS`] characters with the number of bytes left out.
pub fn untrusted(text: &str) -> Untrusted<&str> {
    Untrusted {
        text,
        max_chars: MAX_CHARS,
    }
}

/// [`error_chain`] of `err`, escaped like [`untrusted`] text, up to
/// [`MAX_ERROR_CHARS`]: `error = %logging::error(&err)`.
pub fn error(err: &(dyn std::error::Error + 'static)) -> Untrusted<String> {
    Untrusted {
        text: error_chain(err),
        max_chars: MAX_ERROR_CHARS,
    }
}

impl<T: AsRef<str>> fmt::Display for Untrusted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.text.as_ref();
        let cut = text
            .char_indices()
            .nth(self.max_chars)
            .map_or(text.len(), |(at, _)| at);
        f.write_str("\"")?;
        for c in text[..cut].chars() {
            write!(f, "{}", c.escape_debug())?;
        }
        f.write_str("\"")?;
        if cut < text.len() {
            write!(f, "…({} more bytes)", text.len() - cut)?;
        }
        Ok(())
    }
}

impl<T: AsRef<str>> fmt::Debug for Untrusted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// An error with its causes on one line, `outer: inner: …`, for logs and
/// messages; for a Postgres error, all that the server said: severity,
/// SQLSTATE, message, then detail, hint, where, schema, table, column, data
/// type and constraint where present.
///
/// ```text
/// broadcast.authorize failed: ERROR 42501: permission denied for table grants
/// ERROR P0001: orders are frozen (detail: "until 06:00", hint: "retry later", table: "orders")
/// ```
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut report = String::new();
    let mut link = Some(err);
    while let Some(err) = link {
        let db = err
            .downcast_ref::<tokio_postgres::error::DbError>()
            .or_else(|| err.downcast_ref::<tokio_postgres::Error>()?.as_db_error());
        if let Some(db) = db {
            // "db error" says nothing the server's own words do not.
            if let Some(outer) = report.strip_suffix(": db error") {
                report.truncate(outer.len());
            }
            if !report.is_empty() {
                report.push_str(": ");
            }
            report.push_str(&describe_db_error(db));
            break;
        }
        let text = one_line(&err.to_string());
        if !report.contains(&text) {
            if !report.is_empty() {
                report.push_str(": ");
            }
            report.push_str(&text);
        }
        link = err.source();
    }
    report
}

/// `ERROR 23514: message (detail: "…", hint: "…", table: "orders", …)`.
fn describe_db_error(db: &tokio_postgres::error::DbError) -> String {
    let mut text = format!(
        "{} {}: {}",
        db.severity(),
        db.code().code(),
        one_line(db.message())
    );
    let fields = [
        ("detail", db.detail()),
        ("hint", db.hint()),
        ("where", db.where_()),
        ("schema", db.schema()),
        ("table", db.table()),
        ("column", db.column()),
        ("datatype", db.datatype()),
        ("constraint", db.constraint()),
    ];
    let present: Vec<String> = fields
        .iter()
        .filter_map(|(name, value)| Some(format!("{name}: {:?}", (*value)?)))
        .collect();
    if !present.is_empty() {
        text.push_str(&format!(" ({})", present.join(", ")));
    }
    text
}

fn one_line(text: &str) -> String {
    text.split('\n')
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Logs to stderr, filtered by RUST_LOG (default `info`). Text is coloured
/// only on a terminal, and not when NO_COLOR is set (to anything but "").
pub fn init(format: crate::config::LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        );
    match format {
        crate::config::LogFormat::Text => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            logs.with_ansi(std::io::stderr().is_terminal() && !no_color)
                .init()
        }
        crate::config::LogFormat::Json => logs.with_ansi(false).json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_and_terminal_escapes_are_escaped() {
        let forged =
            "ok\n2026-01-01T00:00:00Z ERROR forged line\r\x1b[31mred\x1b]0;title\x07\u{202e}";
        let shown = untrusted(forged).to_string();
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
        assert!(!shown.contains('\u{202e}'), "{shown}");
        assert!(shown.starts_with(r#""ok\n2026"#), "{shown}");
        assert!(shown.contains(r"\u{1b}[31mred"), "{shown}");
    }

    #[test]
    fn long_text_is_cut_and_says_how_much_was_left_out() {
        let long = "é".repeat(300);
        let shown = untrusted(&long).to_string();
        assert_eq!(shown.matches('é').count(), MAX_CHARS);
        assert!(shown.ends_with("…(200 more bytes)"), "{shown}");
        assert_eq!(untrusted("short").to_string(), r#""short""#);
    }

    #[test]
    fn errors_are_escaped_and_keep_more() {
        let err = std::io::Error::other(format!("bad\x1b[2J{}", "x".repeat(1000)));
        let shown = error(&err).to_string();
        assert!(!shown.contains('\x1b'), "{shown}");
        assert!(shown.contains(&"x".repeat(1000)), "{shown}");
    }

    proptest::proptest! {
        #[test]
        fn nothing_untrusted_prints_a_control_character(text in "\\PC*|[\\x00-\\x1f\\x7f-\\x9f]{0,50}") {
            let shown = untrusted(&text).to_string();
            proptest::prop_assert!(!shown.chars().any(char::is_control), "{:?}", shown);
        }
    }
}
