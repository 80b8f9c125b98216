//! The registry credentials of a pod under review, read from the
//! Kubernetes API (`--registry-pull-secrets on`): the pod's own
//! `imagePullSecrets`, then its ServiceAccount's, each searched in that
//! order, as the kubelet tries them, and `--registry-auth-file` after them.
//!
//! What it needs: a token (the webhook's pod with
//! `automountServiceAccountToken: true`, or a kubeconfig through
//! `KUBECONFIG`) whose account may `get` `serviceaccounts` and `secrets`
//! in the namespaces it serves: deploy/webhook/pull-secrets.yaml. Off by
//! default, since that is the right to read those namespaces' secrets.
//!
//! What it promises: all the reads of one review end within
//! [`READ_TIMEOUT`], inside the registration's `timeoutSeconds` with the
//! lookup's own budget. A secret that is missing, forbidden or of another
//! type is left out and logged with the fix, as the kubelet leaves out a
//! pull secret it cannot use: the lookup goes on with the credentials
//! there are, and a registry's refusal then names where they were
//! searched. Nothing is cached: a pull secret rotated is used at the next
//! review.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use serde_json::Value;

use crate::registry::Keyring;

/// The longest the reads of one review's pull secrets may take together.
pub const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a pod's pull secrets are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSecrets {
    pub namespace: String,
    /// `spec.serviceAccountName`, `default` when unset.
    pub service_account: String,
    /// `spec.imagePullSecrets[].name`, in order.
    pub secrets: Vec<String>,
}

impl PodSecrets {
    /// The names in `pod`, created in `namespace`.
    pub fn of(namespace: &str, pod: &Value) -> PodSecrets {
        let spec = &pod["spec"];
        let service_account = ["serviceAccountName", "serviceAccount"]
            .iter()
            .find_map(|field| spec[field].as_str().filter(|s| !s.is_empty()))
            .unwrap_or("default")
            .to_owned();
        PodSecrets {
            namespace: namespace.to_owned(),
            service_account,
            secrets: names(&spec["imagePullSecrets"]),
        }
    }
}

/// The `name`s of a list of references.
fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str().filter(|n| !n.is_empty()))
        .map(str::to_owned)
        .collect()
}

/// Reads pull secrets through the Kubernetes API.
#[derive(Clone)]
pub struct PullSecrets {
    client: kube::Client,
}

impl PullSecrets {
    /// A client of the cluster the webhook runs in (or `KUBECONFIG`'s).
    pub async fn connect() -> Result<PullSecrets, String> {
        let mut config = kube::Config::infer().await.map_err(|e| {
            format!(
                "no Kubernetes API to read pull secrets from: {e}; run the webhook with \
                 automountServiceAccountToken: true (deploy/webhook/pull-secrets.yaml), or \
                 leave --registry-pull-secrets off"
            )
        })?;
        config.connect_timeout = Some(READ_TIMEOUT);
        config.read_timeout = Some(READ_TIMEOUT);
        let client = kube::Client::try_from(config)
            .map_err(|e| format!("cannot set up the Kubernetes client: {e}"))?;
        Ok(PullSecrets { client })
    }

    /// The credentials of `pod`'s pull secrets, then its ServiceAccount's,
    /// then `mounted`'s; what cannot be read within [`READ_TIMEOUT`] is
    /// left out, and logged.
    pub async fn keyring(&self, pod: &PodSecrets, mounted: &Keyring) -> Keyring {
        let mut keyring = match tokio::time::timeout(READ_TIMEOUT, self.read(pod)).await {
            Ok(keyring) => keyring,
            Err(_) => {
                tracing::warn!(
                    "The pull secrets of namespace {} were not read within {READ_TIMEOUT:?}; \
                     the images are read without them",
                    pod.namespace
                );
                Keyring::default()
            }
        };
        keyring.extend(mounted.clone());
        keyring
    }

    async fn read(&self, pod: &PodSecrets) -> Keyring {
        let namespace = &pod.namespace;
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let mut names = pod.secrets.clone();
        match accounts.get_opt(&pod.service_account).await {
            Ok(Some(account)) => names.extend(
                account
                    .image_pull_secrets
                    .into_iter()
                    .flatten()
                    .map(|r| r.name)
                    .filter(|n| !n.is_empty()),
            ),
            Ok(None) => {}
            Err(err) => tracing::warn!(
                "Cannot read ServiceAccount {namespace}/{}: {}",
                pod.service_account,
                why(&err, "serviceaccounts")
            ),
        }
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));

        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let reads = names.iter().map(|name| secrets.get_opt(name));
        let answers = futures_util::future::join_all(reads).await;
        let mut keyring = Keyring::default();
        for (name, answer) in names.iter().zip(answers) {
            let origin = format!("imagePullSecret {namespace}/{name}");
            let secret = match answer {
                Ok(Some(secret)) => secret,
                Ok(None) => {
                    tracing::warn!("{origin} does not exist; the images are read without it");
                    continue;
                }
                Err(err) => {
                    tracing::warn!("Cannot read {origin}: {}", why(&err, "secrets"));
                    continue;
                }
            };
            let data = secret.data.unwrap_or_default();
            let Some(json) = [".dockerconfigjson", ".dockercfg"]
                .iter()
                .find_map(|key| data.get(*key))
            else {
                tracing::warn!(
                    "{origin} holds neither .dockerconfigjson nor .dockercfg (type {}); it is \
                     not a pull secret",
                    secret.type_.as_deref().unwrap_or("Opaque")
                );
                continue;
            };
            match Keyring::from_docker_config(&json.0, &origin) {
                Ok(read) => keyring.extend(read),
                Err(err) => tracing::warn!("{err}"),
            }
        }
        keyring
    }
}

/// What went wrong, with the fix when the webhook lacks the right.
fn why(err: &kube::Error, resource: &str) -> String {
    match err {
        kube::Error::Api(status) if status.code == 403 => format!(
            "forbidden ({}); give the webhook's ServiceAccount get on {resource}: \
             deploy/webhook/pull-secrets.yaml",
            status.message
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_names_its_secrets_in_order_and_its_account_or_default() {
        let pod = json!({"spec": {
            "serviceAccountName": "builder",
            "imagePullSecrets": [{"name": "b"}, {"name": ""}, {"name": "a"}],
        }});
        assert_eq!(
            PodSecrets::of("team", &pod),
            PodSecrets {
                namespace: "team".into(),
                service_account: "builder".into(),
                secrets: vec!["b".into(), "a".into()],
            }
        );
        let bare = PodSecrets::of("team", &json!({"spec": {}}));
        assert_eq!(bare.service_account, "default");
        assert!(bare.secrets.is_empty());
    }
}
