//! API lifecycle as the real API server has it: which built-in group/versions a control
//! plane of a minor serves, which of those are deprecated, the `Warning` header a request
//! to a deprecated one gets, and the gauge `apiserver_requested_deprecated_apis` on
//! `/metrics`.
//!
//! - A group/version is served from its `introduced` minor until before its `removed` one
//!   (the sim's registry asks [`served`]); objects stay stored and are reached through the
//!   versions still served (as after a real upgrade).
//! - A request to a version deprecated at the current minor (`deprecated` <= minor <
//!   `removed`) answers with `Warning: 299 - "<gv> <Kind> is deprecated in v1.D+,
//!   unavailable in v1.R+; use <gv> <Kind>"` and sets the series
//!   `{group,version,resource,subresource,removed_release}` to 1, whatever the answer's
//!   code (kube-apiserver's `MonitorRequest`). Requests the server does not route (a
//!   version not served: 404) set nothing.
//! - The gauge lives in the API server process: a control-plane upgrade (a new server)
//!   starts it empty.
//! - `/metrics` answers the text exposition format (0.0.4) with that family only; a
//!   family without series is left out, as the Prometheus Go client leaves it out.

use std::collections::BTreeSet;

/// One group/version with a lifecycle (every other built-in one is served at every minor).
pub(crate) struct Lifecycle {
    pub group: &'static str,
    pub version: &'static str,
    /// First minor serving it.
    pub introduced: u32,
    /// First minor in which it is deprecated.
    pub deprecated: Option<u32>,
    /// First minor no longer serving it.
    pub removed: Option<u32>,
    /// What to use instead (a group/version of the same kinds).
    pub replacement: Option<&'static str>,
}

/// The lifecycles of the sim's built-in group/versions (Kubernetes'
/// `zz_generated.prerelease-lifecycle.go` of each type).
pub(crate) const LIFECYCLES: &[Lifecycle] = &[
    Lifecycle {
        group: "flowcontrol.apiserver.k8s.io",
        version: "v1",
        introduced: 29,
        deprecated: None,
        removed: None,
        replacement: None,
    },
    Lifecycle {
        group: "flowcontrol.apiserver.k8s.io",
        version: "v1beta3",
        introduced: 26,
        deprecated: Some(29),
        removed: Some(32),
        replacement: Some("flowcontrol.apiserver.k8s.io/v1"),
    },
    Lifecycle {
        group: "flowcontrol.apiserver.k8s.io",
        version: "v1beta2",
        introduced: 23,
        deprecated: Some(26),
        removed: Some(29),
        replacement: Some("flowcontrol.apiserver.k8s.io/v1beta3"),
    },
];

fn lifecycle(group: &str, version: &str) -> Option<&'static Lifecycle> {
    LIFECYCLES
        .iter()
        .find(|l| l.group == group && l.version == version)
}

/// Whether a control plane of `minor` serves built-in `group/version`.
pub(crate) fn served(group: &str, version: &str, minor: u32) -> bool {
    lifecycle(group, version)
        .is_none_or(|l| l.introduced <= minor && l.removed.is_none_or(|r| minor < r))
}

/// A series of `apiserver_requested_deprecated_apis`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Series {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub removed_release: String,
}

/// The deprecated APIs requested since this API server started.
#[derive(Debug, Default)]
pub(crate) struct Requested {
    /// The minor the series were gathered at (a new minor is a new server).
    minor: u32,
    series: BTreeSet<Series>,
}

impl Requested {
    /// Records a request to `kind` at `group/version` (`resource`, `subresource`) on a
    /// control plane of `minor`: the warning to send, if the version is deprecated then.
    pub fn record(
        &mut self,
        minor: u32,
        (group, version, kind): (&str, &str, &str),
        resource: &str,
        subresource: Option<&str>,
    ) -> Option<String> {
        if self.minor != minor {
            self.minor = minor;
            self.series.clear();
        }
        let l = lifecycle(group, version)?;
        let deprecated = l.deprecated.filter(|d| *d <= minor)?;
        let removed = l.removed.map(|r| format!("1.{r}")).unwrap_or_default();
        self.series.insert(Series {
            group: group.to_string(),
            version: version.to_string(),
            resource: resource.to_string(),
            subresource: subresource.unwrap_or_default().to_string(),
            removed_release: removed,
        });
        let mut warning = format!("{group}/{version} {kind} is deprecated in v1.{deprecated}+");
        if let Some(r) = l.removed {
            warning.push_str(&format!(", unavailable in v1.{r}+"));
        }
        if let Some(use_) = l.replacement {
            warning.push_str(&format!("; use {use_} {kind}"));
        }
        Some(warning)
    }

    /// The `/metrics` text at `minor`.
    pub fn metrics(&mut self, minor: u32) -> String {
        if self.minor != minor {
            self.minor = minor;
            self.series.clear();
        }
        if self.series.is_empty() {
            return String::new();
        }
        let name = "apiserver_requested_deprecated_apis";
        let mut out = format!(
            "# HELP {name} [STABLE] Gauge of deprecated APIs that have been requested, broken out by API group, version, resource, subresource, and removed_release.\n# TYPE {name} gauge\n"
        );
        for s in &self.series {
            // Label names sorted, as the Prometheus Go client writes them.
            out.push_str(&format!(
                "{name}{{group=\"{}\",removed_release=\"{}\",resource=\"{}\",subresource=\"{}\",version=\"{}\"}} 1\n",
                s.group, s.removed_release, s.resource, s.subresource, s.version
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flowcontrol_versions_follow_the_control_plane() {
        let fc = "flowcontrol.apiserver.k8s.io";
        assert!(served(fc, "v1beta2", 28) && served(fc, "v1beta3", 28) && !served(fc, "v1", 28));
        assert!(!served(fc, "v1beta2", 29) && served(fc, "v1beta3", 31) && served(fc, "v1", 29));
        assert!(!served(fc, "v1beta3", 32) && served(fc, "v1", 33));
        assert!(served("apps", "v1", 10));
    }

    #[test]
    fn requests_to_deprecated_versions_warn_and_show_on_metrics_until_a_new_minor() {
        let mut r = Requested::default();
        let fc = "flowcontrol.apiserver.k8s.io";
        // v1beta3 is not deprecated at 1.28.
        assert_eq!(
            r.record(28, (fc, "v1beta3", "FlowSchema"), "flowschemas", None),
            None
        );
        assert_eq!(r.metrics(28), "");
        let w = r.record(31, (fc, "v1beta3", "FlowSchema"), "flowschemas", None);
        assert_eq!(
            w.as_deref(),
            Some(
                "flowcontrol.apiserver.k8s.io/v1beta3 FlowSchema is deprecated in v1.29+, unavailable in v1.32+; use flowcontrol.apiserver.k8s.io/v1 FlowSchema"
            )
        );
        r.record(
            31,
            (fc, "v1beta3", "FlowSchema"),
            "flowschemas",
            Some("status"),
        );
        assert_eq!(
            r.metrics(31),
            "# HELP apiserver_requested_deprecated_apis [STABLE] Gauge of deprecated APIs that have been requested, broken out by API group, version, resource, subresource, and removed_release.
# TYPE apiserver_requested_deprecated_apis gauge
apiserver_requested_deprecated_apis{group=\"flowcontrol.apiserver.k8s.io\",removed_release=\"1.32\",resource=\"flowschemas\",subresource=\"\",version=\"v1beta3\"} 1
apiserver_requested_deprecated_apis{group=\"flowcontrol.apiserver.k8s.io\",removed_release=\"1.32\",resource=\"flowschemas\",subresource=\"status\",version=\"v1beta3\"} 1
"
        );
        assert_eq!(r.metrics(32), "", "a new API server starts empty");
    }
}
