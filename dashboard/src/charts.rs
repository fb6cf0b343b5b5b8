//! Charts as SVG, drawn on the server by plotters: nothing to fetch, nothing from another
//! site, and the page works without JavaScript.

use plotters::prelude::*;

/// One line of a chart.
pub struct Series<'a> {
    pub name: &'a str,
    pub values: Vec<f64>,
}

const COLORS: [RGBColor; 5] = [
    RGBColor(0x25, 0x63, 0xeb),
    RGBColor(0xea, 0x58, 0x0c),
    RGBColor(0x16, 0xa3, 0x4a),
    RGBColor(0x93, 0x33, 0xea),
    RGBColor(0x64, 0x74, 0x8b),
];

const SIZE: (u32, u32) = (720, 300);

fn upper(max: f64) -> f64 {
    if max <= 0.0 { 1.0 } else { max * 1.1 }
}

/// A compact number for an axis: 1200 → 1.2k.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// The SVG `draw` makes, as markup for a page (plotters escapes the text it draws); empty
/// (and a log line) if plotters fails.
fn render(draw: impl FnOnce(&mut String) -> Result<(), String>) -> maud::Markup {
    let mut svg = String::new();
    match draw(&mut svg) {
        Ok(()) => maud::PreEscaped(svg),
        Err(e) => {
            tracing::error!(error = %e, "chart failed");
            maud::PreEscaped(String::new())
        }
    }
}

/// Lines over labelled x positions (days, seconds).
pub fn lines(labels: &[String], series: &[Series<'_>]) -> maud::Markup {
    render(|svg| draw_lines(svg, labels, series).map_err(|e| e.to_string()))
}

fn draw_lines<'a>(
    svg: &'a mut String,
    labels: &[String],
    series: &[Series<'_>],
) -> Result<(), Box<dyn std::error::Error + 'a>> {
    let n = labels.len().max(2);
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0, f64::max);
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..(n - 1) as f64, 0f64..upper(max))?;
    chart
        .configure_mesh()
        .x_labels(labels.len().clamp(2, 7))
        .y_labels(6)
        .x_label_formatter(&|x| {
            let i = x.round() as usize;
            if (x - x.round()).abs() < 1e-6 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| short(*y))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (k, s) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                s.values.iter().enumerate().map(|(i, v)| (i as f64, *v)),
                color.stroke_width(2),
            ))?
            .label(s.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.2))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Horizontal-axis bars, one per label (a funnel's steps).
pub fn bars(labels: &[String], values: &[f64]) -> maud::Markup {
    render(|svg| draw_bars(svg, labels, values).map_err(|e| e.to_string()))
}

fn draw_bars<'a>(
    svg: &'a mut String,
    labels: &[String],
    values: &[f64],
) -> Result<(), Box<dyn std::error::Error + 'a>> {
    let n = values.len().max(1);
    let max = values.iter().copied().fold(0.0, f64::max);
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..n as f64, 0f64..upper(max))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x.fract() - 0.5).abs() < 1e-6 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| short(*y))
        .draw()?;
    chart.draw_series(values.iter().enumerate().map(|(i, v)| {
        Rectangle::new(
            [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)],
            COLORS[0].filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_by_plotters() {
        let labels = vec!["<script>&".to_string(), "b".to_string()];
        let svg = bars(&labels, &[1.0, 2.0]).into_string();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;&amp;"), "{svg}");
    }

    #[test]
    fn draws_svg_with_labels() {
        let labels: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let svg = lines(
            &labels,
            &[
                Series {
                    name: "dau",
                    values: vec![1.0, 5.0, 3.0],
                },
                Series {
                    name: "mau",
                    values: vec![2.0, 6.0, 4.0],
                },
            ],
        )
        .into_string();
        assert!(svg.starts_with("<svg"), "{svg}");
        // The legend names both series; each is a line in its own colour.
        assert!(svg.contains("\ndau\n") && svg.contains("\nmau\n"), "{svg}");
        assert_eq!(
            svg.matches(
                "<polyline fill=\"none\" opacity=\"1\" stroke=\"#2563EB\" stroke-width=\"2\""
            )
            .count(),
            2,
            "{svg}"
        );
        assert!(svg.contains("stroke=\"#EA580C\""), "{svg}");
        let svg = bars(&labels, &[10.0, 6.0, 2.0]).into_string();
        assert!(svg.contains("\nb\n"), "{svg}");
        assert_eq!(svg.matches("fill=\"#2563EB\"").count(), 3, "{svg}");
        assert_eq!(short(1234.0), "1.2k");
        assert_eq!(short(3_500_000.0), "3.5M");
    }
}
