//! Keeping API keys out of text a container wrote (exit logs, health-check output, probe
//! errors) before it reaches a log line, an event or an error.

/// The redaction marker.
const REDACTED: &str = "<redacted>";

/// Names whose value is an API key wherever they appear as `NAME=value` or `NAME: value`
/// (compared case-insensitively; a suffix of letters, digits and `_` is allowed, so
/// `WAHA_API_KEY_PLAIN=…` counts too): WAHA's variables (`WAHA_API_KEY`, the older
/// `WHATSAPP_API_KEY`), its header `X-Api-Key` and query parameter `x-api-key`.
const KEY_NAMES: &[&str] = &["WAHA_API_KEY", "WHATSAPP_API_KEY", "X-API-KEY"];

/// `text` with each of `secrets` (the current key, secret environment values) and the value
/// of every key assignment (whatever the value: a container started with a key rotated since
/// prints the old one) replaced by `<redacted>`.
pub(super) fn scrub_text(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if text.contains(secret) {
            text = text.replace(secret, REDACTED);
        }
    }
    redact_assignments(&text)
}

/// [`scrub_text`] for each line.
pub(super) fn scrub_lines(lines: Vec<String>, secrets: &[&str]) -> Vec<String> {
    lines.iter().map(|line| scrub_text(line, secrets)).collect()
}

/// Replaces the value after each [`KEY_NAMES`] name followed by `=` or `:` (optionally quoted
/// and surrounded by spaces): the run of non-whitespace characters that follows, like
/// `(WAHA|WHATSAPP)_API_KEY\w*\s*[=:]\s*\S+`.
fn redact_assignments(text: &str) -> String {
    let upper = text.to_ascii_uppercase();
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut at = 0;
    while at < text.len() {
        let Some((name_end, value_start)) = KEY_NAMES
            .iter()
            .find_map(|name| assignment_at(&upper, bytes, at, name))
        else {
            at += 1;
            continue;
        };
        let value_end = bytes[value_start..]
            .iter()
            .position(u8::is_ascii_whitespace)
            .map_or(text.len(), |n| value_start + n);
        if value_end == value_start {
            at = name_end;
            continue;
        }
        out.push_str(&text[copied..value_start]);
        out.push_str(REDACTED);
        copied = value_end;
        at = value_end;
    }
    out.push_str(&text[copied..]);
    out
}

/// When `name` starts at byte `at` and is followed by an assignment: where the name (with its
/// suffix) ends and where the value starts.
fn assignment_at(upper: &str, bytes: &[u8], at: usize, name: &str) -> Option<(usize, usize)> {
    if !upper.is_char_boundary(at) || !upper[at..].starts_with(name) {
        return None;
    }
    let skip = |mut i: usize, pred: fn(&u8) -> bool| {
        while i < bytes.len() && pred(&bytes[i]) {
            i += 1;
        }
        i
    };
    let name_end = skip(at + name.len(), |b| b.is_ascii_alphanumeric() || *b == b'_');
    let i = skip(name_end, |b| matches!(b, b'"' | b'\''));
    let i = skip(i, |b| *b == b' ' || *b == b'\t');
    if !matches!(bytes.get(i), Some(b'=' | b':')) {
        return None;
    }
    Some((name_end, skip(i + 1, |b| *b == b' ' || *b == b'\t')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_occurrence_of_each_secret() {
        let lines = vec![
            "WAHA_API_KEY=s3cret-key-0123456789 and again s3cret-key-0123456789".to_owned(),
            "dashboard password hunter2-dash, clean".to_owned(),
        ];
        assert_eq!(
            scrub_lines(lines, &["s3cret-key-0123456789", "hunter2-dash", ""]),
            vec![
                "WAHA_API_KEY=<redacted> and again <redacted>".to_owned(),
                "dashboard password <redacted>, clean".to_owned()
            ]
        );
    }

    #[test]
    fn redacts_key_assignments_whatever_their_value() {
        let key = ["the-current-key-0123456789"];
        let cases = [
            (
                "config: WAHA_API_KEY=an-old-rotated-key-42 engine=NOWEB",
                "config: WAHA_API_KEY=<redacted> engine=NOWEB",
            ),
            (
                "WHATSAPP_API_KEY=older-name-key",
                "WHATSAPP_API_KEY=<redacted>",
            ),
            (
                "env waha_api_key = lower-case-key, done",
                "env waha_api_key = <redacted> done",
            ),
            (
                "WAHA_API_KEY_PLAIN=generated-key-xyz",
                "WAHA_API_KEY_PLAIN=<redacted>",
            ),
            (
                r#"{"WAHA_API_KEY": "json-key"}"#,
                r#"{"WAHA_API_KEY": <redacted>"#,
            ),
            (
                "curl: -H X-Api-Key: header-key http://x/health",
                "curl: -H X-Api-Key: <redacted> http://x/health",
            ),
            (
                "GET /api/sessions?x-api-key=query-key failed",
                "GET /api/sessions?x-api-key=<redacted> failed",
            ),
            (
                "a=WAHA_API_KEY=one b=WHATSAPP_API_KEY=two",
                "a=WAHA_API_KEY=<redacted> b=WHATSAPP_API_KEY=<redacted>",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(scrub_text(input, &key), want, "{input}");
        }
    }

    #[test]
    fn leaves_mentions_without_a_value_and_other_text_alone() {
        let key = [""];
        for text in [
            "WAHA_API_KEY is not set",
            "WAHA_API_KEY=",
            "WAHA_NO_API_KEY=true",
            "ünïcödé WAHA_API_KEY",
            "",
        ] {
            assert_eq!(scrub_text(text, &key), text);
        }
        assert_eq!(
            scrub_text("ü WAHA_API_KEY=ß-key ü", &key),
            "ü WAHA_API_KEY=<redacted> ü"
        );
    }
}
