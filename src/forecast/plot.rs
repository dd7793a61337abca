//! The picture of a backtest: actual values against the chosen model's forecasts and their interval band, as SVG.

use plotters::prelude::*;

use super::{Forecast, ForecastError};

/// What to draw: the actuals over the plotted range and the forecasts made inside it.
#[derive(Debug, Clone)]
pub struct PlotInput<'a> {
    /// The series name, used as the title.
    pub title: &'a str,
    /// The whole series; only the part from `from` is drawn.
    pub actual: &'a [f64],
    /// The first index drawn (a little before the first forecast, for context).
    pub from: usize,
    /// Forecasts whose `origin` indexes into `actual`.
    pub forecasts: &'a [Forecast],
    /// The nominal coverage of the band, shown in the legend.
    pub coverage: f64,
}

/// Renders the plot as an SVG document. Its title, axes and legend need a system TrueType font
/// ([`crate::chart_font`]); without one it is an error that says so, since a plot without labels misleads.
pub fn render_svg(input: &PlotInput<'_>, width: u32, height: u32) -> Result<String, ForecastError> {
    if !crate::chart_font::register() {
        return Err(ForecastError::Plot(format!(
            "no TrueType font found for the plot's text (looked for {}); install one, such as Debian's fonts-dejavu-core",
            crate::chart_font::FONT_PATHS.join(", ")
        )));
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        draw(&root, input).map_err(|e| ForecastError::Plot(e.to_string()))?;
        root.present()
            .map_err(|e| ForecastError::Plot(e.to_string()))?;
    }
    Ok(svg)
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    input: &PlotInput<'_>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let end = input.actual.len();
    let from = input.from.min(end.saturating_sub(1));
    let shown = &input.actual[from..];
    let mut low = shown.iter().copied().fold(f64::INFINITY, f64::min);
    let mut high = shown.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    for f in input.forecasts {
        low = f.lower.iter().copied().fold(low, f64::min);
        high = f.upper.iter().copied().fold(high, f64::max);
    }
    if !low.is_finite() || !high.is_finite() || low == high {
        low -= 1.0;
        high += 1.0;
    }
    let pad = (high - low) * 0.05;
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("{}: actual vs forecast", input.title),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(from as f64..end as f64, (low - pad)..(high + pad))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("value")
        .light_line_style(WHITE.mix(0.0))
        .draw()?;

    let band = BLUE.mix(0.18);
    for (i, f) in input.forecasts.iter().enumerate() {
        let steps = f.point.len().min(end.saturating_sub(f.origin + 1));
        let mut polygon: Vec<(f64, f64)> = (0..steps)
            .map(|s| ((f.origin + 1 + s) as f64, f.upper[s]))
            .collect();
        polygon.extend(
            (0..steps)
                .rev()
                .map(|s| ((f.origin + 1 + s) as f64, f.lower[s])),
        );
        let drawn = chart.draw_series(std::iter::once(Polygon::new(polygon, band.filled())))?;
        if i == 0 {
            drawn
                .label(format!("{:.0} % interval", input.coverage * 100.0))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], band.filled()));
        }
    }
    chart
        .draw_series(LineSeries::new(
            shown
                .iter()
                .enumerate()
                .map(|(i, v)| ((from + i) as f64, *v)),
            BLACK.stroke_width(1),
        ))?
        .label("actual")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK));
    for (i, f) in input.forecasts.iter().enumerate() {
        let steps = f.point.len().min(end.saturating_sub(f.origin + 1));
        let drawn = chart.draw_series(LineSeries::new(
            (0..steps).map(|s| ((f.origin + 1 + s) as f64, f.point[s])),
            BLUE.stroke_width(1),
        ))?;
        if i == 0 {
            drawn
                .label(format!("forecast ({})", f.model))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
