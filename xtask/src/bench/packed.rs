//! Packed virtqueues (virtio 1.2 §2.8): the equal-cores vhost case (one flowgen testpmd
//! with both virtio-user ports on core 1, the switch alone on core 0) with split rings
//! against packed ones (`packed_vq=1` on virtio-user, `packed=on` on ringswitch's
//! ports), and ringswitch's packed rings against testpmd's vhost on packed rings; the
//! cases interleaved in each run (the order reversed every other run).

use anyhow::Result;

use super::results::Results;
use super::vhost::{self, Case, Frontend, Placement, Switch};
use super::Ctx;

/// Frame lengths measured.
pub const LENS: [u32; 2] = [64, 1500];

/// (switch, packed) of each case, in run order.
const CASES: [(Switch, bool); 3] = [
    (Switch::Ringswitch { workers: 1 }, false),
    (Switch::Ringswitch { workers: 1 }, true),
    (Switch::Testpmd, true),
];

fn name(sw: Switch) -> &'static str {
    match sw {
        Switch::Ringswitch { .. } => "ringswitch",
        Switch::Testpmd => "testpmd",
    }
}

/// Results key of one figure.
pub fn key(len: u32, sw: &str, packed: bool) -> String {
    format!(
        "packed/{len}/{sw}/{}",
        if packed { "packed" } else { "split" }
    )
}

pub fn phase(ctx: &Ctx, r: &mut Results) -> Result<()> {
    for len in LENS {
        for run in 0..ctx.runs {
            let mut order = CASES;
            if run % 2 == 1 {
                order.reverse();
            }
            for (sw, packed) in order {
                let key = key(len, name(sw), packed);
                let ring = if packed { "packed" } else { "split" };
                let label = format!("{}, {len} B, equal cores, {ring} rings", name(sw));
                eprintln!("bench: {label} (run {}/{})", run + 1, ctx.runs);
                let case = Case {
                    frontend: Frontend::Pair,
                    switch: sw,
                    placement: Placement::Equal,
                    frame_len: len,
                    queues: 1,
                    queue_size: None,
                    packed,
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
    let s = |len, sw, packed| r.summary(&key(len, sw, packed));
    if LENS
        .iter()
        .all(|&l| CASES.iter().all(|&(sw, p)| s(l, name(sw), p).is_none()))
    {
        return None;
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## 10. Packed virtqueues (equal cores, Mpps)\n\n\
         The equal-cores case of section 1 with split rings and with packed rings \
         (virtio-user `packed_vq=1`, ringswitch ports `packed=on`), and testpmd's vhost \
         on packed rings, interleaved within each run. Drops: ringswitch's counted drops \
         per second on packed rings.\n\n\
         | frames | ringswitch split | ringswitch packed | packed / split | testpmd packed | \
         ringswitch / testpmd (packed) | drops/s packed |\n|---|---|---|---|---|---|---|"
    );
    for len in LENS {
        let (a, b, t) = (
            s(len, "ringswitch", false),
            s(len, "ringswitch", true),
            s(len, "testpmd", true),
        );
        let x = |v: Option<f64>| v.map_or("—".into(), |x| format!("{x:.2}×"));
        let _ = writeln!(
            md,
            "| {len} B | {} | {} | {} | {} | {} | {} |",
            cell(a),
            cell(b),
            x(ratio(b, a)),
            cell(t),
            x(ratio(b, t)),
            cell(r.summary(&format!("{}/drops", key(len, "ringswitch", true))))
        );
    }
    Some(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_compares_ring_kinds_and_switches() {
        let mut r = Results::default();
        assert!(render(&r).is_none());
        r.add(&key(64, "ringswitch", false), "", "Mpps", 4.0, &[]);
        r.add(&key(64, "ringswitch", true), "", "Mpps", 5.0, &[]);
        r.add(&key(64, "testpmd", true), "", "Mpps", 10.0, &[]);
        let md = render(&r).unwrap();
        assert!(md.contains("## 10. Packed virtqueues"), "{md}");
        assert!(
            md.contains("| 64 B |") && md.contains("1.25×") && md.contains("0.50×"),
            "{md}"
        );
        assert!(md.contains("| 1500 B | — |"), "{md}");
    }
}
