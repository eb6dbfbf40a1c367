//! Dirty logging on and off: the datapath crate's criterion bench `dirty_log` (guest →
//! guest through the daemon's ports, data plane and glue, two in-process vhost-user
//! frontends; with the log on both negotiate LOG_ALL with a SET_LOG_BASE memfd log, as
//! QEMU does for a migration). testpmd's virtio-user cannot turn logging on, hence a
//! bench of its own instead of a testpmd case. Figures: frames/s per criterion sample,
//! for 64 and 1500-byte frames, log off and on.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Result};

use super::results::Results;

pub const LENS: [u32; 2] = [64, 1500];

pub fn key(len: u32, on: bool) -> String {
    format!(
        "dirtylog/dirty_log_{len}B/{}",
        if on { "log_on" } else { "log_off" }
    )
}

pub fn phase(root: &Path, secs: u64, r: &mut Results) -> Result<()> {
    let (warm, meas) = if secs <= 2 { ("0.5", "1") } else { ("1", "3") };
    let cmds = vec![super::run_criterion(
        "ringswitch-datapath",
        "dirty_log",
        warm,
        meas,
    )?];
    let dir = super::target_dir(root).join("criterion");
    let figs = super::micro::collect(&dir, &["dirty_log"])?;
    if figs.is_empty() {
        bail!("no dirty_log results under {}", dir.display());
    }
    for f in figs {
        let key = format!("dirtylog/{}", f.id);
        r.figures.retain(|x| x.key != key);
        for v in &f.rates {
            r.add(&key, &f.id, "Mframes/s", *v, &cmds);
        }
    }
    Ok(())
}

/// The report section, when the phase ran.
pub fn render(r: &Results) -> Option<String> {
    use super::report::cell;
    use super::stats::ratio;
    if LENS
        .iter()
        .all(|&l| r.summary(&key(l, false)).is_none() && r.summary(&key(l, true)).is_none())
    {
        return None;
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## 9. Dirty logging (VHOST_F_LOG_ALL) on and off (guest → guest, Mframes/s)\n\n\
         The datapath crate's criterion bench `dirty_log`: the daemon's ports, data plane \
         and glue with two in-process vhost-user frontends over memfd memory (testpmd's \
         virtio-user cannot log); *on* = both negotiated LOG_ALL with a SET_LOG_BASE memfd \
         log and VHOST_VRING_F_LOG, as during a migration. Median of the criterion samples \
         (min–max).\n\n\
         | frames | log off | log on | on / off |\n|---|---|---|---|"
    );
    for len in LENS {
        let (off, on) = (r.summary(&key(len, false)), r.summary(&key(len, true)));
        let _ = writeln!(
            md,
            "| {len} B | {} | {} | {} |",
            cell(off),
            cell(on),
            ratio(on, off).map_or("—".into(), |x| format!("{x:.2}×"))
        );
    }
    Some(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_shows_both_and_the_ratio() {
        let mut r = Results::default();
        assert!(render(&r).is_none());
        for v in [1.0, 1.2, 0.8] {
            r.add(&key(64, false), "", "Mframes/s", v, &[]);
            r.add(&key(64, true), "", "Mframes/s", v * 0.9, &[]);
        }
        let md = render(&r).unwrap();
        assert!(
            md.contains("| 64 B | 1.00 (0.800–1.20) | 0.900 (0.720–1.08) | 0.90× |"),
            "{md}"
        );
        assert!(md.contains("| 1500 B | — | — | — |"), "{md}");
        // Placed by the report after §8, as §9.
        assert!(md.contains("## 9. Dirty logging"), "{md}");
        assert!(super::super::report::extra_sections(&r).contains("## 9. Dirty logging"));
    }
}
