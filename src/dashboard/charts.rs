//! Charts drawn on the server as inline SVG: bars (feature importance),
//! a ROC curve and a sparkline. Labels are escaped like any text.

use std::fmt::Write;

use super::html::esc;

/// Horizontal bars, largest first as given.
pub fn bars(items: &[(String, f64)]) -> String {
    let (label_w, bar_w, row_h) = (180.0, 360.0, 18.0);
    let max = items.iter().map(|(_, v)| v.abs()).fold(0.0, f64::max);
    let height = row_h * items.len() as f64 + 4.0;
    let mut svg = format!(
        "<svg role=\"img\" width=\"{}\" height=\"{height}\" viewBox=\"0 0 {} {height}\">",
        label_w + bar_w + 70.0,
        label_w + bar_w + 70.0
    );
    for (i, (label, value)) in items.iter().enumerate() {
        let y = i as f64 * row_h + 2.0;
        let w = if max > 0.0 {
            value.abs() / max * bar_w
        } else {
            0.0
        };
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{label_w}\" y=\"{y}\" width=\"{w:.1}\" height=\"{}\" fill=\"#4c78a8\"/>\
             <text x=\"{:.1}\" y=\"{}\">{value:.4}</text>",
            label_w - 6.0,
            y + 12.0,
            esc(label),
            row_h - 4.0,
            label_w + w + 4.0,
            y + 12.0,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A ROC curve from (false positive rate, recall) points.
pub fn roc(points: &[(f64, f64)]) -> String {
    let (size, pad) = (260.0, 30.0);
    let at = |fpr: f64, tpr: f64| (pad + fpr * size, pad / 2.0 + (1.0 - tpr) * size);
    let mut path = String::new();
    let (x0, y0) = at(0.0, 0.0);
    let _ = write!(path, "M{x0:.1},{y0:.1}");
    for &(fpr, tpr) in points {
        let (x, y) = at(fpr, tpr);
        let _ = write!(path, " L{x:.1},{y:.1}");
    }
    let (x1, y1) = at(1.0, 1.0);
    let _ = write!(path, " L{x1:.1},{y1:.1}");
    format!(
        "<svg role=\"img\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\
         <rect x=\"{pad}\" y=\"{top}\" width=\"{size}\" height=\"{size}\" fill=\"none\" stroke=\"#dde1e6\"/>\
         <line x1=\"{x0:.1}\" y1=\"{y0:.1}\" x2=\"{x1:.1}\" y2=\"{y1:.1}\" stroke=\"#bbb\" stroke-dasharray=\"4 4\"/>\
         <path d=\"{path}\" fill=\"none\" stroke=\"#e45756\" stroke-width=\"2\"/>\
         <text x=\"{mid}\" y=\"{bottom}\" text-anchor=\"middle\">false positive rate</text>\
         <text x=\"10\" y=\"{mid_y}\" transform=\"rotate(-90 10 {mid_y})\" text-anchor=\"middle\">recall</text></svg>",
        w = size + pad + 10.0,
        h = size + pad + 10.0,
        top = pad / 2.0,
        mid = pad + size / 2.0,
        bottom = size + pad + 5.0,
        mid_y = pad / 2.0 + size / 2.0,
    )
}

/// A small line of values (oldest first), with its last value.
pub fn sparkline(values: &[f64]) -> String {
    let (w, h) = (300.0, 50.0);
    let max = values.iter().copied().fold(0.0, f64::max);
    let step = if values.len() > 1 {
        w / (values.len() - 1) as f64
    } else {
        0.0
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = if max > 0.0 {
                h - v / max * (h - 4.0)
            } else {
                h
            };
            format!("{:.1},{y:.1}", i as f64 * step)
        })
        .collect();
    format!(
        "<svg role=\"img\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\
         <polyline points=\"{}\" fill=\"none\" stroke=\"#54a24b\" stroke-width=\"2\"/></svg>",
        points.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let svg = bars(&[("<script>".into(), 1.0), ("b".into(), 0.5)]);
        assert!(svg.contains("&lt;script&gt;") && !svg.contains("<script>"));
        assert!(roc(&[(0.0, 0.5), (1.0, 1.0)]).contains("<path d=\"M30.0,275.0 L30.0,145.0"));
        assert!(sparkline(&[0.0, 2.0]).contains("0.0,50.0 300.0,4.0"));
    }
}
