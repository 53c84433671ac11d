//! Text from outside — notification payloads, database messages, anything a
//! client sent — reaches the log only through [`untrusted`]: quoted, with
//! newlines and terminal escapes escaped, and capped in length, so neither a
//! database role nor a client can forge log lines or drive the terminal of
//! whoever reads the log.

use std::fmt;

/// Most characters of one untrusted value written to the log.
pub const MAX_CHARS: usize = 200;

/// See [`untrusted`].
pub struct Untrusted<'a>(&'a str);

/// Wraps `text` for a log field (`payload = %untrusted(text)`): it prints as
/// a double-quoted string with control characters escaped (`\n`, `\u{1b}`),
/// cut after [`MAX_CHARS`] characters with the number of bytes left out.
pub fn untrusted(text: &str) -> Untrusted<'_> {
    Untrusted(text)
}

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cut = self
            .0
            .char_indices()
            .nth(MAX_CHARS)
            .map_or(self.0.len(), |(at, _)| at);
        f.write_str("\"")?;
        for c in self.0[..cut].chars() {
            write!(f, "{}", c.escape_debug())?;
        }
        f.write_str("\"")?;
        if cut < self.0.len() {
            write!(f, "…({} more bytes)", self.0.len() - cut)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
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

    proptest::proptest! {
        #[test]
        fn nothing_untrusted_prints_a_control_character(text in "\\PC*|[\\x00-\\x1f\\x7f-\\x9f]{0,50}") {
            let shown = untrusted(&text).to_string();
            proptest::prop_assert!(!shown.chars().any(char::is_control), "{:?}", shown);
        }
    }
}
