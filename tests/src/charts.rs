//! The charts the e2e tests write themselves (besides `fleet-repo-example/charts/*`), in one
//! place so that the helm compatibility test renders exactly what the other tests render.

use std::path::Path;

use anyhow::Result;

/// A chart: `Chart.yaml` (`apiVersion: v2`, `name`, `version: 1.0.0`) plus `files`.
#[derive(Debug)]
pub struct TestChart {
    /// Chart name (and directory name).
    pub name: &'static str,
    /// Every file below the chart directory but `Chart.yaml`: (relative path, text).
    pub files: &'static [(&'static str, &'static str)],
    /// The values the tests render it with, each as one values file (`{}` for the defaults).
    pub values: &'static [&'static str],
}

impl TestChart {
    /// `Chart.yaml` of the chart.
    pub fn chart_yaml(&self) -> String {
        format!("apiVersion: v2\nname: {}\nversion: 1.0.0\n", self.name)
    }

    /// Writes the chart into `dir` (created if missing).
    pub fn write_to(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("Chart.yaml"), self.chart_yaml())?;
        for (path, text) in self.files {
            let path = dir.join(path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, text)?;
        }
        Ok(())
    }
}

/// A CRD that serves `example.com/v1` Widgets.
pub const WIDGET_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
";

/// A CRD in `crds/`, a custom resource using it, and a `helm test` hook (rendered by helm,
/// never applied by tidemark).
pub const WIDGETS: TestChart = TestChart {
    name: "widgets",
    files: &[
        ("crds/widget.yaml", WIDGET_CRD),
        (
            "templates/widget.yaml",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: {{ .Release.Name }}-main\nspec:\n  size: 3\n",
        ),
        (
            "templates/tests/check.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: widgets-test\n  annotations:\n    helm.sh/hook: test\ndata:\n  a: b\n",
        ),
    ],
    values: &["{}"],
};

/// A CRD next to a README in `crds/`, values, a partial, a custom resource, a pre-install
/// hook with a weight, a test hook, a template that renders only with `extra: true`, and
/// NOTES.txt.
pub const HOOKED_WIDGETS: TestChart = TestChart {
    name: "widgets",
    files: &[
        ("values.yaml", "size: 3\nextra: false\n"),
        (
            "crds/widgets.yaml",
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
             metadata:\n  name: widgets.example.com\nspec:\n  group: example.com\n  \
             names: {kind: Widget, plural: widgets}\n  scope: Namespaced\n",
        ),
        ("crds/README.md", "not a manifest\n"),
        (
            "templates/_helpers.tpl",
            "{{- define \"widgets.name\" -}}{{ .Release.Name }}-widget{{- end -}}\n",
        ),
        (
            "templates/widget.yaml",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: {{ include \"widgets.name\" . }}\n\
             spec:\n  size: {{ .Values.size }}\n",
        ),
        (
            "templates/configmap.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  size: {{ .Values.size | quote }}\n",
        ),
        (
            "templates/hook.yaml",
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Release.Name }}-migrate\n  \
             annotations:\n    helm.sh/hook: pre-install,pre-upgrade\n    helm.sh/hook-weight: \"-5\"\n",
        ),
        (
            "templates/tests/test.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {{ .Release.Name }}-test\n  \
             annotations:\n    helm.sh/hook: test\n",
        ),
        (
            "templates/extra.yaml",
            "{{- if .Values.extra }}\napiVersion: v1\nkind: Secret\nmetadata:\n  name: extra\n{{- end }}\n",
        ),
        ("templates/NOTES.txt", "Installed {{ .Release.Name }}.\n"),
    ],
    values: &["{}", "extra: true\nsize: 5\n"],
};

/// A ConfigMap and a template that always fails: `helm template` exits 1.
pub const BROKEN: TestChart = TestChart {
    name: "broken",
    files: &[
        (
            "templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\ndata:\n  a: b\n",
        ),
        (
            "templates/bad.yaml",
            "{{ fail \"the chart refuses these values\" }}\n",
        ),
    ],
    values: &["{}"],
};

/// A ConfigMap named by the value `name` (`Bad_Name` renders, the API server refuses it).
pub const NAMED: TestChart = TestChart {
    name: "named",
    files: &[(
        "templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Values.name }}\ndata:\n  a: b\n",
    )],
    values: &["name: Bad_Name\n", "name: good-name\n"],
};

/// A Job whose pod template takes the value `step`.
pub const MIGRATE: TestChart = TestChart {
    name: "migrate",
    files: &[(
        "templates/job.yaml",
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-schema
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: registry.example.com/migrate:1.0
          args: [\"--step\", \"{{ .Values.step }}\"]
",
    )],
    values: &["step: \"1\"\n", "step: \"2\"\n"],
};

/// One ConfigMap, `shared`.
pub const ONE: TestChart = TestChart {
    name: "one",
    files: &[(
        "templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\ndata:\n  a: b\n",
    )],
    values: &["{}"],
};

/// The ConfigMap `shared` (as [`ONE`]) and its own, `two-own`.
pub const TWO: TestChart = TestChart {
    name: "two",
    files: &[
        (
            "templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\ndata:\n  a: b\n",
        ),
        (
            "templates/own.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: two-own\ndata:\n  a: b\n",
        ),
    ],
    values: &["{}"],
};

/// What public charts write and a YAML 1.2 reader gets wrong: `defaultMode: 0755` (kubectl
/// reads 493), and a ConfigMap rendered only when the values say `extra: yes` (helm reads the
/// values file's `extra: no` as false).
pub const YAML11: TestChart = TestChart {
    name: "yaml11",
    files: &[
        (
            "templates/deployment.yaml",
            "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: 1
  selector:
    matchLabels: {app: yaml11}
  template:
    metadata:
      labels: {app: yaml11}
    spec:
      containers:
        - name: app
          image: registry.k8s.io/pause:3.9
          volumeMounts: [{name: scripts, mountPath: /scripts}]
      volumes:
        - name: scripts
          configMap:
            name: {{ .Release.Name }}-scripts
            defaultMode: 0755
            items:
              - {key: run.sh, path: run.sh, mode: 0o700}
",
        ),
        (
            "templates/scripts.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-scripts\ndata:\n  run.sh: \"true\"\n",
        ),
        (
            "templates/extra.yaml",
            "{{- if .Values.extra }}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-extra\ndata:\n  a: b\n{{- end }}\n",
        ),
    ],
    values: &["extra: no\n", "extra: yes\n"],
};

/// The template metrics-lite 0.4.0 adds in the upgrade tests.
pub const METRICS_LITE_DASHBOARDS: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-dashboards\ndata:\n  main.json: '{}'\n";

/// A ConfigMap whose data depends on the Kubernetes version it is rendered for.
pub const VERSIONED: TestChart = TestChart {
    name: "versioned",
    files: &[(
        "templates/cm.yaml",
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}
data:
  api: {{ if semverCompare \">=1.29-0\" .Capabilities.KubeVersion.Version }}new{{ else }}old{{ end }}
",
    )],
    values: &["{}"],
};

/// Helm's lifecycle: a pre-install/pre-upgrade hook ConfigMap (weight -1, kept between
/// applies), a pre-install/pre-upgrade hook Job deleted once it succeeded (weight 0), an
/// ordinary ConfigMap, a post-install/post-upgrade hook ConfigMap, a Job that deletes
/// itself when finished (`ttlSecondsAfterFinished: 0`), and, with `keep: true` and
/// `crd: true`, an object marked `helm.sh/resource-policy: keep` and a CRD in templates.
pub const LIFECYCLE: TestChart = TestChart {
    name: "lifecycle",
    files: &[
        (
            "templates/hooks.yaml",
            "apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-pre
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: \"-1\"
data:
  when: pre
---
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-migrate
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-delete-policy: hook-succeeded
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: registry.example.com/migrate:1.0
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-post
  annotations:
    helm.sh/hook: post-install,post-upgrade
data:
  when: post
",
        ),
        (
            "templates/main.yaml",
            "apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-main
data:
  when: main
---
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-once
spec:
  ttlSecondsAfterFinished: 0
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: once
          image: registry.example.com/once:1.0
",
        ),
        (
            "templates/optional.yaml",
            "{{- if .Values.keep }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-kept
  annotations:
    helm.sh/resource-policy: keep
data:
  a: b
{{- end }}
{{- if .Values.crd }}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget, listKind: GadgetList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
{{- end }}
",
        ),
    ],
    values: &["keep: true\ncrd: true\n", "{}"],
};

/// An aggregated API whose backend is missing, as metrics-server's chart renders before its
/// pod is ready: the APIService `v1beta1.metrics.k8s.io` points at a Service without
/// endpoints, so its group-version answers 503 in discovery.
pub const METRICS_API: TestChart = TestChart {
    name: "metrics-api",
    files: &[
        (
            "templates/service.yaml",
            "apiVersion: v1
kind: Service
metadata:
  name: metrics-backend
  namespace: kube-system
spec:
  selector: {app: metrics-backend}
  ports: [{port: 443, targetPort: 4443}]
",
        ),
        (
            "templates/apiservice.yaml",
            "apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.metrics.k8s.io
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  insecureSkipTLSVerify: true
  service: {name: metrics-backend, namespace: kube-system}
",
        ),
    ],
    values: &["{}"],
};

/// Every chart above.
pub const ALL: &[&TestChart] = &[
    &METRICS_API,
    &VERSIONED,
    &LIFECYCLE,
    &WIDGETS,
    &HOOKED_WIDGETS,
    &BROKEN,
    &NAMED,
    &MIGRATE,
    &ONE,
    &TWO,
    &YAML11,
];
