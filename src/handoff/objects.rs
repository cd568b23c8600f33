//! The Kubernetes objects groundwork renders, as typed values, and nothing more: Namespace,
//! ConfigMap, Secret, Flux's GitRepository and Kustomization, Argo CD's Application.
//!
//! Every struct refuses unknown fields, so the tests read each rendered document back into its
//! type and a typo (ours, or a field the API does not have) fails there. `apiVersion` and
//! `kind` are literal types: a document of another kind does not parse as this one. Field
//! names are Kubernetes' camelCase.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::yaml;

/// A unit type that (de)serializes as exactly one string: `apiVersion` and `kind` values.
macro_rules! literal {
    ($name:ident, $value:literal) => {
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name;

        impl $name {
            pub const VALUE: &'static str = $value;
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($value)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                if s == $value {
                    Ok($name)
                } else {
                    Err(serde::de::Error::custom(format!("expected `{}`, found `{s}`", $value)))
                }
            }
        }
    };
}

literal!(CoreV1, "v1");
literal!(NamespaceKind, "Namespace");
literal!(ConfigMapKind, "ConfigMap");
literal!(SecretKind, "Secret");
literal!(SourceV1, "source.toolkit.fluxcd.io/v1");
literal!(GitRepositoryKind, "GitRepository");
literal!(KustomizeV1, "kustomize.toolkit.fluxcd.io/v1");
literal!(KustomizationKind, "Kustomization");
literal!(ArgoV1Alpha1, "argoproj.io/v1alpha1");
literal!(ApplicationKind, "Application");

/// The label every object groundwork renders carries, with the site's name: what groundwork
/// may change later, and nothing else.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "groundwork");
pub const SITE_LABEL: &str = "groundwork.dev/site";

/// A value of a Secret: shown nowhere but in the document that is applied. `Debug` prints its
/// length only.
#[derive(Clone, PartialEq, Eq)]
pub struct Sensitive(String);

impl Sensitive {
    pub fn new(value: impl Into<String>) -> Self {
        Sensitive(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What a plan shows instead of the value.
    pub fn masked(&self) -> String {
        format!("<secret: {} bytes>", self.0.len())
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl Serialize for Sensitive {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Sensitive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Sensitive)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl ObjectMeta {
    /// `name` in `namespace` (`None`: a cluster-wide object), labelled as groundwork's.
    pub fn new(site: &str, namespace: Option<&str>, name: &str) -> Self {
        let labels =
            BTreeMap::from([(MANAGED_BY.0.into(), MANAGED_BY.1.into()), (SITE_LABEL.into(), site.to_string())]);
        ObjectMeta { name: name.into(), namespace: namespace.map(str::to_string), labels }
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespace {
    pub api_version: CoreV1,
    pub kind: NamespaceKind,
    pub metadata: ObjectMeta,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMap {
    pub api_version: CoreV1,
    pub kind: ConfigMapKind,
    pub metadata: ObjectMeta,
    pub data: BTreeMap<String, String>,
}

/// A Secret written with `stringData` (the API server encodes it), type `Opaque`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Secret {
    pub api_version: CoreV1,
    pub kind: SecretKind,
    pub metadata: ObjectMeta,
    #[serde(rename = "type")]
    pub type_: String,
    pub string_data: BTreeMap<String, Sensitive>,
}

impl Secret {
    pub fn opaque(metadata: ObjectMeta, data: impl IntoIterator<Item = (&'static str, Sensitive)>) -> Self {
        Secret {
            api_version: CoreV1,
            kind: SecretKind,
            metadata,
            type_: "Opaque".into(),
            string_data: data.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    /// The same Secret with every value replaced by `<secret: N bytes>`.
    pub fn masked(&self) -> Secret {
        let mut s = self.clone();
        for v in s.string_data.values_mut() {
            *v = Sensitive(v.masked());
        }
        s
    }
}

/// A Kubernetes reference to an object in the same namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalRef {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KindRef {
    pub kind: String,
    pub name: String,
}

/// Flux `source.toolkit.fluxcd.io/v1` GitRepository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitRepository {
    pub api_version: SourceV1,
    pub kind: GitRepositoryKind,
    pub metadata: ObjectMeta,
    pub spec: GitRepositorySpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitRepositorySpec {
    pub interval: String,
    pub url: String,
    #[serde(rename = "ref")]
    pub reference: GitRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitRef {
    pub branch: String,
}

/// Flux `kustomize.toolkit.fluxcd.io/v1` Kustomization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kustomization {
    pub api_version: KustomizeV1,
    pub kind: KustomizationKind,
    pub metadata: ObjectMeta,
    pub spec: KustomizationSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KustomizationSpec {
    pub interval: String,
    pub path: String,
    /// Required by the CRD.
    pub prune: bool,
    pub source_ref: KindRef,
    pub post_build: PostBuild,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostBuild {
    /// ConfigMaps (or Secrets) in the Kustomization's namespace whose keys become variables.
    pub substitute_from: Vec<KindRef>,
}

/// Argo CD `argoproj.io/v1alpha1` Application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Application {
    pub api_version: ArgoV1Alpha1,
    pub kind: ApplicationKind,
    pub metadata: ObjectMeta,
    pub spec: ApplicationSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationSpec {
    pub project: String,
    pub source: ApplicationSource,
    /// Required by the CRD.
    pub destination: Destination,
    pub sync_policy: SyncPolicy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplicationSource {
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    pub target_revision: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    pub server: String,
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyncPolicy {
    pub automated: Automated,
    pub sync_options: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Automated {
    pub prune: bool,
    pub self_heal: bool,
}

/// Any object groundwork renders.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    ConfigMap(ConfigMap),
    Secret(Secret),
    GitRepository(GitRepository),
    Kustomization(Kustomization),
    Application(Application),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => NamespaceKind::VALUE,
            Object::ConfigMap(_) => ConfigMapKind::VALUE,
            Object::Secret(_) => SecretKind::VALUE,
            Object::GitRepository(_) => GitRepositoryKind::VALUE,
            Object::Kustomization(_) => KustomizationKind::VALUE,
            Object::Application(_) => ApplicationKind::VALUE,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::GitRepository(o) => &o.metadata,
            Object::Kustomization(o) => &o.metadata,
            Object::Application(o) => &o.metadata,
        }
    }

    pub fn is_secret(&self) -> bool {
        matches!(self, Object::Secret(_))
    }

    /// The object as JSON, values and all (for apply).
    pub fn to_value(&self) -> Value {
        let v = match self {
            Object::Namespace(o) => serde_json::to_value(o),
            Object::ConfigMap(o) => serde_json::to_value(o),
            Object::Secret(o) => serde_json::to_value(o),
            Object::GitRepository(o) => serde_json::to_value(o),
            Object::Kustomization(o) => serde_json::to_value(o),
            Object::Application(o) => serde_json::to_value(o),
        };
        v.expect("objects serialize")
    }

    /// The object as YAML, values and all (for apply).
    pub fn to_yaml(&self) -> String {
        yaml::document(&self.to_value())
    }

    /// The object as a plan shows it: a Secret's values masked, anything else as it is.
    pub fn to_masked_yaml(&self) -> String {
        match self {
            Object::Secret(s) => Object::Secret(s.masked()).to_yaml(),
            other => other.to_yaml(),
        }
    }

    /// Reads a document back into the typed object its `kind` names; unknown fields, another
    /// `apiVersion`, a missing required field are errors.
    pub fn from_value(v: Value) -> Result<Object, String> {
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
        let r = match kind.as_str() {
            NamespaceKind::VALUE => serde_json::from_value(v).map(Object::Namespace),
            ConfigMapKind::VALUE => serde_json::from_value(v).map(Object::ConfigMap),
            SecretKind::VALUE => serde_json::from_value(v).map(Object::Secret),
            GitRepositoryKind::VALUE => serde_json::from_value(v).map(Object::GitRepository),
            KustomizationKind::VALUE => serde_json::from_value(v).map(Object::Kustomization),
            ApplicationKind::VALUE => serde_json::from_value(v).map(Object::Application),
            other => return Err(format!("`{other}` is not a kind groundwork renders")),
        };
        r.map_err(|e| format!("{kind}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_wrong_versions_and_missing_required_fields_are_refused() {
        let ok = json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "x", "namespace": "flux-system", "labels": {}},
            "spec": {"interval": "10m0s", "path": "./", "prune": true,
                     "sourceRef": {"kind": "GitRepository", "name": "x"},
                     "postBuild": {"substituteFrom": []}}
        });
        assert!(Object::from_value(ok.clone()).is_ok());
        let mut typo = ok.clone();
        typo["spec"]["prunne"] = json!(true);
        assert!(Object::from_value(typo).unwrap_err().contains("unknown field `prunne`"));
        let mut no_prune = ok.clone();
        no_prune["spec"].as_object_mut().unwrap().remove("prune");
        assert!(Object::from_value(no_prune).unwrap_err().contains("missing field `prune`"));
        let mut old = ok;
        old["apiVersion"] = json!("kustomize.toolkit.fluxcd.io/v1beta2");
        assert!(Object::from_value(old).unwrap_err().contains("expected `kustomize.toolkit.fluxcd.io/v1`"));
    }

    #[test]
    fn secrets_show_their_length_only() {
        let s = Secret::opaque(ObjectMeta::new("lab", Some("ns"), "db"), [("password", Sensitive::new("hunter2!"))]);
        assert!(!format!("{s:?}").contains("hunter2"));
        let o = Object::Secret(s);
        assert!(o.to_yaml().contains("password: \"hunter2!\""));
        let masked = o.to_masked_yaml();
        assert!(masked.contains("password: \"<secret: 8 bytes>\"") && !masked.contains("hunter2"), "{masked}");
    }
}
