//! What kube-controller-manager puts in every namespace: the `kube-root-ca.crt` ConfigMap
//! (root CA publisher: the CA that signed the API server's certificate) and the `default`
//! ServiceAccount (service account controller). Both are made again when deleted.

use serde_json::json;

use super::queue::Queue;
use super::{Ctx, def, s};
use crate::store::{Store, Writer};

const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// The ConfigMap the root CA publisher writes in every namespace.
pub(crate) const ROOT_CA: &str = "kube-root-ca.crt";

pub(crate) fn reconcile(store: &mut Store, ctx: &mut Ctx, queue: &mut Queue) {
    let (Some(nsd), Some(cmd), Some(sad)) = (
        def(store, "", "v1", "namespaces"),
        def(store, "", "v1", "configmaps"),
        def(store, "", "v1", "serviceaccounts"),
    ) else {
        return;
    };
    let gr = nsd.gr();
    let (cm_gr, sa_gr) = (cmd.gr(), sad.gr());
    let keys = queue.take(store, &gr, ctx.now, |ev, keys| {
        // One of ours went: its namespace looks again.
        if ev.gr == cm_gr || ev.gr == sa_gr {
            keys.insert((
                String::new(),
                s(&ev.object, "/metadata/namespace").to_string(),
            ));
        }
    });
    let ca = ctx.shared.ca_pem.clone();
    queue.reconcile(store, ctx, &gr, keys, |store, _, ns| {
        if ns.pointer("/metadata/deletionTimestamp").is_some() {
            return;
        }
        let name = s(ns, "/metadata/name").to_string();
        if store.get(&cm_gr, &name, ROOT_CA).is_none() {
            let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": ROOT_CA, "namespace": name, "annotations": {"kubernetes.io/description": DESCRIPTION}},
                "data": {"ca.crt": ca}});
            let _ = store.create(&cmd, cm, Writer::CONTROLLER);
        }
        if store.get(&sa_gr, &name, "default").is_none() {
            let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": name}});
            let _ = store.create(&sad, sa, Writer::CONTROLLER);
        }
    });
}
