//! SVG bar charts of the figures: one bar per (category, series) at the median, a whisker
//! from min to max — the spread matters as much as the level on this noisy machine.
//! plotters' SVG backend writes text as SVG `<text>`, so no font files are needed.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::stats::Summary;

/// One bar.
#[derive(Debug, Clone)]
pub struct Bar {
    pub category: String,
    pub series: String,
    pub s: Summary,
}

const COLORS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
];

/// Writes a grouped bar chart to `path`. Categories and series keep their first-seen order.
pub fn bars(path: &Path, title: &str, unit: &str, data: &[Bar]) -> Result<()> {
    let mut cats: Vec<&str> = vec![];
    let mut series: Vec<&str> = vec![];
    for b in data {
        if !cats.contains(&b.category.as_str()) {
            cats.push(&b.category);
        }
        if !series.contains(&b.series.as_str()) {
            series.push(&b.series);
        }
    }
    if cats.is_empty() {
        return Ok(());
    }
    // Slots: each category has one slot per series plus a gap slot.
    let per = series.len() + 1;
    let slots = (cats.len() * per) as i32;
    let slot = |c: usize, s: usize| (c * per + s) as i32;
    let ymax = data
        .iter()
        .map(|b| b.s.max)
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.2;
    let labels: Vec<String> = (0..slots as usize)
        .map(|i| {
            if i % per == 0 {
                cats[i / per].to_string()
            } else {
                String::new()
            }
        })
        .collect();

    let width = (180 * cats.len() as u32).clamp(480, 1200);
    let root = SVGBackend::new(path, (width, 420)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| anyhow!("plotting {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((0..slots).into_segmented(), 0.0..ymax)
        .map_err(e)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(slots as usize)
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_desc(unit)
        .draw()
        .map_err(e)?;
    for (si, sname) in series.iter().enumerate() {
        let color = COLORS[si % COLORS.len()];
        let mine: Vec<(usize, Summary)> = data
            .iter()
            .filter(|b| b.series == *sname)
            .filter_map(|b| cats.iter().position(|c| *c == b.category).map(|c| (c, b.s)))
            .collect();
        chart
            .draw_series(mine.iter().map(|(c, s)| {
                let x = slot(*c, si);
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(x), 0.0),
                        (SegmentValue::Exact(x + 1), s.median),
                    ],
                    color.filled(),
                );
                r.set_margin(0, 0, 3, 3);
                r
            }))
            .map_err(e)?
            .label(*sname)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        chart
            .draw_series(mine.iter().map(|(c, s)| {
                let x = SegmentValue::CenterOf(slot(*c, si));
                PathElement::new(vec![(x.clone(), s.min), (x, s.max)], BLACK.stroke_width(2))
            }))
            .map_err(e)?;
        chart
            .draw_series(mine.iter().map(|(c, s)| {
                Text::new(
                    fmt_value(s.median),
                    (
                        SegmentValue::Exact(slot(*c, si)),
                        s.max.max(s.median) + ymax * 0.03,
                    ),
                    ("sans-serif", 12),
                )
            }))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

/// Three significant digits, no exponent for the usual ranges.
pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "–".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_labels() {
        let p = std::env::temp_dir().join(format!("xtask-plot-{}.svg", std::process::id()));
        let s = |v| Summary::of(&[v * 0.9, v, v * 1.1]).unwrap();
        let data = vec![
            Bar {
                category: "64 B".into(),
                series: "ringswitch".into(),
                s: s(1.5),
            },
            Bar {
                category: "64 B".into(),
                series: "testpmd".into(),
                s: s(2.0),
            },
            Bar {
                category: "1500 B".into(),
                series: "ringswitch".into(),
                s: s(1.0),
            },
        ];
        bars(&p, "vhost", "Mpps", &data).unwrap();
        let svg = std::fs::read_to_string(&p).unwrap();
        std::fs::remove_file(&p).unwrap();
        for needle in [
            "<svg",
            "64 B",
            "1500 B",
            "ringswitch",
            "testpmd",
            "Mpps",
            "1.50",
        ] {
            assert!(svg.contains(needle), "{needle} missing");
        }
    }

    #[test]
    fn value_formatting() {
        assert_eq!(fmt_value(1234.5), "1234");
        assert_eq!(fmt_value(12.345), "12.3");
        assert_eq!(fmt_value(1.2345), "1.23");
        assert_eq!(fmt_value(0.03), "0.030");
        assert_eq!(fmt_value(f64::NAN), "–");
    }
}
