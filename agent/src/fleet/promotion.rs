//! Deciding a promotion: may wave W's tag move to the commit the previous wave's tag names
//! (for the first wave: the default branch, or a given commit)? Pure: the fleet view, the
//! freezes and `now` in, a [`Decision`] out; nothing is read or written here.
//!
//! Every cluster of the previous wave must have applied exactly that commit, be
//! `Converged`, and have stayed so for the previous wave's `soak`. The previous wave's
//! failure budget (`maxUnhealthy`) lets the promotion proceed past clusters that are
//! unreachable, `Failed` or `Blocked`, each named; nothing lets it pass a cluster that is
//! merely not done (progressing, at another commit, still soaking).
//!
//! Soak is judged on the agents' own times (`converged-since`, `last-pass`), so a clock
//! on this machine that is off does not matter, and an agent's clock that is off by up
//! to the stated tolerance cannot shorten the soak: a cluster has soaked for the longer
//! of `last-pass − converged-since` (one clock, the agent's) and
//! `now − converged-since − tolerance`. A `converged-since` more than the tolerance in
//! the future is refused as a clock problem.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tidemark_schema::fleet::FailureBudget;

use super::view::ClusterView;
use crate::desired::short;
use crate::plan::Phase;

/// What to decide.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The wave to promote.
    pub wave: &'a str,
    /// Its tag.
    pub tag: &'a str,
    /// The commit its tag names now.
    pub from: Option<&'a str>,
    /// The commit it is to name.
    pub to: &'a str,
    /// Where `to` comes from (`the commit of wave/canary`, `the head of main`).
    pub to_source: String,
    /// The wave before it, with its soak, failure budget and clusters; `None` for the
    /// first wave.
    pub previous: Option<Previous<'a>>,
    /// The freeze in force at `now`, if any: `(freezes, until)`.
    pub frozen: Option<(Vec<String>, Timestamp)>,
    /// Why a freeze is overridden (`--override-freeze --reason`).
    pub override_reason: Option<&'a str>,
    /// Tolerated difference between agents' clocks and this one.
    pub clock_skew: Duration,
    /// The time of the decision.
    pub now: Timestamp,
}

/// The wave before the one promoted.
#[derive(Clone, Debug)]
pub struct Previous<'a> {
    /// Its name.
    pub name: &'a str,
    /// How long its clusters must have stayed converged.
    pub soak: Duration,
    /// How many of them may be unhealthy.
    pub budget: FailureBudget,
    /// Its clusters as the fleet view shows them.
    pub clusters: &'a [ClusterView],
}

/// What was decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// The wave promoted.
    pub wave: String,
    /// Its tag.
    pub tag: String,
    /// The commit its tag named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The commit it is to name.
    pub to: String,
    /// Where that commit comes from.
    pub to_source: String,
    /// The previous wave, its soak and its budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousWave>,
    /// Every cluster of the previous wave and what was found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<Evidence>,
    /// The freeze in force, and whether it was overridden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<Freeze>,
    /// The verdict.
    pub verdict: Verdict,
}

/// The previous wave as judged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviousWave {
    /// Its name.
    pub name: String,
    /// Its soak.
    pub soak: String,
    /// Its failure budget as declared.
    pub max_unhealthy: String,
    /// How many clusters that allows.
    pub allowed_unhealthy: usize,
    /// The clock-skew tolerance applied.
    pub clock_skew: String,
}

/// A freeze in force at the decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Freeze {
    /// The freezes.
    pub freezes: Vec<String>,
    /// When it ends.
    pub until: Timestamp,
    /// Why it was overridden, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overridden: Option<String>,
}

/// One cluster of the previous wave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// The cluster.
    pub cluster: String,
    /// Its phase, or `Unreachable`.
    pub phase: String,
    /// The commit it applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
    /// Since when it has been converged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converged_since: Option<Timestamp>,
    /// How long it has soaked, in seconds, as judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soaked_seconds: Option<u64>,
    /// The verdict on it.
    pub verdict: ClusterVerdict,
    /// Every reason it is not ready (empty when ready).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// The verdict on one cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClusterVerdict {
    /// Applied the commit and soaked.
    Ready,
    /// Unreachable, `Failed` or `Blocked`, within the wave's failure budget.
    Tolerated,
    /// Unreachable, `Failed` or `Blocked`, beyond the budget.
    Unhealthy,
    /// Not done: progressing, at another commit, or soaking.
    NotReady,
}

/// The verdict on the promotion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum Verdict {
    /// The tag may move.
    Promote,
    /// The tag already names the commit: nothing to do.
    AlreadyThere,
    /// Refused, with every reason.
    Refused {
        /// The reasons, wave-level first.
        reasons: Vec<String>,
    },
}

/// Decides `request`.
pub fn decide(request: &Request<'_>) -> Decision {
    let mut decision = Decision {
        wave: request.wave.to_string(),
        tag: request.tag.to_string(),
        from: request.from.map(str::to_string),
        to: request.to.to_string(),
        to_source: request.to_source.clone(),
        previous: None,
        clusters: Vec::new(),
        freeze: request.frozen.as_ref().map(|(freezes, until)| Freeze {
            freezes: freezes.clone(),
            until: *until,
            overridden: request.override_reason.map(str::to_string),
        }),
        verdict: Verdict::Promote,
    };
    let mut reasons = Vec::new();
    if let Some(previous) = &request.previous {
        let allowed = previous.budget.allowed(previous.clusters.len());
        decision.previous = Some(PreviousWave {
            name: previous.name.to_string(),
            soak: tidemark_schema::Duration(previous.soak).to_string(),
            max_unhealthy: previous.budget.to_string(),
            allowed_unhealthy: allowed,
            clock_skew: tidemark_schema::Duration(request.clock_skew).to_string(),
        });
        decision.clusters = previous
            .clusters
            .iter()
            .map(|c| judge(c, request, previous.soak))
            .collect();
        let unhealthy = decision
            .clusters
            .iter()
            .filter(|e| e.verdict == ClusterVerdict::Unhealthy)
            .count();
        if unhealthy <= allowed {
            for e in &mut decision.clusters {
                if e.verdict == ClusterVerdict::Unhealthy {
                    e.verdict = ClusterVerdict::Tolerated;
                }
            }
        } else {
            reasons.push(format!(
                "{unhealthy} cluster(s) of wave {} are unreachable, Failed or Blocked; its failure budget (maxUnhealthy {}) allows {allowed}",
                previous.name, previous.budget
            ));
        }
        let not_ready = decision
            .clusters
            .iter()
            .filter(|e| e.verdict == ClusterVerdict::NotReady)
            .count();
        if not_ready > 0 {
            reasons.push(format!(
                "{not_ready} cluster(s) of wave {} have not applied {} and stayed Converged for its soak of {}",
                previous.name,
                short(request.to),
                tidemark_schema::Duration(previous.soak)
            ));
        }
    }
    if let Some(freeze) = &decision.freeze
        && freeze.overridden.is_none()
    {
        reasons.insert(
            0,
            format!(
                "promotions are frozen ({}) until {}; --override-freeze --reason TEXT overrides it, and the log records why",
                freeze.freezes.join(", "),
                seconds(freeze.until)
            ),
        );
    }
    decision.verdict = if request.from == Some(request.to) {
        Verdict::AlreadyThere
    } else if reasons.is_empty() {
        Verdict::Promote
    } else {
        Verdict::Refused { reasons }
    };
    decision
}

impl Decision {
    /// The decision as people read it: the move, the previous wave's clusters one per
    /// line with every reason, the freeze, and the verdict's reasons. Also the body of the
    /// tag message, so the tag records its evidence.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "promote {}: {} {} -> {} ({})\n",
            self.wave,
            self.tag,
            self.from.as_deref().map(short).unwrap_or("(none)"),
            short(&self.to),
            self.to_source
        );
        match &self.previous {
            None => out.push_str("first wave: no previous wave to check\n"),
            Some(p) => out.push_str(&format!(
                "previous wave {}: {} cluster(s), soak {}, maxUnhealthy {} ({} may be unhealthy), clock skew tolerated {}\n",
                p.name,
                self.clusters.len(),
                p.soak,
                p.max_unhealthy,
                p.allowed_unhealthy,
                p.clock_skew
            )),
        }
        let width = self
            .clusters
            .iter()
            .map(|e| e.cluster.len())
            .max()
            .unwrap_or(0);
        for e in &self.clusters {
            let what = match e.verdict {
                ClusterVerdict::Ready => format!(
                    "ready: Converged at {} since {}, soaked {}",
                    e.applied.as_deref().map(short).unwrap_or("?"),
                    e.converged_since.map(seconds).unwrap_or_default(),
                    tidemark_schema::Duration::from_secs(e.soaked_seconds.unwrap_or(0))
                ),
                ClusterVerdict::Tolerated => {
                    format!("tolerated (failure budget): {}", e.reasons.join("; "))
                }
                ClusterVerdict::Unhealthy => format!("UNHEALTHY: {}", e.reasons.join("; ")),
                ClusterVerdict::NotReady => format!("NOT READY: {}", e.reasons.join("; ")),
            };
            out.push_str(&format!("  {:<width$}  {what}\n", e.cluster));
        }
        if let Some(f) = &self.freeze {
            match &f.overridden {
                Some(reason) => out.push_str(&format!(
                    "freeze {} until {}: overridden: {reason}\n",
                    f.freezes.join(", "),
                    seconds(f.until)
                )),
                None => out.push_str(&format!(
                    "freeze {} in force until {}\n",
                    f.freezes.join(", "),
                    seconds(f.until)
                )),
            }
        }
        match &self.verdict {
            Verdict::Promote => out.push_str("verdict: promote\n"),
            Verdict::AlreadyThere => out.push_str(&format!(
                "verdict: nothing to do: {} already names {}\n",
                self.tag,
                short(&self.to)
            )),
            Verdict::Refused { reasons } => {
                out.push_str("verdict: refused\n");
                for r in reasons {
                    out.push_str(&format!("  - {r}\n"));
                }
            }
        }
        out
    }
}

/// `t` to the second, as people read it (`2026-11-24T10:00:00Z`).
pub fn seconds(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The evidence on one cluster of the previous wave.
fn judge(c: &ClusterView, request: &Request<'_>, soak: Duration) -> Evidence {
    let mut evidence = Evidence {
        cluster: c.name.clone(),
        phase: c.phase.clone(),
        applied: c.applied_revision.clone(),
        converged_since: c.converged_since,
        soaked_seconds: None,
        verdict: ClusterVerdict::Ready,
        reasons: Vec::new(),
    };
    if let Some(why) = &c.unreachable {
        evidence.verdict = ClusterVerdict::Unhealthy;
        evidence.reasons.push(format!("unreachable: {why}"));
        return evidence;
    }
    let Some(record) = &c.record else {
        evidence.verdict = ClusterVerdict::Unhealthy;
        evidence.reasons.push("no status record".into());
        return evidence;
    };
    let message = record.message.as_deref().unwrap_or_default();
    match record.phase {
        Some(phase @ (Phase::Failed | Phase::Blocked)) => {
            evidence.verdict = ClusterVerdict::Unhealthy;
            evidence.reasons.push(format!("{phase}: {message}"));
            return evidence;
        }
        Some(Phase::Converged) => {}
        Some(phase) => evidence.reasons.push(format!("{phase}: {message}")),
        None => evidence.reasons.push("its record has no phase".into()),
    }
    match record.applied_revision.as_deref() {
        Some(applied) if applied == request.to => {}
        Some(applied) => evidence.reasons.push(format!(
            "applied {}, not {}",
            short(applied),
            short(request.to)
        )),
        None => evidence.reasons.push(format!(
            "has not applied any commit yet, not {}",
            short(request.to)
        )),
    }
    if evidence.reasons.is_empty() {
        match record.converged_since {
            None => evidence
                .reasons
                .push("its record does not say since when it is Converged".into()),
            Some(since) => {
                let skew = jiff::SignedDuration::try_from(request.clock_skew).unwrap_or_default();
                let ahead = since.duration_since(request.now);
                if ahead > skew {
                    evidence.reasons.push(format!(
                        "its converged-since {} is {} ahead of this machine's clock, more than the {} tolerated: check the clocks",
                        seconds(since),
                        tidemark_schema::Duration::from_secs(ahead.as_secs().unsigned_abs()),
                        tidemark_schema::Duration(request.clock_skew)
                    ));
                } else {
                    let ours = request.now.duration_since(since) - skew;
                    let theirs = record
                        .last_pass
                        .map(|t| t.duration_since(since))
                        .unwrap_or_default();
                    let soaked = ours.max(theirs).max(jiff::SignedDuration::ZERO);
                    let soaked = soaked.as_secs().unsigned_abs();
                    evidence.soaked_seconds = Some(soaked);
                    if soaked < soak.as_secs() {
                        evidence.reasons.push(format!(
                            "Converged for {} of its soak of {}",
                            tidemark_schema::Duration::from_secs(soaked),
                            tidemark_schema::Duration(soak)
                        ));
                    }
                }
            }
        }
    }
    if !evidence.reasons.is_empty() {
        evidence.verdict = ClusterVerdict::NotReady;
    }
    evidence
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::reports::{Failure, Reports};
    use crate::fleet::view::tests::{layout, reported};
    use crate::fleet::view::{Origin, assess};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    const NOW: &str = "2026-11-24T10:30:00Z";

    /// Canary clusters a and b as reported; the decision to promote `main` to `c1`.
    fn decide_with(
        reports: Vec<crate::fleet::reports::Reported>,
        failures: Vec<Failure>,
        budget: FailureBudget,
        frozen: Option<(Vec<String>, Timestamp)>,
        override_reason: Option<&str>,
    ) -> Decision {
        let view = assess(
            &layout(),
            &Reports {
                records: reports,
                failures,
            },
            Origin::Kubeconfig,
            at(NOW),
        );
        let canary = view.wave("canary").unwrap_or_else(|| panic!("no canary"));
        decide(&Request {
            wave: "main",
            tag: "wave/main",
            from: Some("c0"),
            to: "c1",
            to_source: "the commit of wave/canary".into(),
            previous: Some(Previous {
                name: "canary",
                soak: Duration::from_secs(600),
                budget,
                clusters: &canary.clusters,
            }),
            frozen,
            override_reason,
            clock_skew: Duration::from_secs(30),
            now: at(NOW),
        })
    }

    fn converged(cluster: &str, applied: &str, since: &str) -> crate::fleet::reports::Reported {
        let mut r = reported(cluster, Phase::Converged, applied, "2026-11-24T10:29:00Z");
        r.record.converged_since = Some(at(since));
        r
    }

    fn reasons(d: &Decision) -> Vec<(String, ClusterVerdict, Vec<String>)> {
        d.clusters
            .iter()
            .map(|e| (e.cluster.clone(), e.verdict, e.reasons.clone()))
            .collect()
    }

    #[test]
    fn promotes_when_every_cluster_applied_the_commit_and_soaked() {
        let d = decide_with(
            vec![
                converged("a", "c1", "2026-11-24T10:10:00Z"),
                converged("b", "c1", "2026-11-24T10:19:00Z"),
            ],
            vec![],
            FailureBudget::Count(0),
            None,
            None,
        );
        assert_eq!(d.verdict, Verdict::Promote, "{d:?}");
        // b: 11m on this clock minus 30s of tolerance; its own clock says 10m.
        assert_eq!(d.clusters[1].soaked_seconds, Some(630));
    }

    #[test]
    fn refuses_listing_every_cluster_and_reason() {
        let mut progressing = reported("b", Phase::Progressing, "c0", "2026-11-24T10:29:00Z");
        progressing.record.message = Some("upgrade control plane 1.28.9 -> 1.29.8".into());
        let d = decide_with(
            vec![converged("a", "c1", "2026-11-24T10:25:00Z"), progressing],
            vec![],
            FailureBudget::Count(0),
            None,
            None,
        );
        assert_eq!(
            reasons(&d),
            [
                (
                    "a".to_string(),
                    ClusterVerdict::NotReady,
                    vec!["Converged for 4m30s of its soak of 10m".to_string()]
                ),
                (
                    "b".to_string(),
                    ClusterVerdict::NotReady,
                    vec![
                        "Progressing: upgrade control plane 1.28.9 -> 1.29.8".to_string(),
                        "applied c0, not c1".to_string()
                    ]
                ),
            ]
        );
        assert_eq!(
            d.verdict,
            Verdict::Refused {
                reasons: vec![
                    "2 cluster(s) of wave canary have not applied c1 and stayed Converged for its soak of 10m".into()
                ]
            }
        );
    }

    #[test]
    fn another_commit_is_not_ready_even_when_converged_long_ago() {
        let d = decide_with(
            vec![
                converged("a", "c1", "2026-11-24T09:00:00Z"),
                converged("b", "c0", "2026-11-24T09:00:00Z"),
            ],
            vec![],
            FailureBudget::Count(5),
            None,
            None,
        );
        assert_eq!(d.clusters[1].reasons, ["applied c0, not c1"]);
        assert!(
            matches!(d.verdict, Verdict::Refused { .. }),
            "a budget does not cover it"
        );
    }

    #[test]
    fn the_failure_budget_covers_unreachable_failed_and_blocked_clusters_only() {
        let failures = vec![Failure {
            via: "context b".into(),
            names: vec!["b".into()],
            reason: "connection refused".into(),
        }];
        let ok = vec![converged("a", "c1", "2026-11-24T09:00:00Z")];
        let d = decide_with(
            ok.clone(),
            failures.clone(),
            FailureBudget::Count(0),
            None,
            None,
        );
        assert_eq!(d.clusters[1].verdict, ClusterVerdict::Unhealthy);
        assert_eq!(
            d.verdict,
            Verdict::Refused {
                reasons: vec!["1 cluster(s) of wave canary are unreachable, Failed or Blocked; its failure budget (maxUnhealthy 0) allows 0".into()]
            }
        );
        let d = decide_with(
            ok.clone(),
            failures.clone(),
            FailureBudget::Count(1),
            None,
            None,
        );
        assert_eq!(d.verdict, Verdict::Promote);
        assert_eq!(d.clusters[1].verdict, ClusterVerdict::Tolerated);
        assert_eq!(
            d.clusters[1].reasons,
            ["unreachable: context b: connection refused"]
        );
        // 50% of two clusters is one.
        let d = decide_with(ok, failures, FailureBudget::Percent(50), None, None);
        assert_eq!(d.verdict, Verdict::Promote);
        let blocked = vec![
            converged("a", "c1", "2026-11-24T09:00:00Z"),
            reported("b", Phase::Blocked, "c0", "2026-11-24T10:29:00Z"),
        ];
        let d = decide_with(blocked, vec![], FailureBudget::Count(1), None, None);
        assert_eq!(d.verdict, Verdict::Promote);
        assert_eq!(d.clusters[1].verdict, ClusterVerdict::Tolerated);
    }

    #[test]
    fn a_clock_far_ahead_is_refused_and_a_little_ahead_is_tolerated() {
        let d = decide_with(
            vec![
                converged("a", "c1", "2026-11-24T10:31:00Z"),
                converged("b", "c1", "2026-11-24T10:30:20Z"),
            ],
            vec![],
            FailureBudget::Count(0),
            None,
            None,
        );
        assert!(
            d.clusters[0].reasons[0].contains("ahead of this machine's clock"),
            "{d:?}"
        );
        assert_eq!(
            d.clusters[1].reasons,
            ["Converged for 0s of its soak of 10m"]
        );
    }

    #[test]
    fn a_freeze_refuses_until_overridden_and_says_when_it_ends() {
        let ok = vec![
            converged("a", "c1", "2026-11-24T09:00:00Z"),
            converged("b", "c1", "2026-11-24T09:00:00Z"),
        ];
        let frozen = Some((vec!["year-end".to_string()], at("2027-01-04T00:00:00Z")));
        let d = decide_with(
            ok.clone(),
            vec![],
            FailureBudget::Count(0),
            frozen.clone(),
            None,
        );
        assert_eq!(
            d.verdict,
            Verdict::Refused {
                reasons: vec!["promotions are frozen (year-end) until 2027-01-04T00:00:00Z; --override-freeze --reason TEXT overrides it, and the log records why".into()]
            }
        );
        let d = decide_with(
            ok,
            vec![],
            FailureBudget::Count(0),
            frozen,
            Some("hotfix CVE-1"),
        );
        assert_eq!(d.verdict, Verdict::Promote);
        assert_eq!(
            d.freeze.and_then(|f| f.overridden),
            Some("hotfix CVE-1".to_string())
        );
    }

    #[test]
    fn the_first_wave_needs_no_evidence_and_a_tag_already_there_moves_nowhere() {
        let request = Request {
            wave: "canary",
            tag: "wave/canary",
            from: Some("c1"),
            to: "head",
            to_source: "the head of main".into(),
            previous: None,
            frozen: None,
            override_reason: None,
            clock_skew: Duration::from_secs(30),
            now: at(NOW),
        };
        assert_eq!(decide(&request).verdict, Verdict::Promote);
        let there = Request {
            to: "c1",
            ..request
        };
        assert_eq!(decide(&there).verdict, Verdict::AlreadyThere);
    }
}
