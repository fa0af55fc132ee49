//! HTML pieces of the dashboard. Every value from the database or a
//! client passes through `esc` (text and attributes alike); the page has
//! no script, and its Content-Security-Policy allows none.

use std::fmt::Write;

use crate::admin::table::Table;

/// Text or attribute value, escaped.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query-string component, percent-encoded (everything but unreserved).
pub fn url_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// The project page's address.
pub fn project_href(database: &str, project: &str) -> String {
    format!(
        "/project?db={}&amp;name={}",
        url_component(database),
        url_component(project)
    )
}

/// A number as the dashboard shows it: four decimals, integers as they are.
pub fn number(text: &str) -> String {
    match text.parse::<f64>() {
        Ok(v) if text.contains(['.', 'e', 'E']) && v.is_finite() => format!("{v:.4}"),
        _ => text.to_string(),
    }
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}
header{background:#1d2430;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:baseline}
header a{color:#fff;text-decoration:none;font-weight:600}
main{max-width:1280px;margin:0 auto;padding:8px 24px 40px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px 16px;margin:16px 0;overflow-x:auto}
h1{font-size:22px;margin:16px 0 4px}h2{font-size:16px;margin:0 0 8px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 10px;border-bottom:1px solid #eef0f3;white-space:nowrap}
th{font-weight:600;color:#5a6473;font-size:12px;text-transform:uppercase}
td.n{text-align:right;font-variant-numeric:tabular-nums}
tr[data-drifted=true] td{background:#fdecea}
.muted{color:#6b7480}.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(380px,1fr));gap:16px}
svg text{font:11px system-ui,sans-serif;fill:#1d2430}
";

/// A whole page around `body`.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · pgmlcat</title><style>{STYLE}</style></head><body>\
         <header><a href=\"/\">pgmlcat</a><span class=\"muted\">{}</span></header>\
         <main>{body}</main></body></html>",
        esc(title),
        esc(env!("CARGO_PKG_VERSION"))
    )
}

/// An admin console table as HTML: `id` on the table, `key` names the
/// column whose value goes in each row's `data-<key_attr>`.
pub fn table(id: &str, t: &Table, key: Option<(&str, &[usize])>) -> String {
    let mut out = format!("<table id=\"{}\"><thead><tr>", esc(id));
    for name in t.column_names() {
        let _ = write!(out, "<th>{}</th>", esc(name));
    }
    out.push_str("</tr></thead><tbody>");
    for row in t.rows() {
        match key {
            Some((attr, cols)) => {
                let value: Vec<&str> = cols
                    .iter()
                    .map(|&c| row.get(c).and_then(|v| v.as_deref()).unwrap_or(""))
                    .collect();
                let _ = write!(out, "<tr data-{attr}=\"{}\">", esc(&value.join("/")));
            }
            None => out.push_str("<tr>"),
        }
        for (name, value) in t.column_names().zip(row) {
            out.push_str(&cell(name, value.as_deref()));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// One cell: numbers right-aligned with four decimals, NULL as a dash.
pub fn cell(column: &str, value: Option<&str>) -> String {
    match value {
        None => format!("<td data-col=\"{}\" class=\"muted\">–</td>", esc(column)),
        Some(v) if v.parse::<f64>().is_ok() => format!(
            "<td data-col=\"{}\" class=\"n\">{}</td>",
            esc(column),
            esc(&number(v))
        ),
        Some(v) => format!("<td data-col=\"{}\">{}</td>", esc(column), esc(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc(r#"<img src=x onerror="a('1')">&"#),
            "&lt;img src=x onerror=&quot;a(&#39;1&#39;)&quot;&gt;&amp;"
        );
        assert_eq!(url_component("a b/<é"), "a%20b%2F%3C%C3%A9");
        assert_eq!(number("0.912345678"), "0.9123");
        assert_eq!(number("42"), "42");
        assert_eq!(number("NaN"), "NaN");
    }
}
