//! JSON strings written by hand: the layer's few JSON answers need no serializer.

use std::fmt::Write as _;

/// Writes `value` as a JSON string that is also safe inside an HTML `<script>` element and in
/// JavaScript source (no `<`, `>`, `&`, U+2028 or U+2029 left as such).
pub(crate) fn push_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\'' | '\u{2028}' | '\u{2029}' | '\0'..='\u{1f}' | '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::push_string as json_string;

    #[test]
    fn json_strings_are_escaped_for_script_and_html() {
        let mut out = String::new();
        json_string(&mut out, "/a\"b\\c</script>&'\u{2028}\n\u{1}é");
        assert_eq!(
            out,
            "\"/a\\\"b\\\\c\\u003c/script\\u003e\\u0026\\u0027\\u2028\\n\\u0001é\""
        );
    }
}
