//! PNG line charts for the replay report: one line per strategy, drawn with plotters' bitmap backend.
//!
//! Text needs a TrueType font; the first of a few usual system fonts found is used. Without one the charts are
//! still drawn, without title, axis labels or legend (the report names the colours instead).

use std::path::Path;

use plotters::prelude::*;

/// Colours of the lines, in the order of the strategies (the report's legend lists them too).
pub const COLOURS: [(&str, RGBColor); 8] = [
    ("blue", RGBColor(31, 119, 180)),
    ("orange", RGBColor(255, 127, 14)),
    ("green", RGBColor(44, 160, 44)),
    ("red", RGBColor(214, 39, 40)),
    ("purple", RGBColor(148, 103, 189)),
    ("brown", RGBColor(140, 86, 75)),
    ("pink", RGBColor(227, 119, 194)),
    ("grey", RGBColor(127, 127, 127)),
];

/// A chart that could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("drawing chart {path}: {detail}")]
pub struct ChartError {
    /// The file.
    pub path: String,
    /// What went wrong.
    pub detail: String,
}

/// One line of a chart.
pub struct Line<'a> {
    /// The legend label.
    pub label: &'a str,
    /// The points, x ascending.
    pub points: Vec<(f64, f64)>,
}

/// Draws `lines` (and a dashed horizontal `threshold`, if given) into a PNG at `path`.
pub fn lines_png(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    lines: &[Line<'_>],
    threshold: Option<(f64, &str)>,
) -> Result<(), ChartError> {
    let err = |detail: String| ChartError {
        path: path.display().to_string(),
        detail,
    };
    let text = crate::chart_font::register();
    let x_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(1.0_f64, f64::max);
    let y_max = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .chain(threshold.map(|t| t.0))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let root = BitMapBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(15);
    if text {
        builder
            .caption(title, ("sans-serif", 22))
            .x_label_area_size(40)
            .y_label_area_size(70);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| err(e.to_string()))?;
    if text {
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| err(e.to_string()))?;
    } else {
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_y_mesh()
            .x_labels(0)
            .y_labels(0)
            .draw()
            .map_err(|e| err(e.to_string()))?;
    }
    if let Some((y, label)) = threshold {
        let dashes = (0..100).map(|i| {
            let x0 = x_max * f64::from(i) / 100.0;
            PathElement::new(vec![(x0, y), (x0 + x_max / 200.0, y)], BLACK)
        });
        let series = chart.draw_series(dashes).map_err(|e| err(e.to_string()))?;
        if text {
            series
                .label(label)
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        }
    }
    for (i, line) in lines.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()].1;
        let series = chart
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?;
        if text {
            series.label(line.label).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_a_person_can_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lag.png");
        let lines = [
            Line {
                label: "a",
                points: vec![(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)],
            },
            Line {
                label: "b",
                points: vec![(0.0, 2.0), (2.0, 0.5)],
            },
        ];
        lines_png(
            &path,
            "lag",
            "minute",
            "ms",
            &lines,
            Some((2.5, "objective")),
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG", "a PNG file");
        assert!(
            bytes.len() > 2_000,
            "with something drawn: {} bytes",
            bytes.len()
        );
    }
}
