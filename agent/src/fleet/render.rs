//! The fleet view and the promotion log as people read them: a table per wave, and one
//! paragraph per promotion. Pure: strings in, a string out; colour only when asked (the
//! command asks on a terminal without `NO_COLOR`).

use jiff::Timestamp;

use super::promote::LogEntry;
use super::promotion::seconds;
use super::view::{ClusterView, FleetView, Origin};
use crate::desired::short;

/// How to draw.
#[derive(Clone, Copy, Debug, Default)]
pub struct Style {
    /// ANSI colours for phases.
    pub color: bool,
    /// Longest message shown (0: whole).
    pub message_width: usize,
}

/// The fleet by wave, as a table.
pub fn table(view: &FleetView, style: Style) -> String {
    let mut out = String::new();
    let origin = match view.origin {
        Origin::Kubeconfig => "records read through kubeconfig contexts",
        Origin::Git => "records read from the status refs in git",
    };
    out.push_str(&format!(
        "fleet {} on {} at {} ({origin}, {})\n",
        view.fleet,
        view.branch,
        short(&view.commit),
        seconds(view.at)
    ));
    if view.paused {
        out.push_str(&paint(
            style,
            RED,
            "PAUSED: fleet.yaml spec.paused: true, no agent starts a new step\n",
        ));
    }
    if let Some(f) = &view.frozen {
        out.push_str(&paint(
            style,
            YELLOW,
            &format!(
                "FROZEN: {} until {}: tidemark promote refuses\n",
                f.freezes.join(", "),
                seconds(f.until)
            ),
        ));
    }
    let header = [
        "CLUSTER",
        "PHASE",
        "CONTROL PLANE",
        "AT TAG",
        "NODE GROUPS BEHIND",
        "UNHEALTHY COMPONENTS",
        "LAST PASS",
        "MESSAGE",
    ];
    let rows: Vec<(usize, [String; 8], &ClusterView)> = view
        .waves
        .iter()
        .enumerate()
        .flat_map(|(i, w)| w.clusters.iter().map(move |c| (i, row(c, view.at), c)))
        .collect();
    let mut widths = header.map(str::len);
    for (_, cells, _) in &rows {
        for (w, cell) in widths.iter_mut().zip(cells.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for (i, wave) in view.waves.iter().enumerate() {
        out.push('\n');
        let mut title = format!("WAVE {}", wave.name);
        if let Some(tag) = &wave.tag {
            title.push_str(&format!(
                "  {tag} -> {}",
                wave.commit.as_deref().map(short).unwrap_or("(no tag yet)")
            ));
        }
        if let Some(soak) = &wave.soak {
            title.push_str(&format!("  soak {soak}"));
        }
        if let Some(b) = &wave.max_unhealthy {
            title.push_str(&format!("  maxUnhealthy {b}"));
        }
        if let Some(d) = &wave.description {
            title.push_str(&format!("  ({d})"));
        }
        out.push_str(&title);
        out.push('\n');
        if wave.clusters.is_empty() {
            out.push_str("  (no clusters)\n");
            continue;
        }
        out.push_str(&line(&header.map(str::to_string), &widths, style, None));
        for (_, cells, cluster) in rows.iter().filter(|(w, _, _)| *w == i) {
            let mut cells = cells.clone();
            if style.message_width > 0 && cells[7].chars().count() > style.message_width {
                cells[7] = crate::bounded::head(&cells[7], style.message_width);
            }
            out.push_str(&line(&cells, &widths, style, Some(&cluster.phase)));
        }
    }
    for u in &view.unknown {
        out.push_str(&format!(
            "\nnot in git: cluster {} reported by {}\n",
            u.cluster, u.via
        ));
    }
    for u in &view.unread {
        out.push_str(&format!("\nunread: {}: {}\n", u.via, u.reason));
    }
    for n in &view.notes {
        out.push_str(&format!("\nnote: {n}\n"));
    }
    let total = view.clusters().count();
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for c in view.clusters() {
        *counts.entry(c.phase.as_str()).or_default() += 1;
    }
    let summary: Vec<String> = counts.iter().map(|(p, n)| format!("{n} {p}")).collect();
    out.push_str(&format!(
        "\n{total} cluster(s): {}\n",
        if summary.is_empty() {
            "none".to_string()
        } else {
            summary.join(", ")
        }
    ));
    out
}

fn row(c: &ClusterView, now: Timestamp) -> [String; 8] {
    let control_plane = match (&c.observed, c.declared) {
        (Some(o), Some(d)) if *o == d.to_string() => o.clone(),
        (Some(o), Some(d)) => format!("{o} -> {d}"),
        (Some(o), None) => o.clone(),
        (None, Some(d)) => format!("? -> {d}"),
        (None, None) => "-".into(),
    };
    let at_tag = match c.at_wave_tag {
        Some(true) => "yes".to_string(),
        Some(false) => c
            .applied_revision
            .as_deref()
            .map(|a| format!("no ({})", short(a)))
            .unwrap_or_else(|| "no".into()),
        None => "-".into(),
    };
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join("; ")
        }
    };
    let last_pass = match c.last_pass {
        Some(t) => format!("{} ago", age(now, t)),
        None => "-".into(),
    };
    let message = match (&c.unreachable, &c.message) {
        (Some(why), Some(m)) => format!("{why} (last: {m})"),
        (Some(why), None) => why.clone(),
        (None, Some(m)) => m.clone(),
        (None, None) => String::new(),
    };
    [
        c.name.clone(),
        c.phase.clone(),
        control_plane,
        at_tag,
        list(&c.node_groups_behind),
        list(&c.components_unhealthy),
        last_pass,
        message.replace('\n', " "),
    ]
}

/// `12s`, `4m`, `3h`, `2d`: how long ago `t` was.
pub fn age(now: Timestamp, t: Timestamp) -> String {
    let secs = now.duration_since(t).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn line(cells: &[String; 8], widths: &[usize; 8], style: Style, phase: Option<&str>) -> String {
    let mut out = String::from("  ");
    for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
        let last = i + 1 == cells.len();
        let padded = if last {
            cell.clone()
        } else {
            format!("{cell:<w$}  ")
        };
        match (i, phase) {
            (1, Some(p)) => out.push_str(&paint(style, phase_color(p), &padded)),
            _ => out.push_str(&padded),
        }
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

const RED: &str = "31";
const GREEN: &str = "32";
const YELLOW: &str = "33";
const BLUE: &str = "34";

fn phase_color(phase: &str) -> &'static str {
    match phase {
        "Converged" => GREEN,
        "Progressing" | "Waiting" => YELLOW,
        "Paused" => BLUE,
        _ => RED,
    }
}

fn paint(style: Style, color: &str, text: &str) -> String {
    if style.color {
        format!("\x1b[{color}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// The promotion log, newest first.
pub fn history(entries: &[(String, Result<LogEntry, String>)]) -> String {
    if entries.is_empty() {
        return "no promotion recorded yet (refs/tidemark/promotions is empty)\n".into();
    }
    let mut out = String::new();
    for (commit, entry) in entries {
        match entry {
            Ok(e) => {
                let d = &e.decision;
                out.push_str(&format!(
                    "{}  {}  {} {} -> {}  by {}{}\n",
                    seconds(e.at),
                    d.wave,
                    d.tag,
                    d.from.as_deref().map(short).unwrap_or("(none)"),
                    short(&d.to),
                    e.by,
                    e.signed_by
                        .as_deref()
                        .map(|k| format!(", signed by {k}"))
                        .unwrap_or_default()
                ));
                if let Some(p) = &d.previous {
                    let ready = d.clusters.iter().filter(|c| c.reasons.is_empty()).count();
                    out.push_str(&format!(
                        "    evidence: wave {} soak {}: {ready} of {} cluster(s) converged at {} and soaked",
                        p.name,
                        p.soak,
                        d.clusters.len(),
                        short(&d.to)
                    ));
                    let tolerated: Vec<&str> = d
                        .clusters
                        .iter()
                        .filter(|c| !c.reasons.is_empty())
                        .map(|c| c.cluster.as_str())
                        .collect();
                    if !tolerated.is_empty() {
                        out.push_str(&format!(
                            "; within its failure budget: {}",
                            tolerated.join(", ")
                        ));
                    }
                    out.push('\n');
                } else {
                    out.push_str(&format!("    first wave: {}\n", d.to_source));
                }
                if let Some(f) = &d.freeze
                    && let Some(reason) = &f.overridden
                {
                    out.push_str(&format!(
                        "    freeze {} overridden: {reason}\n",
                        f.freezes.join(", ")
                    ));
                }
            }
            Err(message) => out.push_str(&format!(
                "{}  (unreadable entry) {message}\n",
                short(commit)
            )),
        }
    }
    out
}
