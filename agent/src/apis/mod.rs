//! What the Kubernetes API serves, by minor release: the API versions each minor removes
//! (the data file `removed-apis.txt`, from the upstream deprecation guide) and the built-in
//! group/versions a cluster of a minor serves by default (what `validate --render` and
//! `plan --offline` render charts for, having no cluster to ask).
//!
//! Pure: the data file is compiled in and parsed here; no I/O, no clock.
//!
//! - A removal names a group/version, the kinds it stops serving and the first minor that
//!   no longer serves them. A kind of a group/version is removed at most once.
//! - `removed-apis.txt` lists every minor from 1.22 to its last line, sorted; updating it
//!   for a new release is one line.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::LazyLock;

use tidemark_schema::KubeVersion;

/// The data file, compiled in.
const REMOVED_APIS: &str = include_str!("removed-apis.txt");

/// The first minor the data file must cover.
pub const FIRST_MINOR: u32 = 22;

/// One line of `removed-apis.txt`: a group/version whose kinds a minor stops serving.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removal {
    /// The first release that no longer serves them (minor only: `1.32`).
    pub removed_in: KubeVersion,
    /// `group/version` (`flowcontrol.apiserver.k8s.io/v1beta3`), or `version` for the core
    /// group.
    pub group_version: String,
    /// The kinds removed, sorted.
    pub kinds: Vec<String>,
    /// The group/version to migrate to, if there is one.
    pub replacement: Option<String>,
}

impl Removal {
    /// The API group (`""` for the core group).
    pub fn group(&self) -> &str {
        split_group_version(&self.group_version).0
    }

    /// The version (`v1beta3`).
    pub fn version(&self) -> &str {
        split_group_version(&self.group_version).1
    }
}

impl fmt::Display for Removal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is removed in {}",
            self.group_version, self.removed_in
        )?;
        if let Some(r) = &self.replacement {
            write!(f, "; use {r}")?;
        }
        Ok(())
    }
}

/// `(group, version)` of `group/version` (`("", "v1")` for `v1`).
pub fn split_group_version(api_version: &str) -> (&str, &str) {
    api_version.rsplit_once('/').unwrap_or(("", api_version))
}

/// A line of the data file that does not read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("removed-apis.txt:{line}: {message}")]
pub struct DataError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// The removals, in file order (by minor).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemovedApis {
    removals: Vec<Removal>,
    /// Minors with a line (removals or `-`), in file order.
    minors: Vec<u32>,
}

/// The compiled-in data. It is checked by the unit tests below, so the fallback to no
/// knowledge at all never happens in a released binary.
static BUILTIN: LazyLock<RemovedApis> =
    LazyLock::new(|| RemovedApis::parse(REMOVED_APIS).unwrap_or_default());

impl RemovedApis {
    /// The removals tidemark knows (`removed-apis.txt`).
    pub fn builtin() -> &'static RemovedApis {
        &BUILTIN
    }

    /// Reads the data file format (see the file's header).
    pub fn parse(text: &str) -> Result<Self, DataError> {
        let mut out = RemovedApis::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |message: String| DataError { line, message };
            let content = raw.split('#').next().unwrap_or_default().trim();
            if content.is_empty() {
                continue;
            }
            let fields: Vec<&str> = content.split_whitespace().collect();
            let minor = KubeVersion::parse_observed(fields[0])
                .ok()
                .filter(|v| v.patch.is_none() && v.major == 1)
                .ok_or_else(|| err(format!("`{}` is not a minor release (1.N)", fields[0])))?;
            if out.minors.last() != Some(&minor.minor) {
                out.minors.push(minor.minor);
            }
            match fields.as_slice() {
                [_, "-"] => {}
                [_, gv, kinds, replacement] => {
                    let kinds: Vec<String> = kinds.split(',').map(str::to_string).collect();
                    if kinds
                        .iter()
                        .any(|k| k.is_empty() || !k.starts_with(|c: char| c.is_ascii_uppercase()))
                    {
                        return Err(err(format!("`{}` is not a list of kinds", fields[2])));
                    }
                    if gv.is_empty() || gv.starts_with('/') || gv.ends_with('/') {
                        return Err(err(format!("`{gv}` is not a group/version")));
                    }
                    out.removals.push(Removal {
                        removed_in: minor,
                        group_version: (*gv).to_string(),
                        kinds,
                        replacement: (*replacement != "-").then(|| (*replacement).to_string()),
                    });
                }
                _ => {
                    return Err(err(
                        "expected `MINOR GROUP/VERSION KINDS REPLACEMENT` or `MINOR -`".into(),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Every removal, by minor.
    pub fn all(&self) -> &[Removal] {
        &self.removals
    }

    /// The removal of `kind` in `api_version`, whenever it happens.
    pub fn removal(&self, api_version: &str, kind: &str) -> Option<&Removal> {
        self.removals
            .iter()
            .find(|r| r.group_version == api_version && r.kinds.iter().any(|k| k == kind))
    }

    /// The removal of `kind` in `api_version` if it happens at or before `minor`: an object
    /// of that API cannot be served by a cluster of that minor.
    pub fn removed_by(
        &self,
        api_version: &str,
        kind: &str,
        minor: KubeVersion,
    ) -> Option<&Removal> {
        self.removal(api_version, kind)
            .filter(|r| minor.minor_gap(r.removed_in) >= 0)
    }

    /// Whether `group/version` still serves any kind at `minor` (a group/version not in the
    /// data file always does).
    fn group_version_served(&self, group_version: &str, minor: KubeVersion) -> bool {
        let mut removals = self
            .removals
            .iter()
            .filter(|r| r.group_version == group_version)
            .peekable();
        removals.peek().is_none() || removals.any(|r| r.removed_in.minor_gap(minor) > 0)
    }

    /// The minors the file has a line for, in order.
    pub fn minors(&self) -> &[u32] {
        &self.minors
    }
}

/// Group/versions a cluster serves by default, with the minor each was first served in.
/// Betas are served until the data file removes their last kind. (Versions off by default,
/// alpha and most newer betas, are not listed: a chart cannot count on them.)
#[rustfmt::skip]
const BUILTIN_GROUP_VERSIONS: &[(&str, u32)] = &[
    ("v1", 0),
    ("admissionregistration.k8s.io/v1", 16),
    ("admissionregistration.k8s.io/v1beta1", 9),
    ("apiextensions.k8s.io/v1", 16),
    ("apiextensions.k8s.io/v1beta1", 7),
    ("apiregistration.k8s.io/v1", 10),
    ("apiregistration.k8s.io/v1beta1", 7),
    ("apps/v1", 9),
    ("authentication.k8s.io/v1", 6),
    ("authentication.k8s.io/v1beta1", 3),
    ("authorization.k8s.io/v1", 6),
    ("authorization.k8s.io/v1beta1", 3),
    ("autoscaling/v1", 2),
    ("autoscaling/v2", 23),
    ("autoscaling/v2beta1", 8),
    ("autoscaling/v2beta2", 12),
    ("batch/v1", 2),
    ("batch/v1beta1", 8),
    ("certificates.k8s.io/v1", 19),
    ("certificates.k8s.io/v1beta1", 4),
    ("coordination.k8s.io/v1", 14),
    ("coordination.k8s.io/v1beta1", 12),
    ("discovery.k8s.io/v1", 21),
    ("discovery.k8s.io/v1beta1", 17),
    ("events.k8s.io/v1", 19),
    ("events.k8s.io/v1beta1", 8),
    ("extensions/v1beta1", 0),
    ("flowcontrol.apiserver.k8s.io/v1", 29),
    ("flowcontrol.apiserver.k8s.io/v1beta1", 20),
    ("flowcontrol.apiserver.k8s.io/v1beta2", 23),
    ("flowcontrol.apiserver.k8s.io/v1beta3", 26),
    ("networking.k8s.io/v1", 8),
    ("networking.k8s.io/v1beta1", 14),
    ("node.k8s.io/v1", 20),
    ("node.k8s.io/v1beta1", 14),
    ("policy/v1", 21),
    ("policy/v1beta1", 5),
    ("rbac.authorization.k8s.io/v1", 8),
    ("rbac.authorization.k8s.io/v1beta1", 6),
    ("scheduling.k8s.io/v1", 14),
    ("scheduling.k8s.io/v1beta1", 11),
    ("storage.k8s.io/v1", 6),
    ("storage.k8s.io/v1beta1", 4),
];

/// What a chart is rendered for on a cluster of `minor` that cannot be asked: the built-in
/// group/versions served at that minor, and `group/version/Kind` for each kind of the data
/// file still served then (charts test those with `.Capabilities.APIVersions.Has`).
pub fn served_api_versions(minor: KubeVersion, removed: &RemovedApis) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (gv, since) in BUILTIN_GROUP_VERSIONS {
        if i64::from(*since) > i64::from(minor.minor) || minor.major != 1 {
            continue;
        }
        if !removed.group_version_served(gv, minor) {
            continue;
        }
        out.insert((*gv).to_string());
        for r in removed.all().iter().filter(|r| r.group_version == *gv) {
            if r.removed_in.minor_gap(minor) > 0 {
                out.extend(r.kinds.iter().map(|k| format!("{gv}/{k}")));
            }
        }
    }
    out
}

/// Cluster-scoped kinds of the built-in groups.
#[rustfmt::skip]
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "ComponentStatus"), ("", "Namespace"), ("", "Node"), ("", "PersistentVolume"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("apiregistration.k8s.io", "APIService"),
    ("authentication.k8s.io", "SelfSubjectReview"), ("authentication.k8s.io", "TokenReview"),
    ("authorization.k8s.io", "SelfSubjectAccessReview"),
    ("authorization.k8s.io", "SelfSubjectRulesReview"),
    ("authorization.k8s.io", "SubjectAccessReview"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("networking.k8s.io", "IngressClass"),
    ("node.k8s.io", "RuntimeClass"),
    ("policy", "PodSecurityPolicy"),
    ("rbac.authorization.k8s.io", "ClusterRole"), ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("storage.k8s.io", "CSIDriver"), ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "StorageClass"), ("storage.k8s.io", "VolumeAttachment"),
];

/// Whether a kind of a built-in group is namespaced: `Some(false)` for the cluster-scoped
/// ones, `Some(true)` for the others, `None` for kinds of other groups (custom resources:
/// their CRD says).
pub fn builtin_namespaced(group: &str, kind: &str) -> Option<bool> {
    let builtin = BUILTIN_GROUP_VERSIONS
        .iter()
        .any(|(gv, _)| split_group_version(gv).0 == group);
    if !builtin {
        return None;
    }
    Some(!CLUSTER_SCOPED.contains(&(group, kind)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::v;

    #[test]
    fn the_data_file_parses_is_sorted_and_complete_back_to_1_22() {
        let data = match RemovedApis::parse(REMOVED_APIS) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        // Every minor from 1.22 to the last one listed, each once, in order.
        let minors = data.minors();
        let last = minors.last().copied().unwrap_or_default();
        assert!(last >= 32, "the file must reach at least 1.32: {minors:?}");
        assert_eq!(
            minors,
            (FIRST_MINOR..=last).collect::<Vec<_>>().as_slice(),
            "one run of lines per minor, 1.{FIRST_MINOR} to 1.{last}"
        );
        // Sorted by minor, then group/version, then kinds; kinds sorted within a line.
        let keys: Vec<(u32, &str, &[String])> = data
            .all()
            .iter()
            .map(|r| {
                (
                    r.removed_in.minor,
                    r.group_version.as_str(),
                    r.kinds.as_slice(),
                )
            })
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "lines must be sorted");
        for r in data.all() {
            let mut kinds = r.kinds.clone();
            kinds.sort();
            kinds.dedup();
            assert_eq!(
                kinds, r.kinds,
                "{}: kinds sorted, each once",
                r.group_version
            );
        }
        // A kind of a group/version is removed once.
        let mut seen = BTreeSet::new();
        for r in data.all() {
            for k in &r.kinds {
                assert!(
                    seen.insert((r.group_version.clone(), k.clone())),
                    "{} {k} removed twice",
                    r.group_version
                );
            }
        }
        // The builtin instance is this data.
        assert_eq!(RemovedApis::builtin(), &data);
    }

    #[test]
    fn the_removals_of_the_deprecation_guide_are_known() {
        let data = RemovedApis::builtin();
        let removed_in = |gv: &str, kind: &str| {
            data.removal(gv, kind)
                .map(|r| r.removed_in.to_string())
                .unwrap_or_default()
        };
        assert_eq!(
            removed_in("flowcontrol.apiserver.k8s.io/v1beta3", "FlowSchema"),
            "1.32"
        );
        assert_eq!(
            removed_in(
                "flowcontrol.apiserver.k8s.io/v1beta2",
                "PriorityLevelConfiguration"
            ),
            "1.29"
        );
        assert_eq!(
            removed_in("storage.k8s.io/v1beta1", "CSIStorageCapacity"),
            "1.27"
        );
        assert_eq!(removed_in("storage.k8s.io/v1beta1", "StorageClass"), "1.22");
        assert_eq!(removed_in("policy/v1beta1", "PodDisruptionBudget"), "1.25");
        assert_eq!(
            removed_in("autoscaling/v2beta2", "HorizontalPodAutoscaler"),
            "1.26"
        );
        assert_eq!(removed_in("extensions/v1beta1", "Ingress"), "1.22");
        assert_eq!(removed_in("apps/v1", "Deployment"), "");
        let fs = "flowcontrol.apiserver.k8s.io/v1beta3";
        assert!(data.removed_by(fs, "FlowSchema", v("1.31.4")).is_none());
        let r = data.removed_by(fs, "FlowSchema", v("1.32"));
        assert_eq!(
            r.map(ToString::to_string).as_deref(),
            Some(
                "flowcontrol.apiserver.k8s.io/v1beta3 is removed in 1.32; use flowcontrol.apiserver.k8s.io/v1"
            )
        );
        assert!(data.removed_by(fs, "FlowSchema", v("1.33.1")).is_some());
        assert_eq!(r.map(Removal::group), Some("flowcontrol.apiserver.k8s.io"));
        assert_eq!(split_group_version("v1"), ("", "v1"));
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, line) in [
            ("1.22 -\n1.x -\n", 2),
            ("1.22 a/v1 Kind\n", 1),
            ("1.22.3 -\n", 1),
            ("# c\n1.22 a/v1 lower -\n", 2),
        ] {
            assert_eq!(
                RemovedApis::parse(text).map_err(|e| e.line),
                Err(line),
                "{text}"
            );
        }
    }

    #[test]
    fn the_served_set_follows_the_minor() {
        let data = RemovedApis::builtin();
        let at = |minor: &str| served_api_versions(v(minor), data);
        let fc = "flowcontrol.apiserver.k8s.io";
        let s28 = at("1.28");
        assert!(s28.contains(&format!("{fc}/v1beta2")) && s28.contains(&format!("{fc}/v1beta3")));
        assert!(!s28.contains(&format!("{fc}/v1")));
        let s31 = at("1.31");
        assert!(
            s31.contains(&format!("{fc}/v1")) && s31.contains(&format!("{fc}/v1beta3/FlowSchema"))
        );
        assert!(!s31.contains(&format!("{fc}/v1beta2")));
        let s32 = at("1.32");
        assert!(!s32.contains(&format!("{fc}/v1beta3")));
        assert!(s32.contains("policy/v1") && s32.contains("apps/v1") && s32.contains("v1"));
        // storage.k8s.io/v1beta1 lost StorageClass in 1.22 and its last kind in 1.27.
        assert!(at("1.26").contains("storage.k8s.io/v1beta1/CSIStorageCapacity"));
        assert!(!at("1.26").contains("storage.k8s.io/v1beta1/StorageClass"));
        assert!(!at("1.27").contains("storage.k8s.io/v1beta1"));
    }

    #[test]
    fn built_in_kinds_know_their_scope() {
        assert_eq!(builtin_namespaced("", "ConfigMap"), Some(true));
        assert_eq!(builtin_namespaced("", "Namespace"), Some(false));
        assert_eq!(builtin_namespaced("apps", "Deployment"), Some(true));
        assert_eq!(
            builtin_namespaced("flowcontrol.apiserver.k8s.io", "FlowSchema"),
            Some(false)
        );
        assert_eq!(builtin_namespaced("cert-manager.io", "ClusterIssuer"), None);
        assert_eq!(
            builtin_namespaced("gateway.networking.k8s.io", "GatewayClass"),
            None
        );
    }
}
