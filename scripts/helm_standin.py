"""A stand-in for the `helm` CLI: `helm template` and `helm version`, on helm-python-sdk.

tidemark renders components with `helm template` through std::process (DESIGN.md,
"Components"). Where no `helm` binary is installed (CI, the demo), `scripts/helm` runs this
script instead. Templates are rendered by Helm's own Go engine (the PyPI package
helm-python-sdk, import name `helm_python`, which embeds the Helm Go SDK); this script only
does what the `helm` command itself does around the engine, copied from Helm 3's source
(cmd/helm/template.go, pkg/action/install.go and action.go, pkg/releaseutil, pkg/cli/values):

- the command line, parsed like cobra/pflag: flags before, after or between the positional
  arguments, `--flag=value`, `--flag value`, `-n value`, `-nvalue`, `-n=value`, `--`;
- `-f/--values` files (repeatable, comma-separated like pflag's string slice, `-` = stdin)
  merged in order as Helm does (maps merged recursively, later files win, `null` kept so
  that it deletes the chart's default when the engine coalesces);
- where the chart comes from: a chart directory, a `.tgz` archive, or with `--repo URL` a
  chart name in a classic HTTP(S) chart repository (`URL/index.yaml`; `--version` is an
  exact version or, as in Helm, a semver constraint; without it the latest stable version);
- Helm's checks before rendering: installable chart type, dependencies present in charts/,
  release name, the chart's `kubeVersion` against the engine's default Kubernetes version;
- the output: manifests split into documents, sorted by Helm's InstallOrder of kinds (files
  in path order, documents in file order, a stable sort), each as
  `---\\n# Source: <chart>/templates/<file>\\n<document>\\n`; with `--include-crds` the files
  of `crds/` first; hooks (`helm.sh/hook`) after the manifests, as `helm template` prints them.

Implemented: `helm template [NAME] CHART` with `-n/--namespace`, `--version`, `--repo`,
`-f/--values`, `--include-crds`; `helm version [--short]`; `-h/--help`.
Not implemented, and refused with an error naming the argument (exit status 1): every other
command and flag (`--set*`, `--post-renderer`, `--kube-version`, `--api-versions`,
`--skip-tests`, `--show-only`, `--output-dir`, `--debug`, `--kube-context`, ...), `oci://`
charts, repositories added with `helm repo add`, values files given as URLs.

Deliberate differences from the real helm (v3):
- `--version` with a local chart is checked against the chart's version (helm ignores it);
- the `digest` of a repository's index entry is verified (helm does not);
- with `--repo`, a local path of the same name is used first, as helm does, but a warning
  is printed;
- the default namespace is `$HELM_NAMESPACE` or `default` (no kubeconfig is read);
- render errors are not followed by helm's "Use --debug flag to render out invalid YAML"
  (the stand-in has no --debug);
- `.Capabilities` (Kubernetes version, API versions) and the template functions are those of
  the embedded engine, Helm v4 (`helm version` reports that version with a `-standin`
  suffix).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

try:
    import helm_python as helm
except ImportError as err:  # pragma: no cover - depends on the venv
    sys.stderr.write(
        f"Error: the helm stand-in needs the Python package helm-python-sdk ({err}): "
        "run scripts/setup-python.sh\n"
    )
    sys.exit(1)

# --- constants copied from Helm ------------------------------------------------------------

#: pkg/releaseutil/kind_sorter.go (Helm v3.21): the order `helm install` creates kinds in.
INSTALL_ORDER: tuple[str, ...] = (
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
)
KIND_RANK: dict[str, int] = {kind: rank for rank, kind in enumerate(INSTALL_ORDER)}

#: pkg/releaseutil/manifest_sorter.go: the hook events `helm.sh/hook` may name.
HOOK_EVENTS = frozenset(
    {
        "pre-install",
        "post-install",
        "pre-delete",
        "post-delete",
        "pre-upgrade",
        "post-upgrade",
        "pre-rollback",
        "post-rollback",
        "test",
        "test-success",
    }
)
HOOK_ANNOTATION = "helm.sh/hook"

#: pkg/releaseutil/manifest.go: the document separator (Go's `\s` is ASCII only).
DOCUMENT_SEPARATOR = re.compile(r"(?:^|[\t\n\f\r ]*\n)---[\t\n\f\r ]*")

#: Go's unicode.IsSpace, for strings.TrimSpace.
GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

#: The release name `helm template` uses when none is given.
DEFAULT_RELEASE_NAME = "release-name"

#: Masterminds/semver's NewVersion syntax (what Helm accepts as a chart version).
SEMVER = re.compile(
    r"v?[0-9]+(\.[0-9]+)?(\.[0-9]+)?"
    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?"
)

SUPPORTED = (
    'the helm stand-in (scripts/helm_standin.py) implements only "helm template [NAME] CHART" '
    "with -n/--namespace, --version, --repo, -f/--values, --include-crds, "
    'and "helm version [--short]"'
)

USAGE = f"""helm stand-in: Helm's template engine (helm-python-sdk) behind the helm command line.

Usage:
  helm template [NAME] CHART [flags]
  helm version [--short]

Flags of template:
  -n, --namespace string   namespace of the release (default $HELM_NAMESPACE or "default")
      --version string     chart version (exact, or a semver constraint with --repo)
      --repo string        chart repository URL (http:// or https://) holding CHART
  -f, --values strings     values files, merged in order (can be repeated)
      --include-crds       print the chart's crds/ files before the templates

CHART is a chart directory, a .tgz chart archive, or with --repo a chart name.
Anything else is refused: {SUPPORTED}.
"""


class StandinError(Exception):
    """A failure reported as `Error: <message>` on stderr with exit status 1."""


# --- command line ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FlagSpec:
    """One flag of the stand-in: its long name, shorthand and whether it takes a value."""

    name: str
    short: str | None
    takes_value: bool


TEMPLATE_FLAGS = (
    FlagSpec("namespace", "n", True),
    FlagSpec("version", None, True),
    FlagSpec("repo", None, True),
    FlagSpec("values", "f", True),
    FlagSpec("include-crds", None, False),
)
VERSION_FLAGS = (FlagSpec("short", None, False),)
HELP_FLAG = FlagSpec("help", "h", False)
ALL_FLAGS = (*TEMPLATE_FLAGS, *VERSION_FLAGS, HELP_FLAG)
COMMAND_FLAGS: dict[str, frozenset[str]] = {
    "template": frozenset(f.name for f in (*TEMPLATE_FLAGS, HELP_FLAG)),
    "version": frozenset(f.name for f in (*VERSION_FLAGS, HELP_FLAG)),
}


@dataclass
class CommandLine:
    """The parsed command line: positional arguments and flags (`(spec, value, as typed)`)."""

    positionals: list[str] = field(default_factory=list)
    flags: list[tuple[FlagSpec, str, str]] = field(default_factory=list)


@dataclass
class TemplateArgs:
    """What `helm template` was asked to do."""

    release: str
    chart: str
    namespace: str
    version: str
    repo: str
    values_files: list[str]
    include_crds: bool


def unsupported_flag(flag: str) -> StandinError:
    """The error for a flag the stand-in does not implement (helm may well have it)."""
    return StandinError(f'unsupported flag "{flag}": {SUPPORTED}')


def find_flag(long: str | None = None, short: str | None = None) -> FlagSpec | None:
    """The flag spec with this long name or shorthand."""
    for spec in ALL_FLAGS:
        if (long is not None and spec.name == long) or (short is not None and spec.short == short):
            return spec
    return None


def parse_bool(value: str, flag: str) -> str:
    """pflag's bool syntax (strconv.ParseBool); returns "true" or "false"."""
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return "true"
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return "false"
    raise StandinError(
        f'invalid argument "{value}" for "{flag}" flag: '
        f'strconv.ParseBool: parsing "{value}": invalid syntax'
    )


def take_value(argv: list[str], i: int, typed: str) -> tuple[str, int]:
    """The value of a flag given as the next argument; returns it and the next index."""
    if i + 1 >= len(argv):
        raise StandinError(f"flag needs an argument: {typed}")
    return argv[i + 1], i + 2


def parse_long(argv: list[str], i: int, line: CommandLine) -> int:
    """Parses `--name`, `--name=value` or `--name value` at argv[i]; returns the next index."""
    name, eq, value = argv[i][2:].partition("=")
    spec = find_flag(long=name)
    if spec is None:
        raise unsupported_flag(f"--{name}")
    typed = f"--{name}"
    if not spec.takes_value:
        line.flags.append((spec, parse_bool(value, typed) if eq else "true", typed))
        return i + 1
    if eq:
        line.flags.append((spec, value, typed))
        return i + 1
    value, nxt = take_value(argv, i, typed)
    line.flags.append((spec, value, typed))
    return nxt


def parse_short(argv: list[str], i: int, line: CommandLine) -> int:
    """Parses `-n value`, `-nvalue` or `-n=value` at argv[i]; returns the next index."""
    letter, rest = argv[i][1], argv[i][2:]
    spec = find_flag(short=letter)
    if spec is None:
        raise unsupported_flag(f"-{letter}")
    typed = f"-{letter}"
    if not spec.takes_value:
        if rest:
            raise unsupported_flag(argv[i])
        line.flags.append((spec, "true", typed))
        return i + 1
    if rest:
        line.flags.append((spec, rest.removeprefix("="), typed))
        return i + 1
    if i + 1 >= len(argv):
        raise StandinError(f"flag needs an argument: '{letter}' in {typed}")
    line.flags.append((spec, argv[i + 1], typed))
    return i + 2


def parse_command_line(argv: list[str]) -> CommandLine:
    """Splits argv into flags and positionals, interspersed as cobra allows."""
    line = CommandLine()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            line.positionals.extend(argv[i + 1 :])
            break
        if arg.startswith("--"):
            i = parse_long(argv, i, line)
        elif arg.startswith("-") and arg != "-":
            i = parse_short(argv, i, line)
        else:
            line.positionals.append(arg)
            i += 1
    return line


def split_values_flag(value: str) -> list[str]:
    """pflag's string slice: one `-f` value may list several files, comma-separated (CSV)."""
    if value == "":
        return []
    try:
        return next(csv.reader([value]))
    except csv.Error as err:
        raise StandinError(f'invalid argument "{value}" for "-f, --values" flag: {err}') from err


def check_flags(command: str, line: CommandLine) -> None:
    """Refuses flags that exist in the stand-in but not for this command."""
    allowed = COMMAND_FLAGS[command]
    for spec, _, typed in line.flags:
        if spec.name not in allowed:
            raise StandinError(f'unsupported flag "{typed}" for "helm {command}": {SUPPORTED}')


def template_args(line: CommandLine) -> TemplateArgs:
    """The arguments of `helm template`, with Helm's defaults and argument-count rules."""
    args = line.positionals[1:]
    if not args:
        raise StandinError(
            '"helm template" requires at least 1 argument\n\n'
            "Usage:  helm template [NAME] [CHART] [flags]"
        )
    if len(args) > 2:
        raise StandinError(
            f"expected at most two arguments, unexpected arguments: {', '.join(args[2:])}"
        )
    release, chart = (args[0], args[1]) if len(args) == 2 else (DEFAULT_RELEASE_NAME, args[0])
    values: dict[str, str] = {"namespace": os.environ.get("HELM_NAMESPACE", "")}
    files: list[str] = []
    for spec, value, _ in line.flags:
        if spec.name == "values":
            files.extend(split_values_flag(value))
        else:
            values[spec.name] = value
    return TemplateArgs(
        release=release,
        chart=chart.strip(),
        namespace=values["namespace"] or "default",
        version=values.get("version", "").strip(),
        repo=values.get("repo", ""),
        values_files=files,
        include_crds=values.get("include-crds") == "true",
    )


# --- semver, through the engine ------------------------------------------------------------

PROBE_TEMPLATE = """{{- range .Values.versions }}
{{ semverCompare $.Values.constraint (. | default $.Capabilities.KubeVersion.Version) }}
{{- end }}
{{ .Capabilities.KubeVersion.Version }}
"""


def tgz(files: dict[str, str]) -> bytes:
    """A gzipped tar archive holding `files` (name -> text), built in memory."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def semver_probe(constraint: str, versions: list[str]) -> tuple[list[bool], str]:
    """Checks `versions` against a semver `constraint` with the engine's own `semverCompare`
    (Masterminds/semver, what Helm uses for `--version` and `kubeVersion`); "" stands for the
    engine's default Kubernetes version. Returns the answers and that Kubernetes version.

    Raises ValueError if the constraint or a version does not parse.
    """
    archive = tgz(
        {
            "probe/Chart.yaml": "apiVersion: v2\nname: probe\nversion: 0.0.0\n",
            "probe/templates/probe.txt": PROBE_TEMPLATE,
        }
    )
    with helm.Chart.load_archive(archive) as probe:
        try:
            out = probe.render({"constraint": constraint, "versions": versions})
        except helm.HelmError as err:
            raise ValueError(str(err)) from err
    lines = next(iter(out.values())).split()
    return [line == "true" for line in lines[:-1]], lines[-1]


# --- values ----------------------------------------------------------------------------------


def read_values_file(path: str) -> str:
    """The text of one `-f` argument: a file, or stdin for `-`."""
    if path.strip() == "-":
        return sys.stdin.read()
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", path):
        raise StandinError(
            f'values file "{path}": URLs are not supported by the helm stand-in '
            '(give a local file, or "-" for stdin)'
        )
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise StandinError(f"failed to parse {path}: {err}") from err
    except OSError as err:
        reason = (err.strerror or str(err)).lower()
        raise StandinError(f"open {path}: {reason}") from err


def merge_maps(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """pkg/cli/values/options.go mergeMaps: maps merge recursively, anything else replaces
    (a `null` too: it reaches the engine, which then drops the chart's default)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_maps(out[key], value)
        else:
            out[key] = value
    return out


def merged_values(paths: list[str]) -> dict[str, Any]:
    """The user-supplied values: every `-f` file parsed by Helm's parser, merged in order."""
    merged: dict[str, Any] = {}
    for path in paths:
        try:
            values = helm.values_from_yaml(read_values_file(path))
        except helm.HelmError as err:
            raise StandinError(f"failed to parse {path}: {err}") from err
        merged = merge_maps(merged, values)
    return merged


# --- locating the chart ----------------------------------------------------------------------


def load_local_chart(path: str) -> helm.Chart:
    """A chart directory or `.tgz` archive."""
    return helm.Chart.load(os.path.abspath(path))


def repo_index(repo: str) -> dict[str, Any]:
    """The repository's index.yaml, fetched and parsed (and sorted) by Helm's own code."""
    if not re.match(r"https?://", repo):
        raise StandinError(
            f'repository URL "{repo}": the helm stand-in reads chart repositories over '
            "http:// or https:// only"
        )
    try:
        return helm.repo_index(repo)
    except helm.HelmError as err:
        raise StandinError(
            f'looks like "{repo}" is not a valid chart repository or cannot be reached: {err}'
        ) from err


def select_entry(
    entries: list[dict[str, Any]], name: str, version: str, repo: str
) -> dict[str, Any]:
    """pkg/repo/index.go IndexFile.Get: an exact version first, else the first (highest)
    version the constraint accepts; no version means `*`, the latest non-prerelease."""
    label = f'chart "{name}"' + (f' version "{version}"' if version else "")
    not_found = StandinError(f"{label} not found in {repo} repository")
    if version:
        for entry in entries:
            if entry.get("version") == version:
                return entry
    candidates = [e for e in entries if SEMVER.fullmatch(str(e.get("version", "")))]
    if not candidates:
        raise not_found
    try:
        accepted, _ = semver_probe(version or "*", [str(e["version"]) for e in candidates])
    except ValueError as err:
        raise not_found from err
    for entry, ok in zip(candidates, accepted, strict=True):
        if ok:
            return entry
    raise not_found


def verify_digest(archive: Path, entry: dict[str, Any], label: str) -> None:
    """Checks the downloaded archive against the sha256 `digest` of its index entry, if any."""
    want = str(entry.get("digest") or "").strip().lower().removeprefix("sha256:")
    if not want:
        return
    got = hashlib.sha256(archive.read_bytes()).hexdigest()
    if got != want:
        raise StandinError(
            f"{label}: digest mismatch: the repository index says sha256:{want}, "
            f"the downloaded archive is sha256:{got}"
        )


def load_repo_chart(name: str, repo: str, version: str) -> helm.Chart:
    """Downloads `name` from the chart repository at `repo`, verifies it and loads it."""
    entries = (repo_index(repo).get("entries") or {}).get(name)
    if not entries:
        label = f'chart "{name}"' + (f' version "{version}"' if version else "")
        raise StandinError(f"{label} not found in {repo} repository")
    entry = select_entry(entries, name, version, repo)
    label = f'chart "{name}" version "{entry["version"]}" from {repo}'
    with tempfile.TemporaryDirectory(prefix="helm-standin-") as tmp:
        try:
            # Helm's downloader: resolves urls[0] against the repository URL, exactly.
            helm.pull(name, repo_url=repo, version=str(entry["version"]), destination=tmp)
        except helm.HelmError as err:
            raise StandinError(f"{label}: {err}") from err
        archives = sorted(Path(tmp).glob("*.tgz"))
        if len(archives) != 1:
            raise StandinError(f"{label}: the download produced no chart archive")
        verify_digest(archives[0], entry, label)
        return helm.Chart.load(archives[0])


def locate_chart(args: TemplateArgs) -> tuple[helm.Chart, bool]:
    """pkg/action/install.go LocateChart, for the references the stand-in supports.
    Returns the loaded chart and whether it is local (not from a repository)."""
    ref = args.chart
    if os.path.exists(ref):
        if args.repo:
            sys.stderr.write(
                f'WARNING: local chart "{ref}" found in the working directory: '
                f"repository URL {args.repo} ignored (as helm does)\n"
            )
        return load_local_chart(ref), True
    if os.path.isabs(ref) or ref.startswith("."):
        raise StandinError(f'path "{ref}" not found')
    if "://" in ref:
        raise StandinError(
            f'chart reference "{ref}": only local charts, and chart names with --repo, '
            f"are supported: {SUPPORTED}"
        )
    if not args.repo:
        raise StandinError(
            f'path "{ref}" not found, and the helm stand-in has no chart repositories '
            f'("helm repo add" is not supported): pass --repo URL to fetch "{ref}" '
            "from a chart repository"
        )
    return load_repo_chart(ref, args.repo, args.version), False


# --- checks before rendering -------------------------------------------------------------


def check_version(chart: helm.Chart, wanted: str) -> None:
    """`--version` with a local chart: the chart must be that version (or satisfy it, as a
    constraint). The real helm ignores `--version` for local charts; tidemark wants to know."""
    have = chart.version
    if not wanted or wanted == have:
        return
    try:
        accepted, _ = semver_probe(wanted, [have])
    except ValueError:
        accepted = [False]
    if not accepted[0]:
        raise StandinError(f'chart "{chart.name}" is version {have}, not the --version {wanted}')


def check_installable(metadata: dict[str, Any]) -> None:
    """cmd/helm/install.go checkIfInstallable, and the deprecation warning."""
    kind = metadata.get("type") or ""
    if kind not in ("", "application"):
        raise StandinError(f"{kind} charts are not installable")
    if metadata.get("deprecated"):
        sys.stderr.write("WARNING: This chart is deprecated\n")


def check_dependencies(chart: helm.Chart, metadata: dict[str, Any]) -> None:
    """pkg/action/install.go CheckDependencies: every declared dependency is in charts/."""
    present = {dep.get("name") for dep in chart.dependencies}
    declared = [str(dep.get("name")) for dep in metadata.get("dependencies") or []]
    missing = [name for name in declared if name not in present]
    if missing:
        raise StandinError(
            "An error occurred while checking for chart dependencies. You may need to run "
            "`helm dependency build` to fetch missing dependencies: found in Chart.yaml, "
            f"but missing in charts/ directory: {', '.join(missing)}"
        )


def check_release_name(name: str) -> None:
    """chartutil.ValidateReleaseName, with install's wording."""
    try:
        helm.validate_release_name(name)
    except helm.HelmError as err:
        raise StandinError(f'release name "{name}": {err}') from err


def check_kube_version(metadata: dict[str, Any]) -> None:
    """pkg/action/action.go: the chart's kubeVersion must accept the (default) cluster version."""
    constraint = str(metadata.get("kubeVersion") or "")
    if not constraint:
        return
    try:
        accepted, kube = semver_probe(constraint, [""])
        compatible = accepted[0]
    except ValueError:
        compatible, kube = False, semver_probe("*", [])[1]
    if not compatible:
        raise StandinError(
            f"chart requires kubeVersion: {constraint} which is incompatible with Kubernetes {kube}"
        )


# --- manifests: split, classify, sort --------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """One YAML document of a rendered template (Helm's Manifest, or Hook for hooks)."""

    path: str
    content: str
    kind: str


def go_trim_space(text: str) -> str:
    """Go's strings.TrimSpace."""
    return text.strip(GO_SPACE)


def split_manifests(text: str) -> list[str]:
    """pkg/releaseutil/manifest.go SplitManifests (Helm 3): the documents of one file."""
    docs = DOCUMENT_SEPARATOR.split(go_trim_space(text))
    return [go_trim_space(doc) for doc in docs if doc != ""]


#: The JSON type names Go's encoding/json uses in its errors.
GO_JSON_TYPES: dict[type, str] = {
    bool: "bool",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}


def type_error(path: str, found: Any, field_name: str, go_type: str) -> StandinError:
    """The error Helm reports when a document's head does not fit its SimpleHead struct."""
    json_type = GO_JSON_TYPES.get(type(found), "value")
    return StandinError(
        f"YAML parse error on {path}: error unmarshaling JSON: while decoding JSON: json: "
        f"cannot unmarshal {json_type} into Go struct field {field_name} of type {go_type}"
    )


def string_field(obj: dict[str, Any], key: str, path: str, field_name: str) -> str:
    """A string field of a document's head ("" when absent or null)."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise type_error(path, value, field_name, "string")
    return value


def parse_head(doc: str, path: str) -> tuple[str, dict[str, str]]:
    """The kind and annotations of a document, parsed by Helm's YAML parser, with Helm's
    type rules (releaseutil.SimpleHead: annotation values must be strings)."""
    try:
        obj = helm.values_from_yaml(doc)
    except helm.HelmError as err:
        message = str(err).replace("common.Values", "releaseutil.SimpleHead")
        raise StandinError(f"YAML parse error on {path}: {message}") from err
    kind = string_field(obj, "kind", path, "SimpleHead.kind")
    string_field(obj, "apiVersion", path, "SimpleHead.apiVersion")
    metadata = obj.get("metadata")
    if metadata is None:
        return kind, {}
    if not isinstance(metadata, dict):
        raise type_error(path, metadata, "SimpleHead.metadata", "struct")
    string_field(metadata, "name", path, "SimpleHead.metadata.name")
    annotations = metadata.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise type_error(path, annotations, "SimpleHead.metadata.annotations", "map[string]string")
    for key in annotations:
        string_field(annotations, key, path, "SimpleHead.metadata.annotations")
    return kind, {k: v or "" for k, v in annotations.items()}


def hook_events(annotations: dict[str, str]) -> list[str] | None:
    """The hook events of a document (None: not a hook)."""
    if HOOK_ANNOTATION not in annotations:
        return None
    return [event.strip().lower() for event in annotations[HOOK_ANNOTATION].split(",")]


def kind_order(manifest: Manifest) -> tuple[int, int, str]:
    """Sort key of releaseutil lessByKind: InstallOrder, then unknown kinds by name."""
    rank = KIND_RANK.get(manifest.kind)
    return (0, rank, "") if rank is not None else (1, 0, manifest.kind)


def sort_manifests(files: dict[str, str]) -> tuple[list[Manifest], list[Manifest]]:
    """pkg/releaseutil/manifest_sorter.go SortManifests: (manifests, hooks), both sorted."""
    manifests: list[Manifest] = []
    hooks: list[Manifest] = []
    for path in sorted(files):
        content = files[path]
        if os.path.basename(path).startswith("_") or go_trim_space(content) == "":
            continue
        for doc in split_manifests(content):
            kind, annotations = parse_head(doc, path)
            events = hook_events(annotations)
            if events is None:
                manifests.append(Manifest(path, doc, kind))
            elif all(event in HOOK_EVENTS for event in events):
                hooks.append(Manifest(path, doc, kind))
            else:
                sys.stderr.write(f'info: skipping unknown hook: "{annotations[HOOK_ANNOTATION]}"\n')
    return sorted(manifests, key=kind_order), sorted(hooks, key=kind_order)


# --- rendering and output ----------------------------------------------------------------


def render(chart: helm.Chart, values: dict[str, Any], args: TemplateArgs) -> dict[str, str]:
    """The engine's render (values coalesced with the chart's defaults, schema validated,
    dependencies' conditions applied); NOTES.txt files dropped, as Helm does."""
    try:
        files = chart.render(values, name=args.release, namespace=args.namespace, is_install=True)
    except helm.HelmError as err:
        raise StandinError(str(err)) from err
    return {path: text for path, text in files.items() if not path.endswith("NOTES.txt")}


def source(path: str, content: str) -> str:
    """One document as `helm template` prints it."""
    return f"---\n# Source: {path}\n{content}\n"


def template_output(
    crds: list[dict[str, str]], manifests: list[Manifest], hooks: list[Manifest]
) -> str:
    """cmd/helm/template.go: CRDs and manifests, trimmed, a newline, then the hooks."""
    body = "".join(source(crd["filename"], crd["data"]) for crd in crds)
    body += "".join(source(m.path, m.content) for m in manifests)
    return go_trim_space(body) + "\n" + "".join(source(h.path, h.content) for h in hooks)


def run_template(args: TemplateArgs) -> str:
    """`helm template`: the rendered manifests, in the order and shape Helm prints them."""
    chart, local = locate_chart(args)
    with chart:
        values = merged_values(args.values_files)
        if local:
            check_version(chart, args.version)
        metadata = chart.metadata
        check_installable(metadata)
        check_dependencies(chart, metadata)
        check_release_name(args.release)
        check_kube_version(metadata)
        files = render(chart, values, args)
        # After the render: subcharts disabled by a condition no longer contribute CRDs.
        crds = chart.crds if args.include_crds else []
    manifests, hooks = sort_manifests(files)
    return template_output(crds, manifests, hooks)


def run_version(line: CommandLine) -> str:
    """`helm version [--short]`."""
    if len(line.positionals) > 1:
        raise StandinError(f'unknown command "{line.positionals[1]}" for "helm version"')
    version = f"{helm.helm_sdk_version()}-standin"
    if any(spec.name == "short" and value == "true" for spec, value, _ in line.flags):
        return version + "\n"
    fields = f'Version:"{version}", GitCommit:"", GitTreeState:"", GoVersion:""'
    return f"version.BuildInfo{{{fields}}}\n"


def run(argv: list[str]) -> str:
    """Runs one command; returns what goes to stdout."""
    line = parse_command_line(argv)
    wants_help = any(spec.name == "help" for spec, _, _ in line.flags)
    if not line.positionals:
        if wants_help:
            return USAGE
        raise StandinError(f"no command given: {SUPPORTED}")
    command = line.positionals[0]
    if command not in COMMAND_FLAGS:
        raise StandinError(f'unsupported command "{command}": {SUPPORTED}')
    check_flags(command, line)
    if wants_help:
        return USAGE
    if command == "version":
        return run_version(line)
    return run_template(template_args(line))


def fail(message: str) -> NoReturn:
    """Prints `Error: message` on stderr, as helm does, and exits 1."""
    sys.stderr.write(f"Error: {message}\n")
    sys.exit(1)


def main() -> None:
    """Entry point: the whole output is computed first, so a failure prints nothing on stdout."""
    try:
        output = run(sys.argv[1:])
    except StandinError as err:
        fail(str(err))
    except helm.HelmError as err:
        fail(str(err))
    sys.stdout.buffer.write(output.encode("utf-8"))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
