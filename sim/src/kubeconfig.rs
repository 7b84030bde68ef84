//! Kubeconfig files for the sim: rendering one that points at a running sim (server URL, CA
//! data, a dummy token, context `sim`) and reading the server URL and CA back out Authentication is not simulated: any token is accepted.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The name of the cluster, user and context written into the kubeconfig.
pub const CONTEXT: &str = "sim";

/// Renders a complete kubeconfig for a sim serving at `url` with the CA `ca_pem`.
pub(crate) fn render(url: &str, ca_pem: &[u8]) -> String {
    let ca = STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {CONTEXT}\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: {CONTEXT}\n  user:\n    token: sim-token\ncontexts:\n- name: {CONTEXT}\n  context:\n    cluster: {CONTEXT}\n    user: {CONTEXT}\n    namespace: default\ncurrent-context: {CONTEXT}\npreferences: {{}}\n"
    )
}
