//! Ring size: the equal-cores vhost case (one flowgen testpmd with both virtio-user
//! ports on core 1, ringswitch `--workers 1` on core 0) with virtio-user's rings 256
//! entries long (its default, and QEMU's) against 1024 (the most QEMU's
//! `rx_queue_size`/`tx_queue_size` allow), the two interleaved in each run (A B, then
//! B A). A longer ring absorbs longer scheduling gaps of either side before frames are
//! dropped, at the cost of more descriptors and buffers in the cache.

use anyhow::Result;

use super::results::Results;
use super::vhost::{self, Case, Frontend, Placement, Switch};
use super::Ctx;

/// The ring sizes compared.
pub const SIZES: [u16; 2] = [256, 1024];
/// Frame lengths measured.
pub const LENS: [u32; 2] = [64, 1500];

/// Results key of one figure.
pub fn key(len: u32, size: u16) -> String {
    format!("qsize/{len}/{size}")
}

pub fn phase(ctx: &Ctx, r: &mut Results) -> Result<()> {
    for len in LENS {
        for run in 0..ctx.runs {
            let mut order = SIZES;
            if run % 2 == 1 {
                order.reverse();
            }
            for size in order {
                let key = key(len, size);
                let label = format!("ringswitch, {len} B, equal cores, queue_size={size}");
                eprintln!("bench: {label} (run {}/{})", run + 1, ctx.runs);
                let case = Case {
                    frontend: Frontend::Pair,
                    switch: Switch::Ringswitch { workers: 1 },
                    placement: Placement::Equal,
                    frame_len: len,
                    queues: 1,
                    queue_size: Some(size),
                    packed: false,
                    third_port: false,
                };
                match vhost::run_once(ctx, case, false) {
                    Ok(o) => {
                        r.add(&key, &label, "Mpps", o.mpps, &o.commands);
                        if let Some(d) = o.delta {
                            r.add(
                                &format!("{key}/drops"),
                                &format!("{label}: ringswitch's counted drops per second"),
                                "drops/s",
                                d.drops as f64 / d.secs.max(1e-9),
                                &o.commands,
                            );
                        }
                    }
                    Err(e) => {
                        super::proc::check_interrupted()?;
                        eprintln!("bench:   failed: {e:#}");
                        r.fail(&key, &label, "Mpps", &format!("{e:#}"), &[]);
                    }
                }
            }
        }
    }
    Ok(())
}

/// The report section, when the phase ran.
pub fn render(r: &Results) -> Option<String> {
    use super::report::cell;
    use super::stats::ratio;
    use std::fmt::Write as _;
    let s = |len, size| r.summary(&key(len, size));
    if LENS
        .iter()
        .all(|&l| SIZES.iter().all(|&q| s(l, q).is_none()))
    {
        return None;
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## 7. Ring size (virtio-user `queue_size`, equal cores, Mpps)\n\n\
         The equal-cores case of section 1 (ringswitch only) with both virtio-user ports' \
         rings {} or {} entries long (testpmd's `--rxd`/`--txd` the same), interleaved \
         within each run. Drops: ringswitch's counted drops per second.\n\n\
         | frames | {} | {} | {} / {} | drops/s {} | drops/s {} |\n|---|---|---|---|---|---|",
        SIZES[0], SIZES[1], SIZES[0], SIZES[1], SIZES[1], SIZES[0], SIZES[0], SIZES[1]
    );
    for len in LENS {
        let (a, b) = (s(len, SIZES[0]), s(len, SIZES[1]));
        let d = |q| cell(r.summary(&format!("{}/drops", key(len, q))));
        let _ = writeln!(
            md,
            "| {len} B | {} | {} | {} | {} | {} |",
            cell(a),
            cell(b),
            ratio(b, a).map_or("—".into(), |x| format!("{x:.2}×")),
            d(SIZES[0]),
            d(SIZES[1])
        );
    }
    Some(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_compares_the_sizes() {
        let mut r = Results::default();
        assert!(render(&r).is_none());
        r.add(&key(64, 256), "", "Mpps", 4.0, &[]);
        r.add(&key(64, 1024), "", "Mpps", 5.0, &[]);
        r.add(&format!("{}/drops", key(64, 1024)), "", "drops/s", 0.0, &[]);
        let md = render(&r).unwrap();
        assert!(md.contains("| 256 | 1024 | 1024 / 256 |"), "{md}");
        assert!(
            md.contains("| 64 B | 4.00 | 5.00 | 1.25× | — | 0.000 |"),
            "{md}"
        );
        assert!(md.contains("| 1500 B | — | — | — | — | — |"), "{md}");
    }
}
