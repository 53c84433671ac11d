//! The plot of a run (SVG): the commit → client latency distribution, and
//! deliveries per second with the server's CPU over time.

use std::path::Path;

use plotters::prelude::*;

use super::Report;

pub fn draw(report: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(380);

    let buckets: Vec<&(f64, u64)> = report
        .latency_buckets
        .iter()
        .filter(|(_, c)| *c > 0)
        .collect();
    let max_ms = buckets.last().map_or(1.0, |(ms, _)| *ms);
    let max_count = buckets.iter().map(|(_, c)| *c).max().unwrap_or(1);
    let mut latency = ChartBuilder::on(&top)
        .caption(
            format!(
                "{:?}: commit → client latency (p50 {:.2} ms, p99 {:.2} ms, {} signals)",
                report.plan.scenario,
                report.latency.p50_ms,
                report.latency.p99_ms,
                report.latency.count
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (0.04f64..max_ms * 1.1).log_scale(),
            0u64..max_count + max_count / 10 + 1,
        )?;
    latency
        .configure_mesh()
        .x_desc("milliseconds (log scale)")
        .y_desc("signals")
        .draw()?;
    latency.draw_series(buckets.iter().map(|(upper, count)| {
        Rectangle::new(
            [(upper / 1.25, 0), (*upper, *count)],
            BLUE.mix(0.6).filled(),
        )
    }))?;

    let t_max = report.timeline.last().map_or(1.0, |s| s.t_s).max(1.0);
    let d_max = report
        .timeline
        .iter()
        .map(|s| s.deliveries_per_s)
        .fold(1.0, f64::max);
    let mut rate = ChartBuilder::on(&bottom)
        .caption(
            "deliveries per second (blue) and server CPU % of one core (red, right axis)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .right_y_label_area_size(50)
        .build_cartesian_2d(0f64..t_max, 0f64..d_max * 1.1)?
        .set_secondary_coord(0f64..t_max, 0f64..200f64);
    rate.configure_mesh()
        .x_desc("seconds")
        .y_desc("deliveries/s")
        .draw()?;
    rate.configure_secondary_axes().y_desc("CPU %").draw()?;
    rate.draw_series(LineSeries::new(
        report.timeline.iter().map(|s| (s.t_s, s.deliveries_per_s)),
        BLUE.stroke_width(2),
    ))?;
    rate.draw_secondary_series(LineSeries::new(
        report
            .timeline
            .iter()
            .filter_map(|s| Some((s.t_s, s.server_cpu_percent?))),
        RED.stroke_width(2),
    ))?;
    root.present()?;
    Ok(())
}
