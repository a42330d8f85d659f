//! TOML errors an admin can act on without their secrets: where (the path of keys, line and
//! column) and what, never the source line or a value — a config or users file may hold a
//! password on any line, and `check-config` output ends up in the journal.

/// Deserializes `text`, or says what is wrong with it in words that quote no value.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
        let key = e.path().to_string();
        describe_toml_error(text, e.inner(), &key)
    })
}

/// `key: message` at its line and column, with every quoted value cut out of the parser's
/// message. Key names stay (they are never secrets), so a typo is still named.
fn describe_toml_error(text: &str, e: &toml::de::Error, key: &str) -> String {
    let message = e.message().trim();
    let about_a_key = ["unknown field", "missing field", "duplicate key"].iter().any(|p| message.starts_with(p));
    let message = if about_a_key {
        message.to_owned()
    } else if let Some(rest) = message.strip_prefix("unknown variant ") {
        // "unknown variant `chalenge`, expected `append`, ...": the choices help, the value may not be shown.
        match rest.split_once(", ") {
            Some((_, expected)) => format!("unknown variant `…`, {expected}"),
            None => "unknown variant `…`".to_owned(),
        }
    } else {
        elide_values(message)
    };
    // "." when the error is not under a key (a syntax error); keys are never secrets.
    let message = if key.is_empty() || key == "." || about_a_key { message } else { format!("{key}: {message}") };
    let Some(span) = e.span() else { return format!("TOML parse error: {message}") };
    let mut start = span.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let before = &text[..start];
    let line_no = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    format!("TOML parse error at line {line_no}, column {column}: {message}")
}

/// The parser's message with anything in backticks or double quotes cut out (it may quote a value).
fn elide_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut open: Option<char> = None;
    for c in message.chars() {
        match open {
            Some(quote) if c == quote => {
                out.push('…');
                out.push(c);
                open = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '`' || c == '"' {
                    open = Some(c);
                }
            }
        }
    }
    if open.is_some() {
        out.push('…');
    }
    out
}
